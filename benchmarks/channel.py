"""Payments per second over one channel: in one process, and between two node processes over TCP.

In process: two Channel state machines (in memory, real signatures): add,
commitment_signed/revoke_and_ack both ways, fulfill, and both ways again (4
commitment signatures, 4 revocations and their verifications per payment),
messages encoded and decoded on the wire format. This is the protocol core alone.

Two processes: two durable nodes (``tests.support.node_runner``: SQLite store in WAL
mode, BOLT 8 over loopback TCP, onions and invoices checked), one channel, the
payer paying the payee's invoices one after another (sequential) and with many
HTLCs in flight (batched under one signature), with fsync on (synchronous=FULL)
and off. Beside them: the signature limit (sign + verify cost of a payment's
signatures, measured in this run) and the fsync limit (the sequential store
commits of one payment times the cost of one durable SQLite commit here).
Published figures for comparison: 20 to 90 payments/s per node for LND, Core
Lightning and Eclair on real disks.

The floor of the in-flight mode, measured in the same run: the work a payment cannot
avoid given how many commitment_signed and HTLC signatures the run really exchanged
(each signature made once and checked once), the per-commitment key derivations (the
commitment keys on both sides, the next per-commitment secret and point, the check of
the revealed secret), and the store commits (one after another, each at the measured
durable commit cost). Ours is reported over that floor as a ratio.

``--quick`` runs fewer payments (for a smoke run). ``--profile DIR`` runs the two nodes
under cProfile (CPU time) for the fsync-on in-flight mode only and prints each one's top
costs in µs per payment.
"""

from __future__ import annotations

import os
import pstats
import queue
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from coincurve import PrivateKey
from tests.support.runner_client import RunnerProcess

from benchmarks._util import median_us, print_table, report
from lightspeed.chain import RegtestChain
from lightspeed.channel import Channel
from lightspeed.channel.commitment import CommitmentKeys
from lightspeed.channel.pair import channel_pair
from lightspeed.codec.message_base import WireMessage
from lightspeed.codec.messages import decode_message, encode_message
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.keys import MAX_INDEX, per_commitment_secret, point_from_secret

TWO_PROCESS_FUNDING_SAT = 5_000_000
TWO_PROCESS_AMOUNT_MSAT = 1_000_000  # above the dust limit: the HTLC is an output, with its own signatures
IN_FLIGHT = 25


def _pair(anchors: bool) -> tuple[Channel, Channel]:
    return channel_pair(10_000_000, 9_000_000_000, anchors=anchors, max_accepted_htlcs=483)


def _wire(message: WireMessage) -> WireMessage:
    decoded = decode_message(encode_message(message))
    assert isinstance(decoded, WireMessage)
    return decoded


def _commit(signer: Channel, other: Channel) -> None:
    replies, _ = other.receive(_wire(signer.sign()))
    for reply in replies:
        signer.receive(_wire(reply))


def payments_per_second(anchors: bool, count: int = 200) -> float:
    alice, bob = _pair(anchors)
    start = time.perf_counter()
    for _ in range(count):
        preimage = os.urandom(32)
        add = alice.add_htlc(10_000, sha256(preimage), 800)
        bob.receive(_wire(add))
        _commit(alice, bob)
        _commit(bob, alice)
        alice.receive(_wire(bob.fulfill_htlc(add.id, preimage)))
        _commit(bob, alice)
        _commit(alice, bob)
    return count / (time.perf_counter() - start)


def durable_commit_us(fsync: bool, repeat: int = 200) -> float:
    """Mean cost of committing one channel-sized record (6 kB) in WAL mode here (FULL or OFF).

    The mean, not the median: fsync latency has a long tail and every commit pays its own.
    """
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "probe.sqlite", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'OFF'}")
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        start = time.perf_counter()
        for i in range(repeat):
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (i % 4, os.urandom(6000)))
            db.execute("COMMIT")
        elapsed = time.perf_counter() - start
        db.close()
        return 1e6 * elapsed / repeat


def derivations_us() -> float:
    """CPU of the per-commitment derivations one commitment_signed round needs, both sides together.

    The signer derives the keys of the peer's commitment, the receiver the same keys for
    its own (2 x CommitmentKeys.derive); the receiver makes the secret it reveals and the
    point after next (per_commitment_secret + point_from_secret); the signer checks the
    revealed secret (point_from_secret).
    """
    alice, _ = _pair(anchors=True)
    owner, other = alice._basepoints, alice.config.remote_basepoints
    seed = os.urandom(32)
    point = point_from_secret(per_commitment_secret(seed, MAX_INDEX - 7))
    derive = median_us(lambda: CommitmentKeys.derive(point, owner, other), 300)
    secret = median_us(lambda: per_commitment_secret(seed, MAX_INDEX - 1_000_003), 300)
    some_secret = per_commitment_secret(seed, MAX_INDEX - 7)
    to_point = median_us(lambda: point_from_secret(some_secret), 300)
    return 2 * derive + secret + 2 * to_point


