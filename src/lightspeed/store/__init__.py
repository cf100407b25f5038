"""store: durable node state (see DESIGN.md): a narrow interface and its SQLite implementation."""

from pathlib import Path

from lightspeed.store.base import (
    IncomingHtlcRecord,
    InvoiceRecord,
    InvoiceStatus,
    PaymentRecord,
    PaymentStatus,
    Store,
    StoredChannel,
)
from lightspeed.store.sqlite import SqliteStore

STORE_FILE = "node.sqlite"


def open_store(datadir: str | Path, fsync: bool = True) -> SqliteStore:
    """The node's store in its data directory (``DIR/node.sqlite``), created on first use."""
    path = Path(datadir).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SqliteStore(path / STORE_FILE, fsync=fsync)


__all__ = [
    "STORE_FILE",
    "IncomingHtlcRecord",
    "InvoiceRecord",
    "InvoiceStatus",
    "PaymentRecord",
    "PaymentStatus",
    "SqliteStore",
    "Store",
    "StoredChannel",
    "open_store",
]
