"""``lightspeed demo``: runs every capability built so far, end to end, and reports it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console
from rich.table import Table


@dataclass
class ScenarioResult:
    name: str
    ok: bool
    elapsed_ms: float
    details: dict[str, Any] = field(default_factory=dict)


Scenario = Callable[[], dict[str, Any]]

# Filled in as capabilities land: (name, function returning details; raises on failure).
SCENARIOS: list[tuple[str, Scenario]] = []

COMING = [
    "BOLT 8 transport and BOLT 4 onions between nodes",
    "channels with real signatures on the embedded regtest chain",
    "multi-hop payments, MPP and AMP",
    "pay-per-call: 10,000 API calls through one allowance",
]


def run_scenarios() -> list[ScenarioResult]:
    results = []
    for name, scenario in SCENARIOS:
        start = time.perf_counter()
        try:
            details = scenario()
            ok = True
        except Exception as exc:  # a demo reports failures, it does not crash
            details, ok = {"error": f"{type(exc).__name__}: {exc}"}, False
        results.append(ScenarioResult(name, ok, (time.perf_counter() - start) * 1000, details))
    return results


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def demo(as_json: bool) -> None:
    """Run the embedded network end to end and show what happened."""
    results = run_scenarios()
    if as_json:
        click.echo(json.dumps({
            "scenarios": [
                {"name": r.name, "ok": r.ok, "elapsed_ms": round(r.elapsed_ms, 3), **r.details}
                for r in results
            ],
            "coming": COMING,
        }))
    else:
        console = Console()
        table = Table(title="Lightspeed demo")
        table.add_column("scenario")
        table.add_column("outcome")
        table.add_column("ms", justify="right")
        for r in results:
            table.add_row(r.name, "[green]ok[/]" if r.ok else f"[red]failed[/] {r.details.get('error', '')}", f"{r.elapsed_ms:.1f}")
        console.print(table)
        console.print("Coming next: " + "; ".join(COMING))
    if not all(r.ok for r in results):
        raise SystemExit(1)
