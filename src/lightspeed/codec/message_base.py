"""The base class of the generated wire message classes (kept apart to avoid an import cycle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class WireMessage:
    """A schema message with its fields by their BOLT names; ``tlvs`` holds its TLV stream.

    TLV records appear by record name with a dict of their fields; unknown odd
    records by their type number with the raw value.
    """

    TYPE: ClassVar[int]
    NAME: ClassVar[str]
    tlvs: dict[str | int, Any] = field(default_factory=dict, kw_only=True, hash=False)