def floor_us(figures: dict[str, float], sign_us: float, verify_us: float, derive_us: float, commit_us: float) -> float:
    """Unavoidable µs per payment (module docstring), from what the run really exchanged."""
    signatures = figures["commitment_signed_per_payment"] + figures["htlc_signatures_per_payment"]
    return (signatures * (sign_us + verify_us) + figures["commitment_signed_per_payment"] * derive_us
            + figures["store_commits_per_payment"] * commit_us)


def print_profile(path: Path, payments: int, top: int = 25) -> None:
    """The ``top`` functions of one node by own CPU time, and the cumulative time of the big steps."""
    stats = pstats.Stats(str(path))
    rows = []
    entries = stats.stats  # type: ignore[attr-defined]
    for (filename, line, name), (_, calls, tottime, cumtime, _) in sorted(
            entries.items(), key=lambda item: -item[1][2])[:top]:
        where = f"{Path(filename).name}:{line}" if line else filename
        rows.append([f"{name} ({where})", f"{calls / payments:.1f}", f"{1e6 * tottime / payments:.0f}",
                     f"{1e6 * cumtime / payments:.0f}"])
    total = sum(value[2] for value in entries.values())
    print_table(f"{path.stem}: CPU {1e6 * total / payments:.0f} µs per payment (whole process run, "
                f"{payments} in-flight payments)", ["function", "calls/payment", "own µs/payment",
                                                    "cumulative µs/payment"], rows)


def _open(chain: RegtestChain, payer: RunnerProcess, payee: RunnerProcess) -> None:
    chain.fund(bytes.fromhex(payer.call("info")["script"]), TWO_PROCESS_FUNDING_SAT + 1_000_000)
    payer.call("connect", host="127.0.0.1", port=payee.port, node_id=payee.node_id)
    request = payer.send("open", node_id=payee.node_id, funding_sat=TWO_PROCESS_FUNDING_SAT)
    while True:
        chain.mine(1)
        try:
            answer = payer.answer(request, timeout=0.05)
        except queue.Empty:
            continue
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return


def _wait_ready(*nodes: RunnerProcess, timeout: float = 60.0) -> None:
    """Until every node sees its channels ready (a fixed sleep was too short on a loaded machine)."""
    deadline = time.monotonic() + timeout
    while True:
        states = [node.call("state")["channels"] for node in nodes]
        if all(channels and all(c["ready"] for c in channels.values()) for channels in states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"channels not ready after {timeout:.0f} s: {states}")
        time.sleep(0.05)


def two_processes(fsync: bool, counts: dict[str, int], profile: Path | None = None) -> dict[str, dict[str, float]]:
    """Payments/s, latency and per-payment costs between two node processes, sequential and in flight.

    With ``profile`` (a directory) the nodes run under cProfile and write payer.prof and
    payee.prof there when they stop.
    """
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        chain_path = Path(tmp) / "chain.sqlite"
        chain = RegtestChain(chain_path)
        payee = RunnerProcess(Path(tmp) / "payee", chain_path, fsync=fsync,
                              profile=None if profile is None else profile / "payee.prof")
        payer = RunnerProcess(Path(tmp) / "payer", chain_path, fsync=fsync,
                              profile=None if profile is None else profile / "payer.prof")
        try:
            _open(chain, payer, payee)
            _wait_ready(payer, payee)
            for mode, concurrency in (("sequential", 1), ("in_flight", IN_FLIGHT)):
                count = counts[mode]
                if count == 0:
                    continue
                invoices = payee.call("invoices", amount_msat=TWO_PROCESS_AMOUNT_MSAT, count=count)["invoices"]
                payee_before = payee.call("state")["stats"]
                run = payer.call("bench", timeout=600, invoices=invoices, concurrency=concurrency)
                time.sleep(0.2)  # the last revoke_and_ack of the dance
                payee_after = payee.call("state")["stats"]
                payee_sent = {k: v - payee_before["sent"].get(k, 0) for k, v in payee_after["sent"].items()}
                messages = sum(run["sent"].values()) + sum(payee_sent.values())
                commits = run["sent"].get("commitment_signed", 0) + payee_sent.get("commitment_signed", 0)
                writes = run["commits"] + payee_after["commits"] - payee_before["commits"]
                htlc_signatures = (run["htlc_signatures"] + payee_after["htlc_signatures"]
                                   - payee_before["htlc_signatures"])
                results[mode] = {
                    "payments_per_s": count / run["elapsed_s"],
                    "median_latency_ms": 1000 * statistics.median(run["latencies_s"]),
                    "messages_per_payment": messages / count,
                    "commitment_signed_per_payment": commits / count,
                    "store_commits_per_payment": writes / count,
                    "htlc_signatures_per_payment": htlc_signatures / count,
                    "cpu_us_per_payment": 1e6 * (run["cpu_s"] + payee_after["cpu_s"] - payee_before["cpu_s"]) / count,
                }
        finally:
            payer.stop()
            payee.stop()
    return results


