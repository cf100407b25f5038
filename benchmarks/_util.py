"""Shared timing and reporting helpers for the benchmarks (medians, ratios, a table, a JSON line)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


def median_us(fn: Callable[[], object], repeat: int = 200, warmup: int = 10) -> float:
    """Median wall time of one call of ``fn`` in microseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return statistics.median(samples)


def report(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], summary: dict[str, Any]) -> None:
    """Print a human table, then the machine-readable JSON line (always last)."""
    print_table(title, columns, rows)
    print(json.dumps(summary, sort_keys=True))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="right" if column != columns[0] else "left")
    for row in rows:
        table.add_row(*(f"{v:,.1f}" if isinstance(v, float) else str(v) for v in row))
    Console(width=max(Console().width, 120)).print(table)
