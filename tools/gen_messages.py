"""Generate ``src/lightspeed/codec/generated.py``: one frozen dataclass per wire message.

The schemas (spec-extracted CSV) are the single source of truth; this script
turns them into declared classes so that mypy and readers see every field.
``tests/test_messages_properties.py`` fails if the output is out of date.
Run: ``python tools/gen_messages.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from lightspeed.codec.schema import FIXED_SIZES, INTEGER_TYPES, RecordSpec, Schema, default_schema

HAND_WRITTEN = {"init", "error", "warning", "ping", "pong"}  # typed by hand in messages.py
TARGET = ROOT / "src" / "lightspeed" / "codec" / "generated.py"


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def python_type(schema: Schema, typename: str, count: object) -> str:
    if typename in INTEGER_TYPES:
        scalar = "int"
    elif typename in FIXED_SIZES or typename == "sciddir_or_pubkey":
        scalar = "bytes"
    elif typename in schema.subtypes:
        scalar = "dict[str, Any]"
    else:
        scalar = "bytes"
    if count is None:
        return scalar
    if typename == "byte":
        return "bytes"
    return f"tuple[{scalar}, ...]"


def render(schema: Schema) -> str:
    lines = [
        '"""Typed wire messages, generated from the spec-extracted schemas by tools/gen_messages.py.',
        "",
        "Do not edit: change the schemas or the generator, then run it again.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from dataclasses import dataclass",
        "from typing import Any, ClassVar",
        "",
        "from lightspeed.codec.message_base import WireMessage",
    ]
    names: list[str] = []
    for spec in sorted(schema.messages_by_type.values(), key=lambda s: s.number or 0):
        if spec.name in HAND_WRITTEN:
            continue
        names.append(class_name(spec.name))
        lines += _render_class(schema, spec)
    lines += ["", "", "GENERATED_MESSAGES: tuple[type[WireMessage], ...] = (",
              *(f"    {n}," for n in names), ")", ""]
    return "\n".join(lines)


def _render_class(schema: Schema, spec: RecordSpec) -> list[str]:
    out = ["", "", "@dataclass(frozen=True)", f"class {class_name(spec.name)}(WireMessage):",
           f'    """``{spec.name}`` ({spec.number})."""', "",
           f"    TYPE: ClassVar[int] = {spec.number}", f'    NAME: ClassVar[str] = "{spec.name}"']
    lengths = spec.length_fields
    for f in spec.fields:
        if f.name in lengths:
            continue
        out.append(f"    {f.name}: {python_type(schema, f.type, f.count)}")
    return out


def main() -> None:
    text = render(default_schema())
    if "--check" in sys.argv:
        sys.exit(0 if TARGET.read_text() == text else 1)
    TARGET.write_text(text)


if __name__ == "__main__":
    main()
