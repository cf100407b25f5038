"""Implementations of :class:`lightspeed.micro.store.AllowanceStore`, and one way to name them."""

from __future__ import annotations

from pathlib import Path

from lightspeed.errors import UsageError
from lightspeed.micro.store import AllowanceStore


def open_allowance_store(url: str) -> AllowanceStore:
    """``memory``, ``sqlite:PATH``, ``redis://...`` or ``postgresql://...`` to a store."""
    if url == "memory":
        from lightspeed.micro.stores.memory import MemoryAllowanceStore

        return MemoryAllowanceStore()
    if url.startswith("sqlite:"):
        from lightspeed.micro.stores.sqlite import SqliteAllowanceStore

        path = Path(url[len("sqlite:"):]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return SqliteAllowanceStore(path, synchronous="NORMAL")
    if url.startswith(("redis://", "rediss://", "unix://")):
        from lightspeed.micro.stores.redis import RedisAllowanceStore

        return RedisAllowanceStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        from lightspeed.micro.stores.postgres import PostgresAllowanceStore

        return PostgresAllowanceStore(url)
    raise UsageError(f"store: {url!r} is not memory, sqlite:PATH, redis://... or postgresql://...")
