"""Issue 17 audit: the "field value" tables of `call`, `stream` and `serve-example` at 80 columns.

`--table` of `channels`/`payments` and the demo's table keep numbers whole (test_docs17_cli.py);
these tables cut long values with "…" at 80 columns: `call`'s server node id and the node id in
its price, `serve-example`'s node address. Every value must be whole, folded onto more lines.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

from rich.console import Console

from lightspeed.cli.tables import key_value_table, result_table

NODE = "03" + "cd" * 32
RESULT: dict[str, Any] = {  # as `lightspeed call` returns it (see micro_cmd.call)
    "url": "http://127.0.0.1:8402/weather/lisbon", "calls": 100, "statuses": {"200": 100},
    "channel_open_s": 1.23, "calls_per_s": 3925.4, "lightning_payments": 1, "paid_msat": 1_000,
    "price": {"msat_per_call": 10, "per_calls": 1, "node_id": "02" + "ab" * 32}, "server_node": NODE,
    "last_response": {"city": "lisbon", "temperature_c": 21, "paid_until_call": 123_456_789_012_345},
}


def rendered_rows(table: Any, width: int) -> dict[str, str]:
    """field -> its value as printed (a folded value's lines joined, spaces dropped)."""
    console = Console(width=width, file=io.StringIO(), color_system=None)
    with console.capture() as capture:
        console.print(table)
    text = capture.get()
    assert all(len(line) <= width for line in text.splitlines()), text
    assert "…" not in text, text
    rows: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        cells = line.split("│")
        if len(cells) != 4:
            continue
        key = cells[1].strip() or key
        rows[key] = rows.get(key, "") + re.sub(r"\s", "", cells[2])
    return rows


def test_a_call_result_at_80_columns_keeps_every_value_whole() -> None:
    rows = rendered_rows(result_table("lightspeed call http://127.0.0.1:8402/weather/lisbon", RESULT), 80)
    expected = {key: json.dumps(value) if isinstance(value, dict | list) else str(value)
                for key, value in RESULT.items()}
    assert rows == {key: re.sub(r"\s", "", value) for key, value in expected.items()}


def test_the_example_api_banner_at_80_columns_keeps_the_node_address_whole() -> None:
    table = key_value_table("Lightspeed example API")
    table.add_row("URL", "http://127.0.0.1:8402")
    table.add_row("node", f"{NODE}@127.0.0.1:9736")
    table.add_row("price", "1000 msat per 1 call(s)")
    assert rendered_rows(table, 80)["node"] == f"{NODE}@127.0.0.1:9736"
