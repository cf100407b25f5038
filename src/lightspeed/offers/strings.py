"""The BOLT 12 string form: ``hrp`` ``1`` bech32 characters, no checksum, ``+`` continuations.

BOLT #12: "The supported ASCII encoding is the human-readable prefix, followed by a
`1`, followed by a bech32-style data string of the TLVs in order, optionally
interspersed with `+` (for indicating additional data is to come). There is no
checksum, unlike bech32m." The 5-bit to 8-bit conversion reuses the project's
bech32 helpers (one big-integer conversion for the whole data part).
"""

from __future__ import annotations

import re

from lightspeed.codec.bech32 import CHARSET, bytes_to_words, words_to_bytes
from lightspeed.errors import DecodeError, UsageError

HRP_OFFER = "lno"
HRP_INVOICE_REQUEST = "lnr"
HRP_INVOICE = "lni"
HRPS = (HRP_OFFER, HRP_INVOICE_REQUEST, HRP_INVOICE)

_CHAR_TO_WORD = bytes(CHARSET.find(chr(i)) & 0xFF if chr(i) in CHARSET else 0xFF for i in range(256))
# A `+`, then any whitespace, with a bech32-string character on both sides (lookarounds).
_CONTINUATION = re.compile(r"(?<=[0-9A-Za-z])\+\s*(?=[0-9A-Za-z])")


def join_continuations(text: str) -> str:
    """Remove every ``+`` continuation; fail on a ``+`` that does not join two characters.

    BOLT #12: if it encounters a `+` followed by zero or more whitespace characters
    between two bech32 characters: MUST remove the `+` and whitespace.
    """
    joined = _CONTINUATION.sub("", text)
    if "+" in joined:
        raise DecodeError("bolt12", "a '+' must join two bech32 characters")
    return joined


def decode_string(text: str, expected_hrp: str | None = None) -> tuple[str, bytes]:
    """Split a BOLT 12 string into ``(hrp, tlv stream bytes)``.

    The hrp is returned lower case; ``expected_hrp`` (``lno``, ``lnr`` or ``lni``)
    makes any other prefix an error.
    """
    joined = join_continuations(text)
    # BOLT #12: Readers of a bolt12 string: MUST handle strings which are all lowercase,
    # or all uppercase. (A writer MUST use one or the other, so mixed case is refused.)
    lower = joined.lower()
    if joined != lower and joined != joined.upper():
        raise DecodeError("bolt12", "mixes upper and lower case")
    pos = lower.rfind("1")
    if pos < 1:
        raise DecodeError("bolt12", "no human-readable prefix before the separator '1'")
    hrp, data = lower[:pos], lower[pos + 1 :]
    if hrp not in HRPS:
        raise DecodeError("bolt12", f"unknown prefix {hrp!r} (expected lno, lnr or lni)")
    if expected_hrp is not None and hrp != expected_hrp:
        raise DecodeError("bolt12", f"prefix {hrp!r} is not {expected_hrp!r}")
    words = data.encode("ascii", "replace").translate(_CHAR_TO_WORD)
    if b"\xff" in words:
        bad = next(c for c in data if c not in CHARSET)
        raise DecodeError("bolt12", f"character {bad!r} is not in the bech32 charset")
    try:
        # BIP 173 conversion without padding: at most 4 padding bits, all zero (the spec's
        # "Bech32 padding exceeds 4-bit limit" vector).
        payload = words_to_bytes(words, pad=False)
    except DecodeError as exc:
        raise DecodeError("bolt12", exc.reason) from None
    return hrp, payload


def encode_string(hrp: str, tlv_stream: bytes) -> str:
    """The lower-case string of a TLV stream (BOLT #12: SHOULD use lower case otherwise)."""
    if hrp not in HRPS:
        raise UsageError(f"unknown BOLT 12 prefix {hrp!r}")
    return hrp + "1" + "".join(CHARSET[w] for w in bytes_to_words(tlv_stream))


def split_string(text: str, width: int) -> str:
    """Break a string into ``+``-continued lines of at most ``width`` characters.

    BOLT #12: MAY use `+`, optionally followed by whitespace, to separate large bolt12
    strings. Readers join them back (:func:`join_continuations`).
    """
    if width < 2:
        raise UsageError("width must be at least 2")
    step = width - 1
    chunks = [text[i : i + step] for i in range(0, len(text), step)]
    return "+\n".join(chunks)
