"""``--table``: the objects a command prints as JSON, as a rich table that never cuts a number.

A table squeezed into a narrow terminal makes rich shorten cells with "…"; for an id that is
fine (it is already shortened), for an amount it is a wrong number. So the table is rendered at
the terminal's width first and used only if every number is whole in it; otherwise each row is
printed as a "field value" block, which fits any width a number fits in.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

SHORTENED = ("_id", "_hash")  # long hex: the first 10 characters and "…"


def _cell(column: str, value: Any) -> str:
    text = "" if value is None else f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) \
        else str(value)
    return text[:10] + "…" if column.endswith(SHORTENED) and len(text) > 11 else text


def _is_number(column: str, value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or column.endswith(("_msat", "_sat"))


def print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    """Print ``rows`` (JSON objects) under ``title``; the terminal's width, or ``COLUMNS``, or 200."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:  # piped: do not squeeze into 80 columns
        console = Console(width=200)
    console.print(render_table(title, rows, columns, console.width), end="", soft_wrap=True)


def render_table(title: str, rows: list[dict[str, Any]], columns: list[str], width: int) -> str:
    """The text :func:`print_table` prints at ``width`` columns."""
    cells = [[_cell(column, row.get(column)) for column in columns] for row in rows]
    numbers = [_cell(column, row.get(column)) for row in rows for column in columns
               if row.get(column) is not None and _is_number(column, row.get(column))]
    text = _render_grid(title, columns, cells, width)
    if all(re.search(rf"(?<![0-9,]){re.escape(number)}(?![0-9,…])", text) for number in numbers):
        return text
    return _render_records(title, columns, cells, width)


def _render_grid(title: str, columns: list[str], cells: list[list[str]], width: int) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        numeric = column.endswith(("_msat", "_sat")) or column == "pending_htlcs"
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for row in cells:
        table.add_row(*row)
    console = Console(width=width, file=io.StringIO(), color_system=None)
    with console.capture() as capture:
        console.print(table)
    return capture.get()


def _render_records(title: str, columns: list[str], cells: list[list[str]], width: int) -> str:
    """One block per row: ``field  value`` lines (values longer than the width wrap, never cut)."""
    name_width = max((len(column) for column in columns), default=0)
    out = [title]
    for i, row in enumerate(cells, 1):
        out.append(f"-- {i} of {len(cells)} " + "-" * max(0, min(width, 40) - len(f"-- {i} of {len(cells)} ")))
        for column, value in zip(columns, row, strict=True):
            out.append(f"{column:<{name_width}}  {value}".rstrip())
    return "\n".join(out) + "\n"


def key_value_table(title: str) -> Any:
    """A "field value" table (no header) whose values fold onto more lines in a narrow terminal:
    rich's default cuts a cell with "…", and a node id, a URL or an amount would lose its end."""
    from rich.table import Table

    table = Table(title=title, show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    return table


def result_table(title: str, result: dict[str, Any]) -> Any:
    """A command's JSON result for people: one row per field, objects and lists as JSON."""
    import json

    table = key_value_table(title)
    for key, value in result.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
    return table
