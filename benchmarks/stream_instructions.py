"""Metered streams: instructions per tick and per WebSocket echo, counted by callgrind.

Why: this machine's speed moves (SHA-256 of 32 bytes took 0.46 to 0.9 µs on one day, within
minutes), so the CPU time per tick of :mod:`benchmarks.stream` differs by ~7% between two
sides of the *same* code, and a change of a few percent cannot be told from that noise.
Instructions retired do not move with the machine's clock: ``valgrind --tool=callgrind``
counts them, the same count for the same work whatever else the machine is doing.

The server process (``_stream_server.py``, the same one ``benchmarks.stream`` measures) runs
under callgrind, with ``PYTHONPATH`` at this checkout's ``src`` and, with ``--baseline-src DIR``,
a second one at another checkout's. One stream on ``/fast`` (a meter that grants at once) and
one echo connection are driven one round trip at a time, as in ``benchmarks.stream``; around
each window the counters are zeroed and dumped (``callgrind_control``), so imports and set-up
are not counted. Windows alternate between the sides and the operations. Reported: the
server's instructions per tick and per echo (median and spread of the windows), and their
ratio. ``--streams K`` (default 20) drives K streams (and K echo connections) at once, each one
round trip at a time: their lane moves share SQLite commits as at 1,000 streams (one stream
alone commits each tick by itself: about a fifth more instructions per tick).

Slow: Python runs ~50 times slower under callgrind. ``--quick`` is a smoke run (a test runs it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.stream import HERE, WsSides

_TOTALS = re.compile(r"^(?:totals|summary):\s+(\d+)", re.MULTILINE)


class CountedServer:
    """``_stream_server.py`` under callgrind: zero the counters, run a window, read its count."""

    def __init__(self, label: str, src: str, store: str, out_dir: Path) -> None:
        self.label, self.out_dir = label, out_dir
        self.prefix = out_dir / f"cg-{label}"
        env = {**os.environ, "PYTHONPATH": src}
        self.process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.prefix}.%p",
             "--dump-instr=no", "--dump-line=no", sys.executable, str(HERE / "_stream_server.py"),
             "--store", store, "--ws", "fast", "--loop", "uvloop"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if not line or line[0] != "READY":
            self.process.kill()
            raise SystemExit(f"error: the stream server from {src} did not start under valgrind")
        self.ws_url, self.http_url = line[1], line[2]

    def _control(self, *args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(self.process.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)

    def count(self, run: Any, n: int) -> float:
        """Instructions the server retired per round trip over ``n`` round trips of ``run``."""
        self._control("--zero")
        before = set(self.out_dir.glob(f"{self.prefix.name}.*"))
        run(n)
        self._control("--dump")
        for _ in range(600):  # the dump is written by the server's next turn under valgrind
            new = set(self.out_dir.glob(f"{self.prefix.name}.*")) - before
            if new:
                text = max(new, key=lambda p: p.stat().st_mtime).read_text()
                match = _TOTALS.search(text)
                if match:
                    return int(match.group(1)) / n
            time.sleep(0.1)
        raise SystemExit(f"error: no callgrind dump from the {self.label} server")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=400, help="round trips per stream per window")
    parser.add_argument("--streams", type=int, default=20, help="streams (and echo connections) driven at once")
    parser.add_argument("--baseline-src", default=None, metavar="DIR",
                        help="also count a server run from DIR (another checkout's src), windows alternating")
    parser.add_argument("--quick", action="store_true", help="smoke run: one window of 20 round trips")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.windows, args.ticks, args.streams = 1, 20, 2
    src = str(Path(__file__).resolve().parent.parent / "src")
    sides = [("this", src)] + ([("baseline", args.baseline_src)] if args.baseline_src else [])
    counts: dict[str, dict[str, list[float]]] = {label: {"tick": [], "echo": []} for label, _ in sides}
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as tmp:
        servers: list[CountedServer] = []
        drivers: list[list[WsSides]] = []
        k, n = args.streams, args.ticks

        async def together(*runs: Any) -> None:
            await asyncio.gather(*runs)

        def ticks(group: list[WsSides], n: int) -> None:
            loop.run_until_complete(together(*(ws._ticks(n) for ws in group)))

        def echoes(group: list[WsSides], n: int) -> None:
            loop.run_until_complete(together(*(ws._echoes(n) for ws in group)))

        try:
            for label, path in sides:
                server = CountedServer(label, path, f"sqlite:{Path(tmp) / (label + '.sqlite')}", Path(tmp))
                servers.append(server)
                group = [WsSides(loop, server.ws_url, server.http_url, (args.windows + 1) * n + 100) for _ in range(k)]
                drivers.append(group)
                ticks(group, 20)  # warm up: first-call paths, caches
                echoes(group, 20)
            for _ in range(args.windows):
                for server, group in zip(servers, drivers, strict=True):
                    counts[server.label]["tick"].append(server.count(lambda n, g=group: ticks(g, n), n) / k)
                    counts[server.label]["echo"].append(server.count(lambda n, g=group: echoes(g, n), n) / k)
            for group in drivers:
                for ws in group:
                    ws.close()
        finally:
            for server in servers:
                server.stop()
            loop.close()

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values)), "min": round(min(values)), "max": round(max(values))}

    result: dict[str, Any] = {"benchmark": "stream_instructions", "windows": args.windows, "round_trips": n,
                              "streams": k, "quick": args.quick, "sides": {}}
    for label, _ in sides:
        tick, echo = statistics.median(counts[label]["tick"]), statistics.median(counts[label]["echo"])
        result["sides"][label] = {"instructions_per_tick": spread(counts[label]["tick"]),
                                  "instructions_per_echo": spread(counts[label]["echo"]),
                                  "tick_over_echo": round(tick / echo, 2)}
    if args.baseline_src:
        this, base = (statistics.median(counts[s]["tick"]) for s in ("this", "baseline"))
        result["tick_this_over_baseline"] = round(this / base, 3)
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return
    for label, side in result["sides"].items():
        t, e = side["instructions_per_tick"], side["instructions_per_echo"]
        print(f"{label:9} tick {t['median']:>9,} instructions ({t['min']:,}-{t['max']:,}), "
              f"echo {e['median']:>8,} ({e['min']:,}-{e['max']:,}); tick/echo {side['tick_over_echo']}")
    if "tick_this_over_baseline" in result:
        print(f"tick: this / baseline = {result['tick_this_over_baseline']}")
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
