"""Same-run comparisons that can't flatter us: alternating windows, wall and CPU time, the load.

Each operation has sides (Lightspeed first, then peers and physical limits). A
window runs every side once for a fixed count, in an order that rotates from
window to window, so a burst of load from another process lands on all sides
alike; ratios are taken within a window, then summarised over the windows with
their spread. Every side runs single-threaded through the same loop
(``_timing.time_loop``); Electrum's side runs in Debian's interpreter, in a
worker process the parent waits on (so the two never run at once).

The report gives, per side: median and mean wall time (the mean beside the
median shows a skewed distribution), the min-max over windows, median CPU time
of the thread (not inflated by other processes on the core), and the ratio to
Lightspeed by wall and by CPU time. The machine's load average at the start and
the end is part of the result: figures taken under load are noisier.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks._timing import time_loop

HERE = Path(__file__).resolve().parent
ELECTRUM_PYTHON = "/usr/bin/python3"  # Debian's python3-electrum 4.3.4 lives in its dist-packages
OURS = "lightspeed"

Runner = Callable[[int], tuple[float, float]]


@dataclass
class Side:
    name: str
    run: Runner  # n -> (wall ns, CPU ns) per call
    n: int  # calls per window


@dataclass
class Operation:
    name: str
    sides: list[Side]
    note: str = ""


@dataclass
class Result:
    operation: str
    side: str
    wall_us: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    ratio_wall: list[float] = field(default_factory=list)  # this side / Lightspeed, per window
    ratio_cpu: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "wall_us": {"median": _r(statistics.median(self.wall_us)), "mean": _r(statistics.fmean(self.wall_us)),
                        "min": _r(min(self.wall_us)), "max": _r(max(self.wall_us))},
            "cpu_us": {"median": _r(statistics.median(self.cpu_us)), "mean": _r(statistics.fmean(self.cpu_us)),
                       "min": _r(min(self.cpu_us)), "max": _r(max(self.cpu_us))},
            "windows": len(self.wall_us),
        }
        if self.ratio_wall:
            out["over_lightspeed"] = {
                "wall": {"median": _r(statistics.median(self.ratio_wall), 3), "min": _r(min(self.ratio_wall), 3),
                         "max": _r(max(self.ratio_wall), 3)},
                "cpu": {"median": _r(statistics.median(self.ratio_cpu), 3), "min": _r(min(self.ratio_cpu), 3),
                        "max": _r(max(self.ratio_cpu), 3)},
            }
        return out


def _r(value: float, digits: int = 2) -> float:
    return round(value, digits)


def local(fn: Callable[[], object]) -> Runner:
    """A side that runs in this process."""
    fn()  # warm up (and fail early, before any timing)
    return lambda n: time_loop(fn, n)


class Electrum:
    """Electrum 4.3.4 in a worker process (``_electrum_worker.py``), or the reason it cannot run."""

    def __init__(self) -> None:
        self.unavailable: str | None = None
        self.version = ""
        self._proc: subprocess.Popen[str] | None = None
        if not Path(ELECTRUM_PYTHON).exists():
            self.unavailable = f"{ELECTRUM_PYTHON} not found"
            return
        check = subprocess.run([ELECTRUM_PYTHON, "-c", "import electrum.version as v; print(v.ELECTRUM_VERSION)"],
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            self.unavailable = "python3-electrum is not installed (tools/install_electrum_peers.sh)"
            return
        self.version = check.stdout.strip()
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        self._proc = subprocess.Popen([ELECTRUM_PYTHON, str(HERE / "_electrum_worker.py")], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, env=env, cwd=str(HERE))

    @property
    def available(self) -> bool:
        return self._proc is not None

    def _ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Electrum worker died on {request['case']}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def output(self, case: str, params: dict[str, Any]) -> bytes:
        """What one call of the case produced (to check it agrees with ours before timing)."""
        return bytes.fromhex(self._ask({"op": "output", "case": case, "params": params})["output"])

    def side(self, case: str, params: dict[str, Any], n: int) -> Side:
        def run(count: int) -> tuple[float, float]:
            reply = self._ask({"op": "run", "case": case, "params": params, "n": count})
            return reply["wall_ns"], reply["cpu_ns"]
        run(1)  # builds the case in the worker, untimed
        return Side("electrum", run, n)

    def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=30)
            self._proc = None


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--windows", type=int, default=7, help="alternating windows per operation (default 7)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the calls per window (0.01 for a smoke run)")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    parser.add_argument("--no-electrum", action="store_true", help="leave Electrum out")
    args = parser.parse_args()
    if args.windows < 1 or args.scale <= 0:
        parser.error("--windows must be >= 1 and --scale > 0")
    return args


def count(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def measure(operations: list[Operation], windows: int) -> list[Result]:
    """Alternate the sides of each operation over ``windows`` windows."""
    results: list[Result] = []
    for op in operations:
        by_side = {side.name: Result(op.name, side.name) for side in op.sides}
        for w in range(windows):
            shift = w % len(op.sides)
            order = op.sides[shift:] + op.sides[:shift]
            window: dict[str, tuple[float, float]] = {}
            for side in order:
                wall_ns, cpu_ns = side.run(side.n)
                window[side.name] = (wall_ns, cpu_ns)
                by_side[side.name].wall_us.append(wall_ns / 1000)
                by_side[side.name].cpu_us.append(cpu_ns / 1000)
            ours_wall, ours_cpu = window[OURS]
            for name, (wall_ns, cpu_ns) in window.items():
                if name != OURS:
                    by_side[name].ratio_wall.append(wall_ns / ours_wall)
                    by_side[name].ratio_cpu.append(cpu_ns / ours_cpu)
        results.extend(by_side.values())
    return results


def machine() -> dict[str, Any]:
    return {"load_average": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "platform": platform.platform()}


def report(benchmark: str, title: str, operations: list[Operation], results: list[Result],
           start: dict[str, Any], args: argparse.Namespace, extra: dict[str, Any] | None = None,
           peers: dict[str, str] | None = None) -> dict[str, Any]:
    """Print the rich table (or only JSON with ``--json``); returns the JSON document."""
    end_load = [round(x, 2) for x in os.getloadavg()]
    doc: dict[str, Any] = {
        "benchmark": benchmark, "machine": start, "load_average_end": end_load, "windows": args.windows,
        "scale": args.scale, "peers": peers or {},
        "results": {op.name: {r.side: r.summary() for r in results if r.operation == op.name} for op in operations},
        "notes": {op.name: op.note for op in operations if op.note},
    }
    if extra:
        doc.update(extra)
    if args.json:
        print(json.dumps(doc, sort_keys=True))
        return doc
    console = Console(width=max(Console().width, 150))
    table = Table(title=title, caption=_caption(start, end_load, args, peers))
    for column in ("operation", "side", "wall µs median", "wall µs mean", "wall min-max", "CPU µs median",
                   "÷ lightspeed (wall)", "÷ lightspeed (CPU)"):
        table.add_column(column, justify="left" if column in ("operation", "side") else "right")
    for op in operations:
        for i, r in enumerate(x for x in results if x.operation == op.name):
            s = r.summary()
            wall, cpu = s["wall_us"], s["cpu_us"]
            skew = " *" if wall["mean"] > 1.1 * wall["median"] else ""
            ratio = s.get("over_lightspeed")
            table.add_row(op.name if i == 0 else "", r.side, _f(wall["median"]), _f(wall["mean"]) + skew,
                          f"{_f(wall['min'])}-{_f(wall['max'])}", _f(cpu["median"]),
                          _ratio(ratio["wall"]) if ratio else "1", _ratio(ratio["cpu"]) if ratio else "1",
                          end_section=i == len(op.sides) - 1)
    console.print(table)
    notes: dict[str, list[str]] = {}
    for op in operations:
        if op.note:
            notes.setdefault(op.note, []).append(op.name)
    for note, names in notes.items():
        console.print(f"[dim]{'; '.join(names)}: {note}[/dim]")
    return doc


def _f(us: float) -> str:
    return f"{us:,.2f}" if us < 100 else f"{us:,.0f}"


def _ratio(r: dict[str, float]) -> str:
    return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"


def _caption(start: dict[str, Any], end_load: list[float], args: argparse.Namespace,
             peers: dict[str, str] | None) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in (peers or {}).items())
    return (f"{args.windows} alternating windows per operation; load average {start['load_average'][0]} at start, "
            f"{end_load[0]} at end, on {start['cpu_count']} CPUs; Python {start['python']}. {versions}. "
            "All figures from this run on this machine. * mean > 1.1x median (skewed).")


def done(electrum: Electrum | None) -> None:
    if electrum is not None:
        electrum.close()
    sys.stdout.flush()
