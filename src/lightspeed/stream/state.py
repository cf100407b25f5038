"""Stream state shared by the seller's processes, so a stream survives the loss of one of them.

What must be shared, and why nothing more:

* **What is paid** is not kept here at all: it is the allowance lane's position in the
  :class:`~lightspeed.micro.store.AllowanceStore` (``last_index``, ``last_link``), moved by one
  atomic compare-and-set per link (``advance``). A link is therefore taken once, by one process,
  whichever serves the stream; a process taking a stream over reads the lane from the store.
* **What was delivered** is ``delivered_units`` here, written *before* the meter is granted the
  units (a ceiling: units that may have been delivered count as delivered) and only after the
  link paying for them is committed. So ``delivered <= paid`` holds in the store at every moment,
  whatever process dies when: a crash between the write and the delivery costs the buyer at most
  the tick it paid ahead (its exposure anyway), never the seller a unit unpaid.
* **Who serves it** is ``epoch``: a resume takes the stream over by a compare-and-set of the
  epoch, and every later write (``deliver``, ``close``) is conditional on the writer's epoch. A
  process that lost the stream without noticing (a half-open connection) has its next write
  refused and stops delivering: two processes never deliver the same paid tick (fencing).
* **Who may resume it** is ``resume_key``: the x-only public key the buyer gave at ``open``.
* **How it ended** is ``statement`` (the signed statement as JSON text): the first close wins,
  later resumes anywhere get the same statement.
* **For how long** a closed stream is kept: ``closed_retention`` seconds after its close (default
  :data:`CLOSED_RETENTION`, 7 days), time for a buyer whose connection dropped to resume it and
  get its statement; then it is deleted (Redis: an expiry set in the step that records the
  statement; PostgreSQL: :meth:`StreamStore.purge_closed`, run by the seller's sweep), so the
  shared store does not grow with every stream ever sold.

The seller's processes also announce themselves here (:meth:`StreamStore.announce`): every
process tells new buyers the whole group (URL and node id), so a buyer knows where to go on, and
which nodes may sign its statement, before anything fails.

Implementations: :class:`MemoryStreamStore` (one process), PostgreSQL
(:mod:`~lightspeed.stream.state_postgres`) and Redis (:mod:`~lightspeed.stream.state_redis`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from lightspeed.errors import StorageUnavailable, UsageError
from lightspeed.micro.store import StoreError

MAX_SELLERS = 8  # processes announced to a buyer
CLOSED_RETENTION = 7 * 24 * 3600.0  # seconds a closed stream (its statement) is kept for a late resume
PURGE_LIMIT = 1000  # closed streams deleted by one purge_closed call at most


class StreamStoreUnavailable(StoreError, StorageUnavailable):
    """The shared stream store cannot be reached (server down, connection refused): nothing was
    written. Names the store and the reason; the stream pauses and the buyer resumes once it is back."""


@dataclass(frozen=True)
class StreamRecord:
    """One stream paid from an allowance lane (streams paid by increments stay in one process)."""

    stream_id: bytes
    allowance_id: bytes
    lane: int
    start_index: int
    start_link: bytes
    tariff: str  # the tariff as JSON text: the stream keeps the price it was opened at
    resume_key: bytes  # 32-byte x-only key of the buyer (b"": the stream cannot be resumed)
    epoch: int = 0
    delivered_units: int = 0
    statement: str = ""  # the signed statement as JSON text, once closed


class StreamStore(Protocol):
    """A shared, atomic record of streams. Every method is one atomic step."""

    async def create(self, record: StreamRecord) -> None:
        """Insert a new stream; :class:`~lightspeed.micro.store.StoreError` if its id exists."""
        ...

    async def load(self, stream_id: bytes) -> StreamRecord | None:
        ...

    async def take_over(self, stream_id: bytes, epoch: int) -> bool:
        """If the stream is open at ``epoch``, move it to ``epoch + 1`` (the caller now serves it)."""
        ...

    async def deliver(self, stream_id: bytes, epoch: int, delivered_units: int) -> bool:
        """If the stream is open at ``epoch``, raise ``delivered_units`` to the given count (never
        lower it). False: the stream was taken over or closed; deliver nothing."""
        ...

    async def close(self, stream_id: bytes, epoch: int, statement: str) -> str:
        """Record ``statement`` if the stream is open at ``epoch``; return the stream's statement
        (the one recorded first; ``""`` if it is open and served by another epoch)."""
        ...

    async def purge_closed(self, limit: int = PURGE_LIMIT) -> int:
        """Delete at most ``limit`` streams closed more than the store's retention ago (on the
        store server's clock, the same for every process); returns how many. Stores that expire
        closed streams by themselves (Redis) or hold nothing shared (memory) return 0."""
        ...

    async def announce(self, url: str, node_id: bytes) -> None:
        """This process serves streams at ``url`` with node ``node_id``."""
        ...

    async def sellers(self) -> list[tuple[str, bytes]]:
        """The processes announced, first announced first (at most :data:`MAX_SELLERS`)."""
        ...

    async def aclose(self) -> None:
        ...


def check_record(record: StreamRecord) -> None:
    """The same misuse refused by every implementation."""
    if len(record.stream_id) != 16 or len(record.allowance_id) != 16:
        raise UsageError("stream_id/allowance_id: 16 bytes each")
    if len(record.start_link) != 32:
        raise UsageError("start_link: 32 bytes")
    if record.resume_key and len(record.resume_key) != 32:
        raise UsageError("resume_key: a 32-byte x-only public key, or empty")
    if record.epoch or record.delivered_units or record.statement:
        raise UsageError("record: a new stream starts at epoch 0, nothing delivered, no statement")


def check_announce(url: str, node_id: bytes) -> None:
    if not url.startswith(("ws://", "wss://")) or len(url) > 256:
        raise UsageError(f"url: a ws:// or wss:// URL of at most 256 characters, not {url[:80]!r}")
    if len(node_id) != 33:
        raise UsageError("node_id: 33 bytes")


class MemoryStreamStore:
    """:class:`StreamStore` in this process's memory: failover between connections, not processes."""

    def __init__(self) -> None:
        self._streams: dict[bytes, StreamRecord] = {}
        #: delivered_units of open streams, kept apart from the records: a tick's write is one
        #: dict update here, not a new frozen record (``dataclasses.replace`` per tick, profiled)
        self._delivered: dict[bytes, int] = {}
        self._sellers: dict[str, bytes] = {}

    async def create(self, record: StreamRecord) -> None:
        check_record(record)
        if record.stream_id in self._streams:
            raise StoreError(f"stream_id: {record.stream_id.hex()} already exists")
        self._streams[record.stream_id] = record

    async def load(self, stream_id: bytes) -> StreamRecord | None:
        return self._record(stream_id)

    def _record(self, stream_id: bytes) -> StreamRecord | None:
        record = self._streams.get(stream_id)
        delivered = self._delivered.get(stream_id, 0)
        if record is not None and delivered != record.delivered_units:
            record = self._streams[stream_id] = replace(record, delivered_units=delivered)
        return record

    def _open_at(self, stream_id: bytes, epoch: int) -> StreamRecord | None:
        record = self._record(stream_id)
        return record if record is not None and record.epoch == epoch and not record.statement else None

    async def take_over(self, stream_id: bytes, epoch: int) -> bool:
        record = self._open_at(stream_id, epoch)
        if record is not None:
            self._streams[stream_id] = replace(record, epoch=epoch + 1)
        return record is not None

    async def deliver(self, stream_id: bytes, epoch: int, delivered_units: int) -> bool:
        record = self._streams.get(stream_id)
        if record is None or record.epoch != epoch or record.statement:
            return False
        if delivered_units > self._delivered.get(stream_id, 0):
            self._delivered[stream_id] = delivered_units
        return True

    async def close(self, stream_id: bytes, epoch: int, statement: str) -> str:
        record = self._open_at(stream_id, epoch)
        if record is not None:
            self._streams[stream_id] = replace(record, statement=statement)
            return statement
        found = self._streams.get(stream_id)
        return found.statement if found is not None else ""

    async def purge_closed(self, limit: int = PURGE_LIMIT) -> int:
        return 0  # one process: StreamSeller.sweep forgets its closed streams itself

    def forget(self, stream_id: bytes) -> None:
        """Drop a stream (this process closed it long ago): memory is all this store has."""
        self._streams.pop(stream_id, None)
        self._delivered.pop(stream_id, None)

    async def announce(self, url: str, node_id: bytes) -> None:
        check_announce(url, node_id)
        self._sellers[url] = node_id

    async def sellers(self) -> list[tuple[str, bytes]]:
        return list(self._sellers.items())[:MAX_SELLERS]

    async def aclose(self) -> None:
        return None


def check_retention(closed_retention: float) -> None:
    if not closed_retention > 0:
        raise UsageError(f"closed_retention: seconds a closed stream is kept, more than 0, not {closed_retention}")


def open_stream_store(url: str, closed_retention: float = CLOSED_RETENTION) -> StreamStore:
    """``memory`` (also for ``sqlite:...``: one process), ``redis://...`` or ``postgresql://...``;
    ``closed_retention``: seconds a shared store keeps a closed stream for a late resume."""
    check_retention(closed_retention)
    if url == "memory" or url.startswith("sqlite:"):
        return MemoryStreamStore()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from lightspeed.stream.state_redis import RedisStreamStore

        return RedisStreamStore(url, closed_retention=closed_retention)
    if url.startswith(("postgresql://", "postgres://")):
        from lightspeed.stream.state_postgres import PostgresStreamStore

        return PostgresStreamStore(url, closed_retention=closed_retention)
    raise UsageError(f"store: {url!r} is not memory, sqlite:PATH, redis://... or postgresql://...")
