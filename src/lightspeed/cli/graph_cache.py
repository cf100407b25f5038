"""``lightspeed route --graph-cache``: the describegraph JSON loaded through a snapshot file.

The snapshot's format and codec are sans-IO (:mod:`lightspeed.routing.snapshot`); reading,
writing and replacing the files is here, at the edge.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from lightspeed.errors import DecodeError, UsageError
from lightspeed.routing.graph import ChannelGraph
from lightspeed.routing.lnd_json import graph_from_describegraph
from lightspeed.routing.snapshot import StaleSnapshot, decode_snapshot, encode_snapshot


def file_digest(path: Path) -> bytes:
    """SHA-256 of a file's bytes: what a snapshot of it records (a few ms per 10 MB)."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").digest()



@dataclass(frozen=True)
class LoadedGraph:
    """A graph loaded through the cache, and how: ``"cache"``, ``"source"`` (cache written) or a reason."""

    graph: ChannelGraph
    loaded_from: str
    #: Why the cache was not used or not written (a stale or damaged file, an unwritable path), else "".
    note: str = ""


def save_snapshot(graph: ChannelGraph, path: Path, source_digest: bytes) -> None:
    """Write atomically (temporary file, then rename): a crash leaves the old snapshot or none.

    The temporary file is named by process, so two processes caching at once do not collide.
    """
    data = encode_snapshot(graph, source_digest)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_describegraph_cached(source: Path, cache: Path) -> LoadedGraph:
    """``source`` (describegraph JSON) through the snapshot at ``cache``.

    A current snapshot is loaded; a missing, stale or damaged one is rebuilt from the JSON
    and rewritten. Errors in the JSON itself propagate (OSError, JSONDecodeError,
    DecodeError) exactly as without a cache; a cache that cannot be read or written only
    costs the rebuild, and ``note`` says why. UsageError if ``cache`` is ``source`` itself.
    """
    if cache.resolve() == source.resolve():
        raise UsageError("the graph cache must be another file than the describegraph JSON (it would overwrite it)")
    digest = file_digest(source)  # streamed: a current cache never holds the JSON in memory
    note = ""
    try:
        return LoadedGraph(decode_snapshot(cache.read_bytes(), digest), "cache")
    except FileNotFoundError:
        pass
    except StaleSnapshot:
        note = f"{cache} was built from another version of {source.name}; rebuilt"
    except DecodeError as exc:
        note = f"{cache}: {exc.reason}; rebuilt from {source.name}"
    except OSError as exc:
        note = f"cannot read {cache}: {exc.strerror}; rebuilt from {source.name}"
    raw = source.read_bytes()
    digest = hashlib.sha256(raw).digest()  # of what is parsed, should the file have changed meanwhile
    graph = graph_from_describegraph(json.loads(raw))
    try:
        save_snapshot(graph, cache, digest)
    except UsageError as exc:
        note = f"{note + '; ' if note else ''}not cached: {exc}"
    except OSError as exc:
        note = f"{note + '; ' if note else ''}cannot write {cache}: {exc.strerror}"
    return LoadedGraph(graph, "source", note)
