"""The example charger's schedule: a report every interval, a short delay made up, a pause not."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from lightspeed.cli.stream_example import ChargerMeter, charger_meter
from lightspeed.errors import UsageError
from lightspeed.stream.machine import SellerStream
from lightspeed.stream.tariff import Tariff

TARIFF = Tariff("Wh", msat_per_unit=300, tick_units=1, max_units=50_000, window_ticks=600)


class FakeTime:
    """A clock the meter reads and a sleep that moves it on; ``reports`` are the times reported at."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def stream(n: int = 1) -> SellerStream:
    return SellerStream(TARIFF, bytes([n]) * 16, b"\x02" * 33, b"\x01" * 16, 0, 0, b"\x00" * 32)


def reports(meter: ChargerMeter, time: FakeTime, arrivals: list[float], s: SellerStream | None = None) -> list[float]:
    """Each payment reaches the meter ``arrival`` s after the last report (the buyer's and the
    server's delay); the times the reports went out."""
    s = s or stream()
    out = []
    for arrival in arrivals:
        time.now += arrival
        assert asyncio.run(meter(s, 5)) == 1  # one Wh a report, never more than granted
        out.append(time.now)
    return out


def test_payments_ahead_of_the_schedule_report_every_interval() -> None:
    time = FakeTime()
    meter = ChargerMeter(1, 0.1, clock=time.clock, sleep=time.sleep)
    sent = reports(meter, time, [0.0] + [0.004] * 20)
    assert [round(b - a, 9) for a, b in itertools.pairwise(sent)] == [0.1] * 20
    assert (meter.late, meter.restarts) == (0, 0)


def test_a_payment_late_by_less_than_an_interval_is_reported_at_once_and_the_schedule_kept() -> None:
    """A tick delayed 150 ms in all (50 ms past its due time) goes out at once; the next is due when
    it was due anyway, so 20 reports still take 2 s. The old cadence moved on by the delay."""
    time = FakeTime()
    meter = ChargerMeter(1, 0.1, clock=time.clock, sleep=time.sleep)
    arrivals = [0.0] + [0.004] * 9 + [0.15] + [0.004] * 10
    sent = reports(meter, time, arrivals)
    assert round(sent[10] - sent[9], 9) == 0.15  # reported when the late payment came, not later
    assert round(sent[11] - sent[10], 9) == 0.05  # ... and the schedule is kept
    assert round(sent[-1] - sent[0], 9) == 2.0
    assert (meter.late, meter.restarts) == (1, 0)
    assert max(sent[i + 2] - sent[i] for i in range(len(sent) - 2)) >= 0.1  # at most two in an interval


def test_delays_under_an_interval_every_time_keep_the_rate() -> None:
    """Every other payment 10-90 ms past its due time (a loaded server): ten reports a second all the
    same. (Had every round trip taken longer than an interval, no schedule could be kept: restarts.)"""
    time = FakeTime()
    meter = ChargerMeter(1, 0.1, clock=time.clock, sleep=time.sleep)
    sent = reports(meter, time, [0.0] + [0.13, 0.004, 0.19, 0.004, 0.11, 0.004, 0.16, 0.004] * 25)
    assert (meter.late, meter.restarts) == (100, 0)
    assert 200 / (sent[-1] - sent[0]) == pytest.approx(10, rel=0.001)
    slow = ChargerMeter(1, 0.1, clock=time.clock, sleep=time.sleep)
    reports(slow, time, [0.0] + [0.15] * 10)
    assert slow.restarts > 0


def test_without_keep_schedule_a_delay_moves_the_schedule_on() -> None:
    """The other charger: the late report goes at once and the next is an interval after it, so
    no two reports are ever closer than an interval, and each delay is lost (the old behaviour)."""
    time = FakeTime()
    meter = ChargerMeter(1, 0.1, keep_schedule=False, clock=time.clock, sleep=time.sleep)
    sent = reports(meter, time, [0.0] + [0.004] * 9 + [0.15] + [0.004] * 10)
    assert min(b - a for a, b in itertools.pairwise(sent)) >= 0.1 - 1e-9
    assert round(sent[-1] - sent[0], 9) == 2.05  # the 50 ms of the late payment are lost
    assert (meter.late, meter.restarts) == (1, 0)


def test_a_pause_longer_than_an_interval_starts_afresh_without_a_burst() -> None:
    time = FakeTime()
    meter = ChargerMeter(1, 0.1, clock=time.clock, sleep=time.sleep)
    sent = reports(meter, time, [0.0, 0.004, 2.0, 0.004, 0.004])
    assert (meter.late, meter.restarts) == (0, 1)
    assert [round(b - a, 9) for a, b in itertools.pairwise(sent[2:])] == [0.1, 0.1]


def test_each_stream_keeps_its_own_schedule() -> None:
    time = FakeTime()
    meter = ChargerMeter(1, 0.1, clock=time.clock, sleep=time.sleep)
    one, two = stream(1), stream(2)
    reports(meter, time, [0.0], one)
    reports(meter, time, [0.03], two)  # its first report: at once
    assert time.slept == []
    reports(meter, time, [0.0], one)  # due 0.1 after its own first
    assert time.slept == [pytest.approx(0.07)]


def test_the_meter_runs_on_the_event_loop_clock_by_default() -> None:
    meter = charger_meter(wh_per_report=2, interval=0.01)
    s = stream()

    async def three() -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for _ in range(3):
            assert await meter(s, 1) == 1  # never more than granted
        return loop.time() - start

    assert asyncio.run(three()) >= 0.02


def test_bad_settings_are_refused() -> None:
    with pytest.raises(UsageError, match="wh_per_report"):
        charger_meter(wh_per_report=0)
    with pytest.raises(UsageError, match="interval"):
        charger_meter(interval=-1)


def test_the_default_wait_is_the_loops_timer_and_reports_are_counted() -> None:
    """Without an injected sleep the meter waits on a future the loop's timer sets (no
    ``asyncio.sleep`` coroutine per tick): three reports 50 ms apart take about 100 ms, and a
    wait cancelled half way neither reports nor breaks the next one."""

    async def run() -> tuple[float, int, int]:
        meter = ChargerMeter(1, 0.05)
        s = stream()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(3):
            assert await meter(s, 3) == 1
        elapsed = loop.time() - started
        counted = meter.reports
        waiting = asyncio.ensure_future(meter(s, 3))  # due 50 ms after the last report
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await asyncio.sleep(0.06)  # its timer fires on the cancelled future: nothing happens
        assert await meter(s, 3) == 1
        return elapsed, counted, meter.reports

    elapsed, counted, after = asyncio.run(run())
    assert 0.09 <= elapsed < 1.0  # the first report at once, then two intervals
    assert counted == 3
    assert after == 4  # the cancelled wait made no report
