"""store: durable node state (see DESIGN.md): a narrow interface and its SQLite implementation."""

from pathlib import Path

from lightspeed.store.base import (
    AsyncPaymentRecord,
    ClosedChannel,
    CloseKind,
    CloseSummary,
    IncomingHtlcRecord,
    InvoiceRecord,
    InvoiceStatus,
    PaymentRecord,
    PaymentStatus,
    RefundRecord,
    RefundStatus,
    Store,
    StoreCorrupt,
    StoredChannel,
    StoreUnavailable,
)
from lightspeed.store.sqlite import SqliteStore

STORE_FILE = "node.sqlite"


def open_store(datadir: str | Path, fsync: bool = True) -> SqliteStore:
    """The node's store in its data directory (``DIR/node.sqlite``, mode 0600), created on first use."""
    path = Path(datadir).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SqliteStore(path / STORE_FILE, fsync=fsync)


def store_exists(datadir: str | Path) -> bool:
    """True if ``DIR/node.sqlite`` is there and was ever initialised (not missing, not an empty file).

    Read without opening it through SQLite, which would create it: a daemon that finds the
    node's secret but no store must stop before anything is created (see ``lightspeed.api.daemon``).
    """
    path = Path(datadir).expanduser() / STORE_FILE
    # What SQLite committed may still sit in the write-ahead log only: either file counts.
    return any(_non_empty(p) for p in (path, path.with_name(STORE_FILE + "-wal")))


def _non_empty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False

__all__ = [
    "STORE_FILE",
    "AsyncPaymentRecord",
    "CloseKind",
    "CloseSummary",
    "ClosedChannel",
    "IncomingHtlcRecord",
    "InvoiceRecord",
    "InvoiceStatus",
    "PaymentRecord",
    "PaymentStatus",
    "RefundRecord",
    "RefundStatus",
    "SqliteStore",
    "Store",
    "StoreCorrupt",
    "StoreUnavailable",
    "StoredChannel",
    "open_store",
    "store_exists",
]
