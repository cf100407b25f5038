"""Compact sorted JSON built from pieces, each piece encoded once and kept while it is unchanged.

A channel is saved at every commitment step, and its record is mostly parts that did not
change since the last save (the config, the wire encoding of journal messages, HTLC log
entries). ``json.dumps(value, separators=(",", ":"), sort_keys=True)`` is compositional:
an object's text is ``{`` then ``"key":value`` for each key in sorted order, joined by
``,``, then ``}``, where each value's text is its own ``dumps``; a list likewise with
``[``/``]``. So the record can be assembled from the cached text of its parts and stay
byte for byte what one ``dumps`` of the whole would write (the tests compare the two).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring_ascii

#: ``json.dumps(value, separators=(",", ":"), sort_keys=True)`` without building an encoder per call.
encode = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def encode_small(value: object) -> str:
    """``encode(value)``, with the scalars of a record written directly as the encoder writes them.

    The encoder builds its C scanner for every call on a container or a number (microseconds
    each, and a record has a dozen scalars). For ``None``, booleans, exact ints and strings
    the encoder's text is fixed: ``null``/``true``/``false``, ``int.__repr__`` and
    ``encode_basestring_ascii``; anything else goes to the encoder.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str:
        return encode_basestring_ascii(value)  # type: ignore[arg-type]
    return encode(value)


def json_object(members: Mapping[str, str]) -> str:
    """The object whose member ``key`` has the JSON text ``members[key]``, keys sorted as ``sort_keys`` does."""
    return "{" + ",".join(f"{encode(key)}:{text}" for key, text in sorted(members.items())) + "}"


def json_array(items: Iterable[str]) -> str:
    """The array of the given JSON texts, in order."""
    return "[" + ",".join(items) + "]"
