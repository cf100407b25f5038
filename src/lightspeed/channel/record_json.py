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

#: ``json.dumps(value, separators=(",", ":"), sort_keys=True)`` without building an encoder per call.
encode = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def json_object(members: Mapping[str, str]) -> str:
    """The object whose member ``key`` has the JSON text ``members[key]``, keys sorted as ``sort_keys`` does."""
    return "{" + ",".join(f"{encode(key)}:{text}" for key, text in sorted(members.items())) + "}"


def json_array(items: Iterable[str]) -> str:
    """The array of the given JSON texts, in order."""
    return "[" + ",".join(items) + "]"
