"""The forwarding history (``fwdinghistory``): every HTLC this node forwarded that settled, with its fee.

The node announces each as a :class:`~lightspeed.node.forwarding.ForwardSettled` event; the daemon
appends it to ``DATADIR/forwards.jsonl`` (one JSON object a line, fsynced), so the history
outlives restarts. It is a record of what happened, not channel state: a crash between the
fulfil and the append loses at most that one line, never money.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

FORWARDS_FILE = "forwards.jsonl"


class ForwardLog:
    """Settled forwards, oldest first; in memory only when ``path`` is None (tests, no daemon)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.entries: list[dict[str, Any]] = []
        if path is not None and path.exists():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:  # a line cut short by a crash: the rest still counts
                    continue
                if isinstance(entry, dict):
                    self.entries.append(entry)

    def add(self, entry: dict[str, Any]) -> None:
        if self.path is not None:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, (json.dumps(entry) + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        self.entries.append(entry)

    def query(self, start: int | None, end: int | None, limit: int) -> list[dict[str, Any]]:
        """Forwards with ``start <= timestamp < end``, at most ``limit`` (the oldest of them)."""
        chosen = [e for e in self.entries if (start is None or e.get("timestamp", 0) >= start)
                  and (end is None or e.get("timestamp", 0) < end)]
        return chosen[:limit]