def main() -> None:
    quick = "--quick" in sys.argv
    key = PrivateKey(os.urandom(32))
    digest = sha256(b"x")
    der = key.sign(digest, hasher=None)
    sign_us = median_us(lambda: key.sign(digest, hasher=None), 1000)
    verify_us = median_us(lambda: key.public_key.verify(der, digest, hasher=None), 1000)
    if "--profile" in sys.argv:
        directory = Path(sys.argv[sys.argv.index("--profile") + 1])
        directory.mkdir(parents=True, exist_ok=True)
        count = 60 if quick else 500
        figures = two_processes(True, {"sequential": 0, "in_flight": count}, profile=directory)["in_flight"]
        print(f"in flight, fsync on, profiled: {figures['payments_per_s']:.0f} payments/s, "
              f"CPU {figures['cpu_us_per_payment']:.0f} µs per payment (both nodes)")
        for name in ("payer", "payee"):
            print_profile(directory / f"{name}.prof", count)
        return
    # Per payment: 4 commitment_signed (sign + verify each) + 2 HTLC signatures while the HTLC
    # is in the commitments (sign + verify), + 4 per-commitment point derivations (not counted).
    limit_us = 6 * (sign_us + verify_us)
    derive_us = derivations_us()
    rows = []
    summary: dict[str, object] = {"benchmark": "channel", "sign_us": round(sign_us, 1), "verify_us": round(verify_us, 1),
                                  "derivations_per_commitment_us": round(derive_us, 1),
                                  "signature_limit_payments_per_s": round(1e6 / limit_us)}
    for anchors in (True, False):
        rate = payments_per_second(anchors)
        name = "anchors" if anchors else "static_remotekey"
        rows.append([name, round(rate), round(1e6 / limit_us), f"{(1e6 / limit_us) / rate:.1f}x", f"{1e6 / rate / 1000:.2f}"])
        summary[f"{name}_payments_per_s"] = round(rate)
    print_table("One channel, both state machines in one process: payments/s (real signatures, wire format)",
                ["commitment type", "payments/s", "signature limit/s", "limit/ours", "ms per payment"], rows)
    counts = {"sequential": 30 if quick else 200, "in_flight": 60 if quick else 500}
    rows = []
    for fsync in (True, False):
        commit_us = durable_commit_us(fsync)
        label = "fsync on" if fsync else "fsync off"
        summary[f"sqlite_commit_us_{'fsync' if fsync else 'nofsync'}"] = round(commit_us, 1)
        for mode, figures in two_processes(fsync, counts).items():
            # The commits of one payment happen one after another (each side waits for the other).
            fsync_limit = 1e6 / (figures["store_commits_per_payment"] * commit_us)
            floor = 1e6 / floor_us(figures, sign_us, verify_us, derive_us, commit_us)
            rows.append([f"{mode}, {label}", round(figures["payments_per_s"]),
                         f"{figures['median_latency_ms']:.2f}", f"{figures['messages_per_payment']:.1f}",
                         f"{figures['commitment_signed_per_payment']:.2f}",
                         f"{figures['htlc_signatures_per_payment']:.2f}",
                         f"{figures['store_commits_per_payment']:.1f}", round(fsync_limit),
                         round(1e6 / limit_us), round(floor), f"{floor / figures['payments_per_s']:.2f}x",
                         round(figures["cpu_us_per_payment"])])
            key = f"two_process_{mode}_{'fsync' if fsync else 'nofsync'}"
            summary[f"{key}_payments_per_s"] = round(figures["payments_per_s"])
            summary[f"{key}_median_latency_ms"] = round(figures["median_latency_ms"], 2)
            summary[f"{key}_messages_per_payment"] = round(figures["messages_per_payment"], 2)
            summary[f"{key}_commitment_signed_per_payment"] = round(figures["commitment_signed_per_payment"], 2)
            summary[f"{key}_htlc_signatures_per_payment"] = round(figures["htlc_signatures_per_payment"], 2)
            summary[f"{key}_store_commits_per_payment"] = round(figures["store_commits_per_payment"], 2)
            summary[f"{key}_floor_payments_per_s"] = round(floor)
            summary[f"{key}_cpu_us_per_payment"] = round(figures["cpu_us_per_payment"])
            summary[f"{key}_floor_over_ours"] = round(floor / figures["payments_per_s"], 2)
    summary["published_lnd_cln_eclair_payments_per_s"] = "20-90"
    report("One channel between two node processes over loopback TCP (durable SQLite store, onions, invoices)",
           ["mode", "payments/s", "median latency ms", "messages/payment", "commitment_signed/payment",
            "HTLC signatures/payment", "store commits/payment", "fsync limit/s", "signature limit/s",
            "floor/s", "floor/ours", "CPU µs/payment (both)"], rows, summary)


if __name__ == "__main__":
    main()
