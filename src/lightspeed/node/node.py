"""A Lightning node runtime: peers over TCP, durable channels, direct payments with onions and invoices.

The node owns the I/O: sockets (through :mod:`lightspeed.node.peer`), the chain,
the wallet, the store and the clock. Every protocol decision is made by the
sans-IO machines it drives: :class:`~lightspeed.channel.Channel` for channel
state, :mod:`lightspeed.channel.establish` for opening, :mod:`lightspeed.onion`
for the payment onion and :mod:`lightspeed.invoice` for the request. After any
change a channel has to sign for, the node signs (the commitment "dance" is
automatic).

Persistence follows LDK's rule: every change of a channel's state is committed
to the :class:`~lightspeed.store.Store`, in one transaction with the payment,
invoice or onion it touches, *before* any message that depends on it is
queued. A step is mutate, commit, queue, with no ``await`` in between, so the
wire order is the order of the committed states even with several tasks (a
``pay`` and the peer's messages) on one channel. A node built on a store that
holds channels resumes them: it dials the peers it knows an address for,
exchanges ``channel_reestablish`` (retransmitting what the peer missed), and
pending payments then end settled or failed; a dropped connection does the
same. An HTLC's payment is failed only once the HTLC is gone from both
commitments without a preimage; it succeeds as soon as the preimage arrives.

Multi-hop: an incoming HTLC whose onion names a next channel is forwarded
(:mod:`lightspeed.node.forwarding` reads the onion, :func:`~lightspeed.payments.forward.decide_forward`
decides); the link incoming -> outgoing is committed with the outgoing add, and the
incoming HTLC is fulfilled with the preimage as soon as it comes back, or failed with the
wrapped failure once the outgoing HTLC is gone. HTLCs for us go to the
:class:`~lightspeed.payments.receiver.Receiver` (MPP sets, hold invoices, keysend, AMP);
every decision about an incoming HTLC is committed before it is sent and re-applied after a
reconnection or a restart. ``pay`` routes over the node's graph (its own channels as they
are, plus the ``graph`` it is given or learned by BOLT 7 gossip (:mod:`lightspeed.node.gossip_runtime`,
which also announces our channels when ``announce_channels``) and the invoice's route hints), retries with
:class:`~lightspeed.payments.attempts.PaymentAttempts` and splits (MPP) when no single route
carries the amount; ``keysend`` and ``pay_amp`` pay without an invoice.

Opening: the funder proposes the channel type both ``init`` feature sets allow (anchors when
both offer ``option_anchors``, else ``option_static_remotekey``); the fundee checks it against
its own features (or derives it, for a peer without ``option_channel_type``) and builds
commitments of exactly that type (:mod:`lightspeed.channel.establish`).

A force close, the peer's or ours, is resolved on chain by :mod:`lightspeed.node.onchain`
(see the section at the end of :class:`Node`).

Blinded paths (BOLT 4 route blinding): :mod:`lightspeed.node.blinded` builds them to us
(:meth:`Node.blinded_payment_paths`), receives and forwards over them (an ``update_add_htlc`` with
``path_key``, or our payload naming us the introduction node) and pays to them
(:meth:`Node.pay_blinded`); the node only hands it those HTLCs and their failures.

Every HTLC of an outgoing payment (each part of an MPP payment) is recorded while in flight: after
a restart the payment succeeds as soon as one part brings the preimage, and fails only once all
its parts failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from lightspeed.bitcoin.network import REGTEST, Network
from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxOut
from lightspeed.chain.source import NodeChain
from lightspeed.chain.wallet import HdSeed, Wallet
from lightspeed.channel.closing import ClosingNegotiation, shutdown
from lightspeed.channel.commitment import ChannelBasepoints
from lightspeed.channel.establish import (
    ANCHORS,
    STATIC_REMOTEKEY,
    ChannelPolicy,
    ChannelType,
    check_accept_channel,
    check_open_channel,
    choose_channel_type,
    implied_channel_type,
)
from lightspeed.channel.htlc_log import LoggedHtlc, Side
from lightspeed.channel.limits import advertised_htlc_range
from lightspeed.channel.resolve import SpendKind, htlc_deadline_passed
from lightspeed.channel.scripts import funding_script
from lightspeed.channel.serialize import (
    channel_from_record,
    channel_to_record,
    remote_commitment_record,
)
from lightspeed.channel.state import (
    Channel,
    ChannelConfig,
    ChannelFailure,
    DataLossError,
    LocalSecrets,
    channel_id_from_funding,
)
from lightspeed.codec.features import Features
from lightspeed.codec.generated import (
    AcceptChannel,
    AnnouncementSignatures,
    ChannelReady,
    ChannelReestablish,
    ClosingSigned,
    CommitmentSigned,
    FundingCreated,
    FundingSigned,
    OnionMessage,
    OpenChannel,
    RevokeAndAck,
    Shutdown,
    UpdateAddHtlc,
    UpdateFailHtlc,
    UpdateFailMalformedHtlc,
    UpdateFee,
    UpdateFulfillHtlc,
)
from lightspeed.codec.message_base import WireMessage
from lightspeed.codec.messages import Error, Message, Warning, encode_message, make_message
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import (
    ChannelOpenFailed,
    LightspeedError,
    PaymentError,
    PeerProtocolError,
    RejectedTransaction,
    UsageError,
)
from lightspeed.gossip.addresses import IPV4, Address
from lightspeed.gossip.create import create_channel_update, direction_of
from lightspeed.gossip.gossiper import GOSSIP_TYPES
from lightspeed.invoice import Invoice, build_invoice
from lightspeed.invoice.encode import DEFAULT_FEATURES as DEFAULT_INVOICE_FEATURES
from lightspeed.invoice.fields import RouteHintHop
from lightspeed.node.anchor_cpfp import broadcast_commitment
from lightspeed.node.blinded import BlindedInvoice, BlindedPayments, parse_malformed
from lightspeed.node.blinded_incoming import (
    BlindedFailure,
    BlindedFinal,
    BlindedForward,
    pack_onion,
    unpack_onion,
)
from lightspeed.node.broadcast import Broadcaster, BroadcastRejected
from lightspeed.node.events import EventBus
from lightspeed.node.forwarding import (
    DEFAULT_POLICY,
    Final,
    Forward,
    ForwardSettled,
    Malformed,
    Refuse,
    read_onion,
    short_channel_id,
)
from lightspeed.node.gossip_runtime import GossipRuntime
from lightspeed.node.invoices import InvoiceBook
from lightspeed.node.keys import ChannelKeys, DerivedChannelKeys, new_key_id
from lightspeed.node.offers_flow import OffersFlow
from lightspeed.node.onchain import (
    ChannelClosedOnChain,
    HtlcResolvedOnChain,
    OnchainEvent,
    OnchainWatcher,
    PendingSweep,
    ResolutionFinished,
    backfill_close_summaries,
    close_summary,
)
from lightspeed.node.onion_messenger import OnionMessenger
from lightspeed.node.onion_ratelimit import OnionMessageLimits
from lightspeed.node.paying import (
    NO_LIMITS,
    FinalPart,
    HtlcOutcome,
    LocalChannel,
    PayLimits,
    RouteFailed,
    decode_outcome,
    onion_for_route,
    routing_graph,
)
from lightspeed.node.peer import DEFAULT_FEATURES, Peer, PeerListener
from lightspeed.node.peer import connect as connect_peer
from lightspeed.node.refunds import Refunds
from lightspeed.node.settings import DEFAULT_CHANNEL_SETTINGS, ChannelSettings
from lightspeed.offers.tlv_fields import BlindedPayInfo
from lightspeed.onion.blinding import BlindedPath
from lightspeed.onion.failure import (
    FailureCode,
    FailureMessage,
    create_failure_packet,
    wrap_failure_packet,
)
from lightspeed.payments.amp import AMP_FEATURE_BITS, AMP_RECORD_TYPE, AmpPayment, AmpShard
from lightspeed.payments.attempts import PaymentAttempts, SendAttempt
from lightspeed.payments.attempts import PaymentFailed as AttemptsFailed
from lightspeed.payments.forward import ForwardingPolicy, ForwardTo, OutgoingChannel, decide_forward
from lightspeed.payments.receiver import (
    KEYSEND_MIN_FINAL_CLTV,
    KEYSEND_RECORD_TYPE,
    Decision,
    Fail,
    Held,
    IncomingPart,
    Receivable,
    Received,
    Receiver,
    Settle,
)
from lightspeed.routing import ChannelGraph, NoRouteError, ProbabilisticScorer, Route, find_route
from lightspeed.store import (
    ClosedChannel,
    IncomingHtlcRecord,
    InvoiceRecord,
    PaymentRecord,
    SqliteStore,
    Store,
    StoredChannel,
    StoreUnavailable,
)

log = logging.getLogger("lightspeed.node")

ROUTE_BLINDING_REQUIRED = 24  # BOLT 9 option_route_blinding, even (required) bit
FINAL_CLTV_MARGIN = 12  # blocks added to the payee's min_final_cltv_expiry: the chain moves while we send
MAX_PARTS = 16  # MPP: the most parts one payment is split into
RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)  # seconds between dials to a lost peer, then the last
_UPDATES = (UpdateAddHtlc, UpdateFulfillHtlc, UpdateFailHtlc, UpdateFailMalformedHtlc, UpdateFee, CommitmentSigned,
            RevokeAndAck)


@dataclass(frozen=True)
class PaymentReceived:
    payment_hash: bytes
    amount_msat: int


@dataclass(frozen=True)
class PaymentSent:
    payment_hash: bytes
    preimage: bytes
    amount_msat: int


@dataclass(frozen=True)
class PaymentFailed:
    payment_hash: bytes
    reason: str


@dataclass(frozen=True)
class HtlcHeld:
    """A hold invoice's payment arrived in full: ``settle_hold`` or ``cancel_hold`` it."""

    payment_hash: bytes
    amount_msat: int


NodeEvent = PaymentReceived | PaymentSent | PaymentFailed | HtlcHeld | BroadcastRejected | ForwardSettled
HtlcKey = tuple[bytes, int]  # (channel id, HTLC id)


#: How long pay() waits for channels still reestablishing before it says how much it can send.
REESTABLISH_GRACE_S = 3.0


@dataclass
class _Opening:
    """A channel being opened: the messages exchanged so far."""

    peer: Peer
    secrets: LocalSecrets
    open_msg: OpenChannel
    funder: bool
    key_index: int
    accept_msg: AcceptChannel | None = None
    channel: Channel | None = None
    funding_tx: Transaction | None = None
    channel_type: ChannelType | None = None  # agreed (the fundee learns it from open_channel)


@dataclass
class _Closing:
    """A mutual close in progress: our shutdown script, then the fee negotiation."""

    local_script: bytes
    done: asyncio.Future[Transaction]
    shutdown_sent: bool = False
    fee_range: tuple[int, int] | None = None  # the operator's closing fee (close --feerate), else the chain's
    negotiation: ClosingNegotiation | None = None


CLOSING_WEIGHT = 700  # a closing transaction with two P2WPKH outputs weighs about 680


def _in_memory_store() -> Store:
    return SqliteStore(":memory:")


def _split(amount_msat: int, parts: int) -> list[int]:
    """``parts`` amounts adding up to ``amount_msat`` (the remainder on the first)."""
    share = amount_msat // parts
    return [amount_msat - share * (parts - 1)] + [share] * (parts - 1)


@dataclass
class _Shards:
    """The payment hash and final payload of each attempt of one part.

    For an invoice or keysend both stay the same; for AMP every attempt is a new shard,
    and a failed shard's share is carried by the next one (its retry).
    """

    payment_hash: bytes | None
    final: FinalPart
    amp: tuple[AmpPayment, AmpShard] | None

    def next(self) -> tuple[bytes, FinalPart]:
        if self.amp is None:
            assert self.payment_hash is not None
            return self.payment_hash, self.final
        shard = self.amp[1]
        final = dataclasses.replace(self.final, custom_records=((AMP_RECORD_TYPE, shard.record.to_bytes()),))
        return shard.payment_hash, final

    def failed(self) -> None:
        if self.amp is not None:
            payment, shard = self.amp
            self.amp = (payment, payment.reshard(shard.record.root_share, 1)[0])


def _funding_what(channel_id: bytes) -> str:
    return f"funding of channel {channel_id.hex()}"


@dataclass
class Node:
    """One node. ``start()`` listens; ``connect``, ``open_channel``, ``create_invoice``, ``pay``.

    Give it a ``store`` (``lightspeed.store.open_store(datadir)``) to make it durable; the
    default is an in-memory store, for tests and demos that need no restart.
    """

    privkey: bytes
    chain: NodeChain  # the embedded RegtestChain, or node.electrum_chain.ElectrumChainSource
    wallet_seed: bytes | HdSeed  # HdSeed: BIP 84/86 keys (chain.wallet); bytes: the pre-BIP 39 scheme
    network: Network = REGTEST
    channels: dict[bytes, Channel] = field(default_factory=dict)
    events: EventBus[NodeEvent] = field(default_factory=EventBus)  # async for e in node.events(): ...
    store: Store = field(default_factory=_in_memory_store)
    #: The network as we know it (gossip or given); our own channels are taken from us, not from it.
    graph: ChannelGraph | None = None
    forwarding_policy: ForwardingPolicy = DEFAULT_POLICY
    mpp_timeout: float = 60.0  # seconds an incomplete MPP set waits for its other parts
    #: Open public channels and announce them by BOLT 7 gossip (node_gossip_runtime does the work).
    announce_channels: bool = False
    #: Our init features (BOLT 9); the channel types we propose and accept follow from them.
    features: Features = DEFAULT_FEATURES
    #: Where channel secrets come from (node.keys); None: derived from ``privkey``.
    channel_keys: ChannelKeys | None = None
    #: What we ask of peers in open_channel / accept_channel (node.settings).
    channel_settings: ChannelSettings = DEFAULT_CHANNEL_SETTINGS
    #: How many onion messages each peer may send us (node.onion_ratelimit); past it they are dropped.
    onion_message_limits: OnionMessageLimits = field(default_factory=OnionMessageLimits)

    def __post_init__(self) -> None:
        self.node_id = pubkey_from_privkey(self.privkey)
        self.wallet = Wallet(self.wallet_seed, self.chain, self.network)
        self._listener = PeerListener(self.privkey, self._serve, self.features, networks=self._networks())
        self._peers: dict[bytes, Peer] = {}
        self._channel_peer: dict[bytes, Peer] = {}
        self._channel_node: dict[bytes, bytes] = {}  # channel id -> the peer's node id
        self._openings: dict[bytes, _Opening] = {}
        self._opened: dict[bytes, bytes] = {}  # temporary id -> channel id, for open_channel's caller
        self._open_failed: dict[bytes, str] = {}  # temporary id -> why the opening ended unfunded
        self._ready: dict[bytes, asyncio.Event] = {}
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}  # payment_hash -> preimage future
        self._in_flight: dict[bytes, dict[int, bytes]] = {}  # channel id -> our HTLC id -> payment hash
        self._tasks: set[asyncio.Task[None]] = set()
        self._policy = ChannelPolicy(chain_hash=self.network.chain_hash, channel_types=(
            (ANCHORS, STATIC_REMOTEKEY) if self.features.supports("option_anchors") else (STATIC_REMOTEKEY,)))
        self._ready_marks: dict[bytes, set[str]] = {}
        self._saved_ctn: dict[bytes, int] = {}  # highest remote commitment record stored, per channel
        self._reestablished: set[bytes] = set()
        self._dialers: set[bytes] = set()  # peers with a reconnect loop running
        self._watching: set[bytes] = set()  # channels whose funding depth is being watched
        self._stopping = False
        self._held: list[tuple[Peer | None, list[WireMessage]]] | None = None  # see _handle_burst
        if self.channel_keys is None:
            self.channel_keys = DerivedChannelKeys.from_node_key(self.privkey)
        self.channel_keys.check_network(self.network)  # fixed test keys: regtest only
        self._key_index: dict[bytes, int] = {}  # channel id -> index its secrets derive from
        self._sent_shutdown: dict[bytes, bytes] = {}  # loaded: closes under way (resumed by start())
        self.settled_invoices: set[bytes] = set()  # payment hashes of our invoices we fulfilled
        self.sent_counts: Counter[str] = Counter()  # channel messages sent, by name (benchmarks)
        self.channel_writes = 0  # channel states committed to the store (benchmarks)
        self.scorer = ProbabilisticScorer()  # what payments taught us about the network's liquidity
        self.receiver = Receiver(mpp_timeout=self.mpp_timeout)
        self.invoices = InvoiceBook(self.store, self.receiver)  # looked up when an HTLC names one
        self.payment_fees: dict[bytes, int] = {}  # routing fees our settled payments paid (this run)
        self.synced_tip: tuple[int, bytes] | None = None  # the chain tip _watch_chain last handled
        self.store_failure: str | None = None  # set when a commit failed: the node stopped (see _on_store_failure)
        self._halting: asyncio.Task[None] | None = None
        self.store.add_failure_listener(self._on_store_failure)
        self._incoming: dict[HtlcKey, IncomingHtlcRecord] = {}  # decided incoming HTLCs (mirrors the store)
        self._by_out: dict[HtlcKey, HtlcKey] = {}  # outgoing HTLC we forwarded -> the incoming one
        self._handled: set[HtlcKey] = set()  # incoming HTLCs given to the receiver in this run
        self._part_secrets: dict[HtlcKey, bytes] = {}  # their onion shared secrets (to encrypt failures)
        self._failures: dict[HtlcKey, HtlcOutcome] = {}  # our HTLCs the peer failed, until they are gone
        self._waiters: dict[HtlcKey, asyncio.Future[HtlcOutcome]] = {}  # our HTLCs a sender awaits
        self._revoked_waiters: list[asyncio.Future[None]] = []  # senders waiting for a channel slot to free
        self._dirty: dict[bytes, list[WireMessage]] = {}  # channels changed in this step, their updates
        self._scid: dict[bytes, int] = {}  # channel id -> short channel id (once the funding is mined)
        self._by_scid: dict[int, bytes] = {}
        self._updates: dict[bytes, tuple[tuple[int, bool, ForwardingPolicy], bytes]] = {}  # signed, by channel
        self._load()
        self._onchain = self._new_onchain_watcher()  # after _load: takes closed channels out
        self.gossip = GossipRuntime(self)  # BOLT 7: announces our channels, fills self.graph
        self.onion_messages = OnionMessenger(self, self.onion_message_limits)  # BOLT 4: relay, receive, send
        self.offers = OffersFlow(self)  # BOLT 12 over onion messages: answers invoice requests
        self.refunds = Refunds(self)  # BOLT 12 refunds: pays invoices for ours, answers others'
        self.broadcaster = Broadcaster(self.chain, self.wallet, self._spawn, self.events.put_nowait, self.store)
        self.blinded = BlindedPayments(self)  # BOLT 4 route blinding: paths to us, forwarding, paying

    def _load(self) -> None:
        """Channels and in-flight payments from the store (nothing yet for a new node)."""
        for stored in self.store.channels():
            channel = channel_from_record(stored.state, stored.remote_commitments, self._derive_secrets)
            cid = stored.channel_id
            key_index = json.loads(stored.state).get("key_index")
            if key_index is not None:
                self._key_index[cid] = key_index
            self.channels[cid] = channel
            self._channel_node[cid] = stored.peer_id
            self._saved_ctn[cid] = max(stored.remote_commitments, default=-1)
            self._ready_marks[cid] = {"sent", "received"} if stored.ready else set()
            if stored.shutdown_script is not None:
                self._sent_shutdown[cid] = stored.shutdown_script
        never_sent = []
        for payment in self.store.pending_payments():
            if payment.status != "pending":
                continue
            # Every part still in flight (a store written before parts were kept: the last HTLC).
            parts = self.store.payment_parts(payment.payment_hash)
            if not parts and payment.channel_id is not None and payment.htlc_id is not None:
                parts = [(payment.channel_id, payment.htlc_id)]
            for channel_id, htlc_id in parts:
                self._in_flight.setdefault(channel_id, {})[htlc_id] = payment.payment_hash
            if not parts:
                never_sent.append(payment)
        if never_sent:  # stopped before any HTLC of theirs was committed: nothing can settle them now
            with self.store.transaction():
                for payment in never_sent:
                    self.store.put_payment(dataclasses.replace(
                        payment, status="failed", reason="the node stopped before the payment was sent"))
        for record in self.store.incoming_htlcs():
            self._incoming[(record.channel_id, record.htlc_id)] = record
            if record.out_channel_id is not None and record.out_htlc_id is not None:
                self._by_out[(record.out_channel_id, record.out_htlc_id)] = (record.channel_id, record.htlc_id)
        # Invoices are not decoded here: the receiver gets each when an HTLC names it (node.invoices).
        self.invoices.start(time.time(), self._invoice_hashes_in_channels())
        self.settled_invoices.update(self.receiver.settled)

    def _invoice_hashes_in_channels(self) -> set[bytes]:
        """Payment hashes of HTLCs the peers offered us, still in a channel: their invoices are not pruned."""
        return {h.payment_hash for channel in self.channels.values()
                for h in self._unresolved_htlcs(channel) if h.offerer is Side.REMOTE}

    def _derive_secrets(self, index: int) -> LocalSecrets:
        assert self.channel_keys is not None  # set by __post_init__
        return self.channel_keys.channel_secrets(index)

    # -- persistence: commit, then queue ------------------------------------------------------

    def _save(self, channel: Channel) -> None:
        """Write the channel's state (inside a store transaction) with the commitments it newly signed."""
        cid = channel.config.channel_id
        saved = self._saved_ctn.get(cid, -1)
        for ctn in sorted(n for n in channel.signed_remote if n > saved):
            self.store.add_remote_commitment(cid, ctn, remote_commitment_record(channel, ctn))
            self._saved_ctn[cid] = ctn
        ready = self._ready_marks.get(cid) == {"sent", "received"}
        self.channel_writes += 1
        record = channel_to_record(channel, self._key_index.get(cid))
        self.store.put_channel(cid, self._channel_node[cid], record, ready)

    async def _send(self, peer: Peer | None, messages: list[WireMessage]) -> None:
        await self._send_all([(peer, messages)])

    def _queue_all(self, batches: list[tuple[Peer | None, list[WireMessage]]]) -> list[Peer]:
        """Queue every message of every batch at once (no await between them); the peers to flush.

        A connection that is gone drops them: the state they follow is committed, and
        channel_reestablish retransmits what the peer must see again.
        """
        if self._held is not None:  # inside a burst: sent once the burst is committed
            self._held.extend(b for b in batches if b[0] is not None and b[1])
            return []
        if self.store_failure is not None:  # memory may be ahead of the store: nothing more goes out
            return []
        peers: list[Peer] = []
        for peer, messages in batches:
            if peer is None or not messages:
                continue
            self.sent_counts.update(m.NAME for m in messages)
            try:
                for message in messages:
                    peer.session.send(message)
            except UsageError:
                continue
            if peer not in peers:
                peers.append(peer)
        return peers

    async def _send_all(self, batches: list[tuple[Peer | None, list[WireMessage]]]) -> None:
        for peer in self._queue_all(batches):
            with contextlib.suppress(UsageError, ConnectionError, OSError):
                await peer.flush()

    def _step_batches(self) -> list[tuple[Peer | None, list[WireMessage]]]:
        """End a step (inside its transaction): sign and save every channel it changed; their messages."""
        batches: list[tuple[Peer | None, list[WireMessage]]] = []
        for cid, messages in self._dirty.items():
            channel = self.channels.get(cid)
            if channel is None:
                continue
            if (cid in self._reestablished and channel.log.has_changes_to_sign()
                    and not channel.log.awaiting_revoke):
                messages.append(channel.sign())
            self._save(channel)
            batches.append((self._channel_peer.get(cid), messages))
        self._dirty.clear()
        return batches

    # -- connections -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen, and dial every peer we have a channel with and an address for."""
        bound = await self._listener.start(host, port)
        self._spawn(self._watch_chain())
        self.gossip.address = Address(IPV4, host, bound) if host.count(".") == 3 else None
        self._spawn(self.gossip.run())
        self._spawn(self._receiver_timer(min(1.0, self.mpp_timeout / 4)))
        self.broadcaster.resume()  # fundings and closes a stopped (or killed) run left unbroadcast
        for cid, script in self._sent_shutdown.items():  # a mutual close resumes: shutdown is resent
            done: asyncio.Future[Transaction] = asyncio.get_running_loop().create_future()
            self._closings[cid] = _Closing(script, done, shutdown_sent=True)
        known = self.store.peers()
        for node_id in set(self._channel_node.values()):
            if node_id in known:
                self._keep_connected(node_id)
        return bound

    async def stop(self) -> None:
        """Close every connection and task; the store stays open (the caller owns it)."""
        self._stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for peer in list(self._peers.values()):
            await peer.close()
        await self._listener.stop()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """Retrieving the exception marks it seen: a task ended by the store failure (already logged
        once by _on_store_failure) must not print its traceback too; any other still does."""
        self._tasks.discard(task)
        if not task.cancelled():
            error = task.exception()
            if error is not None and not isinstance(error, StoreUnavailable):
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "node task failed", "exception": error, "task": task})

    # -- a store that cannot commit ---------------------------------------------------------------

    def _on_store_failure(self, error: StoreUnavailable) -> None:
        """The store refused a commit (full disk, read-only file): stop the node, once.

        The change that failed may already be applied in memory (a channel advanced by a
        peer's message, an HTLC added), so memory and store are apart, and the rule "commit,
        then send" can only hold if nothing more is sent: every connection is closed without
        the messages that would follow, timers and redials stop, and every command raises
        :class:`StoreUnavailable` from now on. Nothing is lost: the peers still hold what we
        last committed, and a node restarted on the repaired store resumes from it
        (channel_reestablish retransmits what either side missed).
        """
        if self.store_failure is not None:
            return
        self.store_failure = error.reason
        self._stopping = True
        log.error("%s: the node stopped (connections closed, no new payments, invoices or channels); "
                  "free the disk or fix the store's permissions, then restart it", error)
        with contextlib.suppress(RuntimeError):  # no running loop (a failure while loading): nothing to close
            loop = asyncio.get_running_loop()
            self._halting = loop.create_task(self._halt())

    async def _halt(self) -> None:
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        for peer in list(self._peers.values()):
            await peer.close()
        await self._listener.stop()

    def _require_store(self) -> None:
        """Refuse new work once the store failed (see :meth:`_on_store_failure`)."""
        if self.store_failure is not None:
            raise StoreUnavailable(self.store_failure)

    def _networks(self) -> tuple[bytes, ...]:
        """The chains our init names (BOLT 1: SHOULD set networks to all chains it will gossip or open channels for)."""
        return (self.network.chain_hash,)

    async def connect(self, host: str, port: int, node_id: bytes) -> Peer:
        """The connection to ``node_id``: the live one if there is one, else a new one to ``host:port``.

        Idempotent: a peer may keep its existing connection and drop a second one right after the
        handshake (Electrum 4.8.1 does), so dialing again would fail although we are connected.
        """
        self._require_store()
        live = self._peers.get(node_id)
        if live is not None and not live.session.closed:
            with self.store.transaction():
                self.store.put_peer(node_id, host, port)  # the address given is the one to dial next time
            return live
        peer = await connect_peer(host, port, self.privkey, node_id, self.features, networks=self._networks())
        with self.store.transaction():
            self.store.put_peer(node_id, host, port)  # to dial it again after a restart
        self._adopt_connection(peer)
        return peer

    def _adopt_connection(self, peer: Peer) -> None:
        """An outbound connection: registered at once (callers use it next), then served."""
        assert peer.remote_pubkey is not None
        old = self._peers.get(peer.remote_pubkey)
        self._peers[peer.remote_pubkey] = peer
        if old is not None and old is not peer:
            self._spawn(old.close())
        self._spawn(self._serve(peer))

    def _keep_connected(self, node_id: bytes) -> None:
        """Dial ``node_id`` until connected, now and whenever the connection drops."""
        if node_id in self._dialers or self._stopping:
            return
        self._dialers.add(node_id)

        async def dial() -> None:
            attempt = 0
            try:
                while not self._stopping:
                    peer = self._peers.get(node_id)
                    if peer is not None and not peer.session.closed:
                        began = time.monotonic()
                        await peer.closed()
                        # A connection the peer ends at once (an error) must not make us dial in a loop.
                        attempt = 0 if time.monotonic() - began > 10 else attempt + 1
                        await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
                        continue
                    address = self.store.peers().get(node_id)
                    if address is None:
                        return
                    try:
                        peer = await connect_peer(address[0], address[1], self.privkey, node_id, self.features,
                                                  networks=self._networks())
                    except (OSError, PeerProtocolError):
                        await asyncio.sleep(RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)])
                        attempt += 1
                        continue
                    self._adopt_connection(peer)
            finally:
                self._dialers.discard(node_id)

        self._spawn(dial())

    async def _serve(self, peer: Peer) -> None:
        assert peer.remote_pubkey is not None
        node_id = peer.remote_pubkey
        old = self._peers.get(node_id)
        self._peers[node_id] = peer
        if old is not None and old is not peer:
            await old.close()  # the newest connection wins
        try:
            peer.gossip_sink = self.gossip.receive
            await self._on_connected(peer)
            await self.gossip.connected(peer)
            async for received in peer:
                if isinstance(received, Error):
                    await self._on_error_message(peer, received)
                if isinstance(received, WireMessage) and received.TYPE in GOSSIP_TYPES:
                    self.gossip.receive(peer, encode_message(received))  # came before the sink was set
                    continue
                if isinstance(received, OnionMessage):  # never an error to the peer: dropped or not
                    await self.onion_messages.receive(peer, received)
                    continue
                message: Message | None = received
                while isinstance(message, WireMessage):
                    current = message
                    try:
                        if isinstance(current, _UPDATES):  # a burst of these shares one store commit
                            message = await self._handle_burst(peer, current)
                        else:
                            await self._handle(peer, current)
                            message = None
                    except PeerProtocolError as exc:
                        await self._on_protocol_error(peer, exc)
                        return
                    except StoreUnavailable:
                        return  # the node stops (_on_store_failure): no error to the peer, its channels live on
                    except (LightspeedError, KeyError, ValueError) as exc:
                        # A message we cannot place (unknown temporary id, out-of-order funding, ...):
                        # no input may crash the node; tell the peer and drop this connection only.
                        await self._send_error(peer, bytes(32), f"cannot process {current.NAME}: {exc}")
                        return
        finally:
            await peer.close()
            self._on_disconnected(peer)

    async def _handle_burst(self, peer: Peer, first: WireMessage) -> Message | None:
        """Apply ``first`` and every channel update already received after it, then commit once.

        Group commit: under load, updates arrive in bursts, and one durable commit for the
        burst costs one fsync instead of one per message. Messages the burst produces are
        held until the commit (the persistence rule holds). Nothing in a burst suspends,
        so no other task (a ``pay``) can act on the channel in between. Returns the message
        that ended the burst if it was not a channel update (the caller handles it next).
        """
        held: list[tuple[Peer | None, list[WireMessage]]] = []
        error: Exception | None = None
        follow: Message | None = None
        self._held = held
        try:
            with self.store.transaction():
                message = first
                while True:
                    try:
                        await self._on_channel_message(peer, message)
                    except Exception as exc:  # commit what went before, then raise it
                        error = exc
                        break
                    after = peer.next_ready()
                    if after is None or not isinstance(after, _UPDATES):
                        follow = after
                        break
                    message = after
        finally:
            self._held = None
        await self._send_all(held)
        if error is not None:
            raise error
        return follow

    async def _send_error(self, peer: Peer, channel_id: bytes, reason: str) -> None:
        with contextlib.suppress(UsageError, ConnectionError, OSError):
            await peer.send(Error(channel_id, reason.encode()))
        await peer.close()

    async def _on_connected(self, peer: Peer) -> None:
        """BOLT 2: on reconnection, every channel with this peer starts with channel_reestablish."""
        for cid, node_id in list(self._channel_node.items()):
            if node_id != peer.remote_pubkey or cid not in self.channels:
                continue
            channel = self.channels[cid]
            self._channel_peer[cid] = peer
            self._reestablished.discard(cid)
            self._forget_uncommitted(channel)
            await self._send(peer, [channel.reestablish_message()])

    def _on_disconnected(self, peer: Peer) -> None:
        self.gossip.disconnected(peer)
        self._fail_openings(peer, "the connection closed before the peer signed the funding")
        if peer.remote_pubkey is not None:
            self.onion_messages.forget_peer(peer.remote_pubkey)
        if self._peers.get(peer.remote_pubkey or b"") is peer:
            del self._peers[peer.remote_pubkey or b""]
        lost = [cid for cid, p in self._channel_peer.items() if p is peer]
        for cid in lost:
            del self._channel_peer[cid]
            self._reestablished.discard(cid)
            ready = self._ready.get(cid)
            if ready is not None and ready.is_set():
                self._ready[cid] = asyncio.Event()  # payments wait for the reestablish
            if cid in self.channels and not self._stopping:  # (a restart forgets them anyway)
                self._forget_uncommitted(self.channels[cid])
        if lost and not self._stopping and peer.remote_pubkey in self.store.peers():
            self._keep_connected(peer.remote_pubkey)

    def _forget_uncommitted(self, channel: Channel) -> None:
        """BOLT 2: updates no commitment_signed covered are forgotten; their payments fail.

        A removal of an incoming HTLC that was dropped is decided again (a recorded decision is
        simply re-applied after the reestablish); an outgoing forward dropped fails upstream.
        """
        cid = channel.config.channel_id
        for htlc in channel.disconnected():
            if htlc is not None and htlc.offerer is Side.REMOTE:
                self._handled.discard((cid, htlc.htlc_id))
        with self.store.transaction():
            self._resolve_payments(channel)
            self._dirty.setdefault(cid, [])
            batches = self._step_batches()
        peers = self._queue_all(batches)
        for peer in peers:
            self._spawn(peer.flush())

    # -- opening -------------------------------------------------------------------------------

    def _new_secrets(self) -> tuple[int, LocalSecrets]:
        """Fresh channel secrets, from the key provider and a random id kept in the channel's record.

        Random, not a counter in the store: a node restored with an empty or old store must
        never reuse an earlier channel's keys (see :mod:`lightspeed.node.keys`). Nothing is
        committed here: the id is stored with the channel before the peer can fund it.
        """
        self._require_store()
        while True:
            key_id = new_key_id()
            try:
                return key_id, self._derive_secrets(key_id)
            except UsageError:
                continue  # a derived value that is not a valid key (about 2^-128): another id

    def _config(self, channel_id: bytes, funding: Transaction, funder: bool, local: OpenChannel | AcceptChannel,
                remote: OpenChannel | AcceptChannel, channel_type: ChannelType) -> ChannelConfig:
        """The agreed config: each side's limits are what it announced in the message it sent.

        BOLT #2: channel_reserve_satoshis is what the *sender* requires the other side to keep;
        htlc_minimum_msat, max_htlc_value_in_flight_msat and max_accepted_htlcs limit what the
        sender accepts.
        """
        accept = remote if isinstance(remote, AcceptChannel) else local
        opening = local if isinstance(local, OpenChannel) else remote
        assert isinstance(accept, AcceptChannel) and isinstance(opening, OpenChannel)
        basepoints = ChannelBasepoints(remote.funding_pubkey, remote.revocation_basepoint, remote.payment_basepoint,
                                       remote.delayed_payment_basepoint, remote.htlc_basepoint)
        return ChannelConfig(channel_id, funding.txid, 0, funding.outputs[0].value_sat, funder, channel_type.anchors,
                             basepoints, local.dust_limit_satoshis, remote.dust_limit_satoshis, remote.to_self_delay,
                             local.to_self_delay, max_accepted_htlcs=local.max_accepted_htlcs,
                             remote_max_accepted_htlcs=remote.max_accepted_htlcs,
                             htlc_minimum_msat=local.htlc_minimum_msat, remote_htlc_minimum_msat=remote.htlc_minimum_msat,
                             reserve_from_remote_sat=local.channel_reserve_satoshis,
                             reserve_for_local_sat=remote.channel_reserve_satoshis,
                             max_htlc_value_in_flight_msat=local.max_htlc_value_in_flight_msat,
                             remote_max_htlc_value_in_flight_msat=remote.max_htlc_value_in_flight_msat,
                             minimum_depth=accept.minimum_depth,
                             announce_channel=bool(opening.channel_flags[0] & 1))

    async def open_channel(self, node_id: bytes, funding_sat: int, push_msat: int = 0) -> bytes:
        """Open, fund (wallet) and wait until the channel is ready; returns the channel id."""
        peer = self._peers.get(node_id)
        if peer is None or peer.session.closed:
            raise UsageError(f"node_id: not connected to {node_id.hex()}")
        # BOLT 2: the type it wants, of features both support (anchors if both offer them).
        channel_type = choose_channel_type(self.features, await self._remote_features(peer))
        key_index, secrets = self._new_secrets()
        points = secrets.basepoints()
        temp_id = os.urandom(32)
        ours = self.channel_settings
        probe = Channel(ChannelConfig(temp_id, bytes(32), 0, 1, True, channel_type.anchors, points, 0, 0, 0, 0),
                        secrets, 0, 0, 1, {})
        open_msg = make_message(
            "open_channel", tlvs={"upfront_shutdown_script": {"shutdown_scriptpubkey": b""},
                                  "channel_type": {"type": channel_type.to_bytes()}},
            chain_hash=self.network.chain_hash, temporary_channel_id=temp_id, funding_satoshis=funding_sat,
            push_msat=push_msat, dust_limit_satoshis=ours.dust_limit_sat, max_htlc_value_in_flight_msat=funding_sat * 1000,
            channel_reserve_satoshis=ours.reserve_sat(funding_sat), htlc_minimum_msat=ours.htlc_minimum_msat,
            feerate_per_kw=ours.feerate_per_kw, to_self_delay=ours.to_self_delay,
            max_accepted_htlcs=ours.max_accepted_htlcs,
            funding_pubkey=points.funding_pubkey, revocation_basepoint=points.revocation_basepoint,
            payment_basepoint=points.payment_basepoint, delayed_payment_basepoint=points.delayed_payment_basepoint,
            htlc_basepoint=points.htlc_basepoint, first_per_commitment_point=probe.local_point(0),
            channel_flags=b"\x01" if self.announce_channels else b"\x00")
        assert isinstance(open_msg, OpenChannel)
        ready = self._ready.setdefault(temp_id, asyncio.Event())
        self._openings[temp_id] = _Opening(peer, secrets, open_msg, funder=True, key_index=key_index,
                                           channel_type=channel_type)
        await peer.send(open_msg)
        try:
            await asyncio.wait_for(ready.wait(), 30)
        finally:
            channel_id = self._opened.pop(temp_id, None)
            failed = self._open_failed.pop(temp_id, None)
            self._openings.pop(temp_id, None)
        if failed is not None:
            raise ChannelOpenFailed(f"node_id: the channel with {node_id.hex()} was not opened: {failed}")
        # By the temporary id: the connection may have been replaced meanwhile (a reconnect), and
        # an earlier channel with the same peer is not this one.
        assert channel_id is not None  # ready is set only once funding_signed named the channel
        return channel_id

    async def _handle(self, peer: Peer, message: WireMessage) -> None:
        if isinstance(message, OpenChannel):
            await self._on_open(peer, message)
        elif isinstance(message, AcceptChannel):
            await self._on_accept(message)
        elif isinstance(message, FundingCreated):
            await self._on_funding_created(message)
        elif isinstance(message, FundingSigned):
            await self._on_funding_signed(message)
        elif isinstance(message, ChannelReady):
            self._on_channel_ready(peer, message)
        elif isinstance(message, ChannelReestablish):
            await self._on_reestablish(peer, message)
        elif isinstance(message, (Shutdown, ClosingSigned)):
            await self._on_closing_message(peer, message)
        elif isinstance(message, AnnouncementSignatures):
            self.gossip.on_announcement_signatures(peer, message)
        else:
            await self._on_channel_message(peer, message)

    async def _remote_features(self, peer: Peer) -> Features:
        """The peer's init features (both fields combined)."""
        return (await peer.connected()).remote_init.all_features

    async def _on_open(self, peer: Peer, message: OpenChannel) -> None:
        implied = implied_channel_type(self.features, await self._remote_features(peer))
        channel_type = check_open_channel(message, self._policy, self.features, implied)
        key_index, secrets = self._new_secrets()
        points = secrets.basepoints()
        probe = Channel(ChannelConfig(bytes(32), bytes(32), 0, 1, False, channel_type.anchors, points, 0, 0, 0, 0),
                        secrets, 0, 0, 1, {})
        ours = self.channel_settings
        tlvs: dict[str | int, object] = {"upfront_shutdown_script": {"shutdown_scriptpubkey": b""}}
        if "channel_type" in message.tlvs:  # BOLT 2: MUST set channel_type to the channel_type from open_channel
            tlvs["channel_type"] = {"type": channel_type.to_bytes()}
        accept = make_message(
            "accept_channel", tlvs=tlvs,
            temporary_channel_id=message.temporary_channel_id, dust_limit_satoshis=ours.dust_limit_sat,
            max_htlc_value_in_flight_msat=message.funding_satoshis * 1000,
            channel_reserve_satoshis=ours.reserve_sat(message.funding_satoshis),
            htlc_minimum_msat=ours.htlc_minimum_msat, minimum_depth=ours.minimum_depth,
            to_self_delay=ours.to_self_delay, max_accepted_htlcs=ours.max_accepted_htlcs,
            funding_pubkey=points.funding_pubkey, revocation_basepoint=points.revocation_basepoint,
            payment_basepoint=points.payment_basepoint, delayed_payment_basepoint=points.delayed_payment_basepoint,
            htlc_basepoint=points.htlc_basepoint, first_per_commitment_point=probe.local_point(0))
        assert isinstance(accept, AcceptChannel)
        self._openings[message.temporary_channel_id] = _Opening(peer, secrets, message, funder=False,
                                                                key_index=key_index, accept_msg=accept,
                                                                channel_type=channel_type)
        await peer.send(accept)

    async def _on_accept(self, message: AcceptChannel) -> None:
        opening = self._openings[message.temporary_channel_id]
        implied = implied_channel_type(self.features, await self._remote_features(opening.peer))
        channel_type = check_accept_channel(message, opening.open_msg, self._policy, implied)
        points = opening.secrets.basepoints()
        script = p2wsh_script(funding_script(points.funding_pubkey, message.funding_pubkey))
        funding = self.wallet.create_transaction([TxOut(opening.open_msg.funding_satoshis, script)])
        channel_id = channel_id_from_funding(funding.txid, 0)
        config = self._config(channel_id, funding, True, opening.open_msg, message, channel_type)
        funding_msat = opening.open_msg.funding_satoshis * 1000
        channel = Channel(config, opening.secrets, funding_msat - opening.open_msg.push_msat,
                          opening.open_msg.push_msat, opening.open_msg.feerate_per_kw,
                          {0: message.first_per_commitment_point})
        opening.accept_msg, opening.channel, opening.funding_tx = message, channel, funding
        self._openings[channel_id] = opening
        # Nothing to persist yet: until funding_signed, no funds are committed to the channel.
        await opening.peer.send(FundingCreated(temporary_channel_id=message.temporary_channel_id,
                                               funding_txid=funding.txid, funding_output_index=0,
                                               signature=channel.initial_signature()))

    def _adopt(self, channel: Channel, peer: Peer, key_index: int, funding: Transaction | None = None) -> None:
        """A new channel: it is resumed with this peer after a restart (and its ``funding``, ours to
        broadcast, is committed with it: rebroadcast after a restart if it had not reached the chain)."""
        cid = channel.config.channel_id
        assert peer.remote_pubkey is not None
        self._key_index[cid] = key_index
        self.channels[cid] = channel
        self._channel_peer[cid] = peer
        self._channel_node[cid] = peer.remote_pubkey
        self._reestablished.add(cid)
        with self.store.transaction():
            self._save(channel)
            if funding is not None:
                self.broadcaster.keep(funding, _funding_what(cid))

    async def _on_funding_created(self, message: FundingCreated) -> None:
        opening = self._openings.pop(message.temporary_channel_id)
        assert opening.accept_msg is not None and opening.channel_type is not None
        tx = Transaction(2, (), (TxOut(opening.open_msg.funding_satoshis, b""),), 0)  # only txid/amount used
        channel_id = channel_id_from_funding(message.funding_txid, message.funding_output_index)
        # BOLT 2: MUST use the negotiated channel_type for all commitment transactions.
        config = self._config(channel_id, tx, False, opening.accept_msg, opening.open_msg, opening.channel_type)
        config = ChannelConfig(**{**config.__dict__, "funding_txid": message.funding_txid,
                                  "funding_output_index": message.funding_output_index})
        funding_msat = opening.open_msg.funding_satoshis * 1000
        channel = Channel(config, opening.secrets, opening.open_msg.push_msat, funding_msat - opening.open_msg.push_msat,
                          opening.open_msg.feerate_per_kw, {0: opening.open_msg.first_per_commitment_point})
        channel.receive_initial_signature(message.signature)
        signature = channel.initial_signature()
        self._adopt(channel, opening.peer, opening.key_index)  # committed before funding_signed lets the funder broadcast
        await opening.peer.send(FundingSigned(channel_id=channel_id, signature=signature))
        self._watch_funding(channel_id, message.funding_txid)

    async def _on_funding_signed(self, message: FundingSigned) -> None:
        opening = self._openings.pop(message.channel_id)
        assert opening.channel is not None and opening.funding_tx is not None
        opening.channel.receive_initial_signature(message.signature)  # only now is broadcasting safe
        temp_id = opening.open_msg.temporary_channel_id
        self._openings.pop(temp_id, None)  # funded now: no longer an opening that can fail unfunded
        self._ready[message.channel_id] = self._ready.pop(temp_id, asyncio.Event())
        self._opened[temp_id] = message.channel_id
        # Committed (the funding too) before the broadcast: a crash in between loses neither.
        self._adopt(opening.channel, opening.peer, opening.key_index, opening.funding_tx)
        # The peer signed: the funding must reach the chain (retried while the chain file is locked).
        self.broadcaster.submit(opening.funding_tx, _funding_what(message.channel_id))
        self._watch_funding(message.channel_id, opening.funding_tx.txid)

    def _on_channel_ready(self, peer: Peer, message: ChannelReady) -> None:
        channel = self.channels[message.channel_id]
        if self._channel_peer.get(message.channel_id) is not peer:
            raise PeerProtocolError("channel_ready for a channel with another peer", message.channel_id)
        channel.receive_channel_ready(message)
        self._mark_ready(message.channel_id, "received")
        with self.store.transaction():
            self._save(channel)

    def _mark_ready(self, channel_id: bytes, how: str) -> None:
        """BOLT 2: updates may flow only once channel_ready was both sent and received."""
        marks = self._ready_marks.setdefault(channel_id, set())
        marks.add(how)
        if marks == {"sent", "received"} and channel_id in self._reestablished:
            self._ready.setdefault(channel_id, asyncio.Event()).set()

    def _funding_depth_reached(self, channel: Channel) -> bool:
        """BOLT 2 (channel_ready): MUST wait until the funding transaction has reached minimum_depth.

        That is accept_channel's minimum_depth, for the funder and the accepter alike: the
        accepter asked for it (the funder's own setting only applies when it accepts).
        """
        depth = channel.config.minimum_depth
        if depth is None:  # a channel stored before the agreed depth was kept
            depth = self.channel_settings.minimum_depth
        found = self.chain.get_transaction(channel.config.funding_txid)
        return found is not None and found[1] >= depth

    def _watch_funding(self, channel_id: bytes, txid: bytes) -> None:
        if channel_id in self._watching:
            return
        self._watching.add(channel_id)

        async def watch() -> None:
            channel = self.channels[channel_id]
            while not self._funding_depth_reached(channel):  # poll the chain: the runtime's job
                await asyncio.sleep(0.02)
            while channel_id not in self._reestablished:
                await asyncio.sleep(0.02)
            await self._send(self._channel_peer.get(channel_id), [channel.channel_ready()])
            self._mark_ready(channel_id, "sent")
            if self._ready_marks[channel_id] == {"sent", "received"}:
                with self.store.transaction():
                    self._save(channel)

        self._spawn(watch())

    async def _on_reestablish(self, peer: Peer, message: ChannelReestablish) -> None:
        cid = message.channel_id
        channel = self.channels.get(cid)
        if channel is None or self._channel_peer.get(cid) is not peer:
            raise PeerProtocolError("channel_reestablish for an unknown channel", cid)
        if cid in self._reestablished:
            raise PeerProtocolError("a second channel_reestablish on one connection", cid)
        try:
            retransmit = channel.receive_reestablish(message)
        except DataLossError:
            # BOLT 2: we lost data: never broadcast our commitment; wait for the peer to close.
            self.channels.pop(cid, None)
            raise
        messages: list[WireMessage] = list(retransmit)
        # BOLT 2: if next_commitment_number is 1 in both channel_reestablish: retransmit channel_ready.
        if message.next_commitment_number == 1 and channel.log.ctn[Side.LOCAL] == 0 \
                and self._funding_depth_reached(channel) and "sent" in self._ready_marks.get(cid, set()):
            messages.append(channel.channel_ready())
        closing = self._closings.get(cid)
        if closing is not None and closing.shutdown_sent:
            # BOLT 2: a node that sent shutdown MUST retransmit it; the fee negotiation starts again.
            closing.negotiation = None
            messages.append(shutdown(channel, closing.local_script))
        self._reestablished.add(cid)
        await self._send(peer, messages)
        if self._ready_marks.get(cid) == {"sent", "received"}:
            self._ready.setdefault(cid, asyncio.Event()).set()
        elif "sent" not in self._ready_marks.get(cid, set()):
            self._watch_funding(cid, channel.config.funding_txid)
        await self._advance(channel, peer)

    # -- payments ----------------------------------------------------------------------------

    def create_invoice(self, amount_msat: int | None, description: str, expiry: int = 3600,
                       route_hints: Sequence[Sequence[RouteHintHop]] = (), preimage: bytes | None = None,
                       description_hash: bytes | None = None) -> Invoice:
        """An invoice we will settle at once; ``route_hints`` reach us over private channels.

        ``amount_msat`` None: the payer chooses (any amount settles it). ``description_hash``
        (32 bytes) replaces the description (BOLT 11 ``h``: for descriptions too long for a QR code).
        ``preimage``: the payment preimage to use (a fresh random one by default), for a caller
        that must know it in advance (a conformance test); 32 bytes.
        """
        if preimage is None:
            preimage = os.urandom(32)
        elif len(preimage) != 32:
            raise UsageError(f"preimage: must be 32 bytes, not {len(preimage)}")
        return self._new_invoice(sha256(preimage), preimage, amount_msat, description, expiry, route_hints,
                                 description_hash)

    def private_route_hints(self) -> list[list[RouteHintHop]]:
        """``route_hints`` for an invoice: our ready channels not announced, each with its peer's fees."""
        return self.gossip.route_hints()

    def create_amp_invoice(self, amount_msat: int, description: str, expiry: int = 3600,
                           route_hints: Sequence[Sequence[RouteHintHop]] = ()) -> Invoice:
        """An AMP invoice (feature 30, as LND): paid once by AMP shards, each with its own hash.

        Its payment_hash is a random placeholder nobody has a preimage for; the shards are
        matched to it by its payment_secret.
        """
        secret = os.urandom(32)
        invoice = build_invoice(network=self.network, amount_msat=amount_msat, description=description,
                                payment_hash=os.urandom(32), payment_secret=secret, timestamp=int(time.time()),
                                expiry=expiry, payee=None, route_hints=route_hints,
                                features=DEFAULT_INVOICE_FEATURES | {AMP_FEATURE_BITS[0]}).sign(self.privkey)
        record = InvoiceRecord(invoice.payment_hash, invoice.encode(), b"", secret, amount_msat,
                               expires_at=invoice.expires_at)
        with self.store.transaction():
            self.store.put_invoice(record)
        self.invoices.added(Receivable(invoice.payment_hash, secret, amount_msat, invoice.min_final_cltv_expiry,
                                       invoice.expires_at, None, amp=True))
        return invoice

    def _new_invoice(self, payment_hash: bytes, preimage: bytes, amount_msat: int | None, description: str,
                     expiry: int, route_hints: Sequence[Sequence[RouteHintHop]],
                     description_hash: bytes | None = None) -> Invoice:
        secret = os.urandom(32)
        invoice = build_invoice(network=self.network, amount_msat=amount_msat,
                                description=None if description_hash is not None else description,
                                description_hash=description_hash, payment_hash=payment_hash, payment_secret=secret, timestamp=int(time.time()),
                                expiry=expiry, payee=None, route_hints=route_hints).sign(self.privkey)
        record = InvoiceRecord(invoice.payment_hash, invoice.encode(), preimage, secret, amount_msat,
                               expires_at=invoice.expires_at)
        with self.store.transaction():
            self.store.put_invoice(record)
        self.invoices.added(Receivable(payment_hash, secret, amount_msat, invoice.min_final_cltv_expiry,
                                       invoice.expires_at, preimage or None, hold=not preimage))
        return invoice

    def _guard(self, payment_hash: bytes) -> None:
        """The double-pay guard: anyone on the first route could take a second payment to this hash."""
        previous = self.store.payment(payment_hash)
        if previous is not None and previous.status == "succeeded":
            raise PaymentError("this invoice is already paid")
        if (previous is not None and previous.status == "pending") or payment_hash in self._pending:
            raise PaymentError("this invoice is already being paid")

    async def pay(self, invoice: Invoice, timeout: float = 30, amount_msat: int | None = None,
                  limits: PayLimits = NO_LIMITS) -> bytes:
        """Pay an invoice over the network; returns the preimage (the proof of payment).

        An AMP invoice (feature 30) is paid with AMP shards and returns the set id instead:
        each shard has its own preimage, and no single one proves the whole payment.

        Routes over our channels, the graph we were given and the invoice's route hints;
        retries around what fails and splits the amount (MPP) when no single route carries
        it. Raises :class:`PaymentError` if the payment failed, or is still pending after
        ``timeout`` (it then stays pending in the store and ends settled or failed later).
        ``limits``: the fee budget, the first channel, the most parts (``payment_fees`` has the fee paid).
        """
        if invoice.payment_secret is None:
            raise PaymentError("the invoice has no payment secret")
        amount = invoice.amount_msat if invoice.amount_msat is not None else amount_msat
        if amount is None or amount <= 0:
            raise PaymentError("the invoice has no amount: give amount_msat")
        if invoice.amount_msat is not None and amount_msat not in (None, invoice.amount_msat):
            raise UsageError("amount_msat: the invoice names its own amount")
        if invoice.payee == self.node_id:
            raise PaymentError("the invoice is our own")
        if ROUTE_BLINDING_REQUIRED in invoice.features and not self.features.supports("option_route_blinding"):
            raise PaymentError("the invoice requires option_route_blinding (feature 24), which this node does not "
                               "support (its features setting leaves it out)")
        if AMP_FEATURE_BITS[0] in invoice.features:
            return await self.pay_amp(invoice.payee, amount, timeout=timeout, invoice=invoice)
        self._guard(invoice.payment_hash)
        with self.store.transaction():
            self.store.put_payment(PaymentRecord(invoice.payment_hash, amount, "pending", invoice.encode()))
        final = FinalPart(invoice.payment_secret, amount)
        hints = invoice.route_hints
        return await self._pay(invoice.payment_hash, invoice.payee, amount, timeout,
                               lambda part, total: _Shards(invoice.payment_hash, final, None),
                               invoice.min_final_cltv_expiry, hints, min(MAX_PARTS, limits.max_parts or MAX_PARTS),
                               limits=limits)

    async def keysend(self, node_id: bytes, amount_msat: int, timeout: float = 30) -> bytes:
        """A spontaneous payment: the preimage travels in the onion (record 5482373484)."""
        if amount_msat <= 0:
            raise UsageError("amount_msat: must be positive")
        preimage = os.urandom(32)
        payment_hash = sha256(preimage)
        with self.store.transaction():
            self.store.put_payment(PaymentRecord(payment_hash, amount_msat, "pending"))
        final = FinalPart(custom_records=((KEYSEND_RECORD_TYPE, preimage),))
        return await self._pay(payment_hash, node_id, amount_msat, timeout,
                               lambda part, total: _Shards(payment_hash, final, None), KEYSEND_MIN_FINAL_CLTV,
                               (), 1)

    async def pay_amp(self, node_id: bytes, amount_msat: int, parts: int = 2, timeout: float = 30,
                      invoice: Invoice | None = None) -> bytes:
        """An AMP payment in ``parts`` shards; returns its set id once the payee settled.

        Each shard carries an XOR share of a root secret (record 14); the payee can derive the
        preimages only once every share arrived. A failed shard's share goes into its retry.
        Spontaneous without ``invoice``; with an AMP invoice, the shards carry its payment
        secret, its final CLTV and its route hints, and the double-pay guard covers it.
        """
        if amount_msat <= 0 or not 1 <= parts <= MAX_PARTS:
            raise UsageError(f"amount_msat must be positive and parts between 1 and {MAX_PARTS}")
        amp = AmpPayment.new()
        secret = os.urandom(32)  # one payment_secret for the set (the payee groups parts by set id)
        payment_id, min_final = amp.set_id, KEYSEND_MIN_FINAL_CLTV
        hints: Sequence[Sequence[RouteHintHop]] = ()
        encoded = ""
        if invoice is not None:
            assert invoice.payment_secret is not None
            self._guard(invoice.payment_hash)
            secret, payment_id, min_final = invoice.payment_secret, invoice.payment_hash, invoice.min_final_cltv_expiry
            hints, encoded = invoice.route_hints, invoice.encode()
        shards = iter(amp.shards(parts))
        with self.store.transaction():
            self.store.put_payment(PaymentRecord(payment_id, amount_msat, "pending", encoded))
        await self._pay(payment_id, node_id, amount_msat, timeout,
                        lambda part, total: _Shards(None, FinalPart(secret, total), (amp, next(shards))),
                        min_final, hints, parts, exact_parts=True)
        return amp.set_id

    async def _pay(self, payment_id: bytes, target: bytes, amount_msat: int, timeout: float,
                   shards_for: Callable[[int, int], _Shards] | None, min_final_cltv: int,
                   hints: Sequence[Sequence[RouteHintHop]], max_parts: int, exact_parts: bool = False,
                   limits: PayLimits = NO_LIMITS,
                   runner: Callable[[list[int]], Awaitable[bytes]] | None = None) -> bytes:
        """Run the payment (a task that outlives ``timeout``), record its end, return the preimage.

        ``runner``: sends the parts instead of :meth:`_pay_parts` (blinded paths); it appends the
        fee of each part that settled to the list it is given.
        """
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[payment_id] = future
        fees: list[int] = []  # the fee of each part that settled

        async def run() -> None:
            try:
                if runner is not None:
                    preimage = await runner(fees)
                else:
                    assert shards_for is not None
                    preimage = await self._pay_parts(target, amount_msat, timeout, shards_for, min_final_cltv,
                                                     hints, max_parts, exact_parts, limits, fees)
                self.payment_fees[payment_id] = sum(fees)
            except StoreUnavailable as exc:  # the node stopped; the payment ends after the restart
                if not future.done():
                    future.set_exception(exc)
                return
            except PaymentError as exc:
                with self.store.transaction():
                    payment = self.store.payment(payment_id)
                    if payment is not None and payment.status == "pending":
                        self.store.put_payment(dataclasses.replace(payment, status="failed", reason=str(exc)))
                        self.events.put_nowait(PaymentFailed(payment_id, str(exc)))
                if not future.done():
                    future.set_exception(exc)
                return
            with self.store.transaction():
                payment = self.store.payment(payment_id)
                if payment is not None and payment.status != "succeeded":
                    self.store.put_payment(dataclasses.replace(payment, status="succeeded", preimage=preimage))
                    self.events.put_nowait(PaymentSent(payment_id, preimage, payment.amount_msat))
            if not future.done():
                future.set_result(preimage)

        self._spawn(run())
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout + 0.25)  # its own errors first
        except TimeoutError:
            # Nobody awaits the future now: its later failure is in the store and the events, so mark
            # it retrieved (else "Future exception was never retrieved" when it is collected).
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            raise PaymentError("the payment is still pending (it will end settled or failed)") from None
        finally:
            if self._pending.get(payment_id) is future and future.done():
                del self._pending[payment_id]
            elif self._pending.get(payment_id) is future:
                future.add_done_callback(lambda _: self._pending.pop(payment_id, None))

    def _can_send_msat(self) -> int:
        return sum(self._sendable_msat(c) for cid, c in self.channels.items() if self._usable(cid))

    def _reestablishing(self) -> bool:
        """Some ready channel is not usable now, but its peer is connected or being redialed."""
        for cid in self.channels:
            node_id = self._channel_node.get(cid, b"")
            peer = self._peers.get(node_id)
            coming = (peer is not None and not peer.session.closed) or node_id in self._dialers
            if (coming and cid not in self._closings and self._ready_marks.get(cid) == {"sent", "received"}
                    and not self._usable(cid)):
                return True
        return False

    def _graph_for(self, target: bytes, hints: Sequence[Sequence[RouteHintHop]],
                   outgoing_scid: int | None = None) -> ChannelGraph:
        own = []
        for cid, channel in self.channels.items():
            scid = self.short_channel_id(cid)
            if scid is not None and self._usable(cid) and outgoing_scid in (None, scid):
                own.append(LocalChannel(scid, self._channel_node[cid], self._sendable_msat(channel)))
        graph = routing_graph(self.graph, self.node_id, own)
        return graph.with_route_hints(hints, target) if hints else graph

    async def _wait_for_channels(self, target: bytes, deadline: float) -> None:
        """After a start or a reconnection: wait until a channel (the one to the payee if any) is usable."""
        direct = [cid for cid, node in self._channel_node.items() if node == target and cid in self.channels]
        if direct and all(c in self._closings for c in direct):  # BOLT 2: no update_add_htlc after shutdown
            raise PaymentError("the channel to the payee is closing")
        if not any(c not in self._closings for c in self.channels):
            raise PaymentError("no open channel to pay through")
        while time.monotonic() < deadline:
            if direct and any(self._usable(c) for c in direct):
                return
            if not direct and any(self._usable(c) for c in self.channels):
                return
            await asyncio.sleep(0.02)
        if direct:
            raise PaymentError("the channel to the payee is not ready (peer offline?)")

    async def _pay_parts(self, target: bytes, amount_msat: int, timeout: float,
                         shards_for: Callable[[int, int], _Shards], min_final_cltv: int,
                         hints: Sequence[Sequence[RouteHintHop]], max_parts: int, exact_parts: bool,
                         limits: PayLimits, fees: list[int]) -> bytes:
        deadline = time.monotonic() + timeout
        if target == self.node_id:
            raise PaymentError("paying ourselves")
        await self._wait_for_channels(target, deadline)
        # What every usable channel could add now, in total: more cannot leave us, whatever the split
        # (without this, parts that each fit one channel went out and the rest waited for the timeout).
        can_send = self._can_send_msat()
        grace = min(deadline, time.monotonic() + REESTABLISH_GRACE_S)
        while amount_msat > can_send and self._reestablishing() and time.monotonic() < grace:
            await asyncio.sleep(0.02)  # a channel coming back (reconnect, reestablish): a moment for it
            can_send = self._can_send_msat()
        if amount_msat > can_send:
            raise PaymentError(f"can send at most {can_send} msat")
        graph = self._graph_for(target, hints, limits.outgoing_scid)
        parts = max_parts if exact_parts else 1
        while True:  # MPP: the fewest parts for which every part finds a route now
            amounts = _split(amount_msat, parts)
            try:
                for amount in set(amounts):
                    find_route(graph, self.node_id, target, amount, score=self.scorer.view(time.monotonic()),
                               max_fee_msat=limits.part_fee_msat(amount, amount_msat))
                break
            except NoRouteError as exc:
                if exact_parts or parts * 2 > max_parts or amount_msat // (parts * 2) < 1:
                    raise PaymentError(str(exc)) from None
                parts *= 2
        runs = [self._pay_part(graph, target, amount, shards_for(i, amount_msat), min_final_cltv, deadline,
                               limits.part_fee_msat(amount, amount_msat), fees)
                for i, amount in enumerate(amounts)]
        results = await asyncio.gather(*runs, return_exceptions=True)
        for result in results:
            if isinstance(result, bytes):
                return result
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, PaymentError):
                raise result
        first = results[0]
        assert isinstance(first, PaymentError)
        raise first

    async def _pay_part(self, graph: ChannelGraph, target: bytes, amount_msat: int, shards: _Shards,
                        min_final_cltv: int, deadline: float, max_fee_msat: int | None = None,
                        fees: list[int] | None = None) -> bytes:
        """One part's retry loop: route, send, learn from the failure, until success or no route."""
        now = time.monotonic()
        attempts = PaymentAttempts(graph, self.scorer, self.node_id, target, amount_msat, now,
                                   timeout_s=max(deadline - now, 0.001), max_fee_msat=max_fee_msat)
        while True:
            action = attempts.next_action(time.monotonic())
            if isinstance(action, AttemptsFailed):
                raise PaymentError(action.reason)
            assert isinstance(action, SendAttempt), action  # one attempt at a time: never None here
            payment_hash, final = shards.next()
            outcome, secrets = await self._send_htlc(action.attempt.route, payment_hash, final, min_final_cltv,
                                                     deadline)
            if outcome.preimage is not None:
                attempts.attempt_succeeded(action.attempt.attempt_id, time.monotonic())
                if fees is not None:
                    fees.append(action.attempt.route.total_fee_msat)
                return outcome.preimage
            report, _ = decode_outcome(outcome, secrets)
            shards.failed()
            attempts.attempt_failed(action.attempt.attempt_id, report, time.monotonic())

    def blinded_payment_paths(self, amount_msat: int | None, description: str = "", expiry: int = 3600,
                              via: Sequence[Sequence[bytes]] | None = None, dummy_hops: int = 1,
                              preimage: bytes | None = None, max_paths: int = 3) -> BlindedInvoice:
        """A payment to us, payable only over the returned blinded paths (BOLT 4 route blinding).

        ``via``: node lists (introduction node first, ending at one of our peers); by default one
        path per peer we have a ready channel with. Each path gets ``dummy_hops`` dummy hops. The
        result's ``paths`` are (BlindedPath, BlindedPayInfo) pairs, as a BOLT 12 invoice carries them.
        """
        return self.blinded.payment_paths(amount_msat, description, expiry, via, dummy_hops, preimage, max_paths)

    async def pay_blinded(self, paths: Sequence[tuple[BlindedPath, BlindedPayInfo]], amount_msat: int,
                          payment_hash: bytes, timeout: float = 30, max_parts: int = MAX_PARTS,
                          invoice: str = "") -> bytes:
        """Pay over blinded paths; returns the preimage. Splits across paths (MPP) when one
        cannot carry the amount, and moves a failed part to another path. ``invoice`` (a BOLT 12
        ``lni1...``) is kept in the payment's record: with the preimage, the proof of payment."""
        if not self.features.supports("option_route_blinding"):
            raise PaymentError("paying to blinded paths needs option_route_blinding in our features")
        return await self.blinded.pay(paths, amount_msat, payment_hash, timeout, max_parts, invoice)

    async def send_to_route(self, route: Route, payment_hash: bytes, payment_secret: bytes | None,
                            total_msat: int | None = None, min_final_cltv: int = 18,
                            custom_records: tuple[tuple[int, bytes], ...] = ()) -> bytes:
        """One HTLC along ``route`` (no retry); the preimage, or :class:`RouteFailed` naming who failed and why."""
        total = route.hops[-1].amount_msat if total_msat is None else total_msat
        final = FinalPart(payment_secret, total if payment_secret is not None else None, custom_records)
        outcome, secrets = await self._send_htlc(route, payment_hash, final, min_final_cltv)
        if outcome.preimage is not None:
            return outcome.preimage
        report, failure = decode_outcome(outcome, secrets)
        raise RouteFailed(report, failure)

    async def _next_revocation(self, timeout: float) -> bool:
        """Wait for the next revoke_and_ack on any channel (it may free HTLC slots); False on timeout."""
        if timeout <= 0:
            return False
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._revoked_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False

    async def _send_htlc(self, route: Route, payment_hash: bytes, final: FinalPart, min_final_cltv: int,
                         deadline: float | None = None) -> tuple[HtlcOutcome, tuple[bytes, ...]]:
        """Offer the first HTLC of ``route`` and wait until it is fulfilled or gone (see :meth:`_offer_htlc`)."""
        first = route.hops[0]
        height = self.chain.tip()[0]
        built = onion_for_route(route, payment_hash, height + min_final_cltv + FINAL_CLTV_MARGIN, final,
                                os.urandom(32))
        return await self._offer_htlc(first.short_channel_id, first.pubkey, first.amount_msat, payment_hash,
                                      built.first_cltv_expiry, built.onion, built.shared_secrets, deadline)

    async def _offer_htlc(self, scid: int, peer_id: bytes, amount_msat: int, payment_hash: bytes, cltv_expiry: int,
                          onion: bytes, shared_secrets: tuple[bytes, ...],
                          deadline: float | None = None) -> tuple[HtlcOutcome, tuple[bytes, ...]]:
        """Add our HTLC on channel ``scid`` (to ``peer_id``), commit, send, wait until fulfilled or gone;
        until ``deadline`` for a slot other payments' HTLCs hold on the channel."""
        cid = self._by_scid.get(scid)
        if cid is None or not self._usable(cid) or self._channel_node.get(cid) != peer_id:
            return HtlcOutcome(), ()
        channel = self.channels[cid]
        while True:
            try:
                add = channel.add_htlc(amount_msat, payment_hash, cltv_expiry, onion)
                break
            except UsageError:
                # Other payments' HTLCs on this channel hold the slots or the balance it lacks: they
                # settle soon, so wait for one rather than fail a payment that fits the channel (seen
                # with 25 payments in flight over a channel taking 30 HTLCs, removed ones not yet
                # revoked). Never for this payment's own parts: the payee holds those until all arrive.
                others = [h for h in self._in_flight.get(cid, {}).values() if h != payment_hash]
                if (deadline is None or not others or not self._usable(cid)
                        or not await self._next_revocation(deadline - time.monotonic())):
                    return HtlcOutcome(), shared_secrets
        key = (cid, add.id)
        waiter: asyncio.Future[HtlcOutcome] = asyncio.get_running_loop().create_future()
        self._waiters[key] = waiter
        self._in_flight.setdefault(cid, {})[add.id] = payment_hash
        with self.store.transaction():
            payment = self.store.payment(payment_hash)
            if payment is not None and payment.status == "pending":  # the HTLC to resolve after a restart
                self.store.put_payment(dataclasses.replace(payment, channel_id=cid, htlc_id=add.id))
                self.store.put_payment_part(payment_hash, cid, add.id)  # one of maybe several (MPP)
            self._dirty.setdefault(cid, []).append(add)
            batches = self._step_batches()
        await self._send_all(batches)
        return await waiter, shared_secrets

    def payment_status(self, payment_hash: bytes) -> PaymentRecord | None:
        return self.store.payment(payment_hash)

    async def _on_channel_message(self, peer: Peer, message: WireMessage) -> None:
        channel_id = getattr(message, "channel_id", None)
        channel = self.channels.get(channel_id) if isinstance(channel_id, bytes) else None
        if channel is None or self._channel_peer.get(channel.config.channel_id) is not peer:
            raise PeerProtocolError(f"{message.NAME} for an unknown channel")
        cid = channel.config.channel_id
        if cid not in self._reestablished:
            raise PeerProtocolError(f"{message.NAME} before channel_reestablish", cid)
        replies, fulfilled = channel.receive(message)
        received: list[NodeEvent] = []
        with self.store.transaction():  # one commit for the whole step, then its messages
            if isinstance(message, UpdateAddHtlc):
                path_key = message.tlvs.get("blinded_path", {}).get("path_key")  # BOLT 2: inside a blinded path
                self.store.put_onion(cid, message.id, pack_onion(message.onion_routing_packet, path_key))
            elif isinstance(message, UpdateFailHtlc):
                self._failures[(cid, message.id)] = HtlcOutcome(reason=message.reason)
            elif isinstance(message, UpdateFailMalformedHtlc):
                self._failures[(cid, message.id)] = HtlcOutcome(malformed_code=message.failure_code,
                                                                sha256_of_onion=message.sha256_of_onion)
            for done in fulfilled:
                self._succeed(cid, done.htlc, done.preimage)
            mine = self._dirty.setdefault(cid, [])
            if isinstance(message, (CommitmentSigned, RevokeAndAck)):
                self._process_incoming(channel, received)
            elif not mine and cid in self._dirty:
                del self._dirty[cid]  # nothing of ours to add: only save, do not sign yet
                self._save(channel)
            self._resolve_payments(channel)
            batches = self._step_batches()
        await self._send_all([(peer, list(replies)), *batches])
        if isinstance(message, RevokeAndAck) and self._revoked_waiters:
            waiters, self._revoked_waiters = self._revoked_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        for event in received:
            await self.events.put(event)

    async def _advance(self, channel: Channel, peer: Peer) -> None:
        """After a reestablish: apply what was decided meanwhile, settle and sign; one commit."""
        received: list[NodeEvent] = []
        with self.store.transaction():
            self._dirty.setdefault(channel.config.channel_id, [])
            self._process_incoming(channel, received)
            self._resolve_payments(channel)
            batches = self._step_batches()
        await self._send_all(batches)
        for event in received:
            await self.events.put(event)

    async def _run_step(self, decide: Callable[[list[NodeEvent]], None]) -> None:
        """A step started by us (a timer, the application): decide, commit, then send."""
        received: list[NodeEvent] = []
        with self.store.transaction():
            decide(received)
            batches = self._step_batches()
        await self._send_all(batches)
        for event in received:
            await self.events.put(event)

    # -- incoming HTLCs: forward, receive, or refuse ---------------------------------------------

    @staticmethod
    def _locked_incoming(channel: Channel) -> list[LoggedHtlc]:
        """HTLCs the peer offered that are irrevocably committed (BOLT 2: only then act on them)."""
        log = channel.log
        local = set(log.commitment(Side.LOCAL, log.revoked[Side.LOCAL] + 1).htlcs)
        remote = set(log.commitment(Side.REMOTE, log.revoked[Side.REMOTE] + 1).htlcs)
        return sorted((h for h in local & remote if h.offerer is Side.REMOTE), key=lambda h: h.htlc_id)

    def _process_incoming(self, channel: Channel, received: list[NodeEvent]) -> None:
        """Decide each newly locked-in incoming HTLC; apply decisions recorded earlier (in a transaction)."""
        cid = channel.config.channel_id
        live = {h.htlc_id for h in self._unresolved_htlcs(channel) if h.offerer is Side.REMOTE}
        for key in [k for k in self._incoming if k[0] == cid and k[1] not in live]:
            record = self._incoming.pop(key)  # gone from every commitment: forget it
            self.blinded.forget(key)
            self.store.delete_incoming_htlc(*key)
            self.store.delete_onion(*key)
            if record.out_channel_id is not None and record.out_htlc_id is not None:
                self._by_out.pop((record.out_channel_id, record.out_htlc_id), None)
        for key in [k for k in self._handled if k[0] == cid and k[1] not in live]:
            self._handled.discard(key)
            self._part_secrets.pop(key, None)
            self.store.delete_onion(*key)
        if cid not in self._reestablished:
            return
        removing = {h.htlc_id for h, _ in channel.log.settled() if h.offerer is Side.REMOTE}
        height = self.chain.tip()[0]
        for htlc in self._locked_incoming(channel):
            key = (cid, htlc.htlc_id)
            if htlc.htlc_id in removing:
                continue
            decided = self._incoming.get(key)
            if decided is not None:
                self._apply_record(decided)
                continue
            if key in self._handled:
                continue
            self._decide_incoming(channel, htlc, height, received)

    def _decide_incoming(self, channel: Channel, htlc: LoggedHtlc, height: int, received: list[NodeEvent]) -> None:
        cid = channel.config.channel_id
        key = (cid, htlc.htlc_id)
        onion = self.store.onion(cid, htlc.htlc_id)
        if onion is None:  # never stored (cannot happen after an add): nothing to decrypt a failure with
            self._record(IncomingHtlcRecord(cid, htlc.htlc_id, htlc.payment_hash, b"",
                                            failure=create_failure_packet(bytes(32), FailureMessage(
                                                FailureCode.TEMPORARY_NODE_FAILURE).to_bytes())))
            return
        onion, path_key = unpack_onion(onion)
        read = read_onion(onion, self.privkey, htlc.payment_hash, path_key, htlc.amount_msat, htlc.cltv_expiry,
                          self.node_id)
        if isinstance(read, (BlindedFailure, BlindedForward, BlindedFinal)):
            self.blinded.decide(channel, htlc, read, height, received)
        elif isinstance(read, Malformed):
            self._handled.add(key)
            self._dirty.setdefault(cid, []).append(
                channel.fail_malformed_htlc(htlc.htlc_id, read.sha256_of_onion, read.code))
        elif isinstance(read, Refuse):
            self._record(IncomingHtlcRecord(cid, htlc.htlc_id, htlc.payment_hash, read.shared_secret,
                                            failure=read.reason()))
        elif isinstance(read, Forward):
            self._forward(channel, htlc, read, height)
        else:
            assert isinstance(read, Final)
            self._handled.add(key)
            self._part_secrets[key] = read.shared_secret
            part = IncomingPart(cid, htlc.htlc_id, htlc.amount_msat, htlc.cltv_expiry, htlc.payment_hash,
                                read.payload)
            amp = any(t == AMP_RECORD_TYPE for t, _ in read.payload.custom_records)
            self.invoices.load_for(htlc.payment_hash, read.payload.payment_secret, amp)
            self._apply_decisions(self.receiver.receive(part, height, time.time()), received)

    def _apply_decisions(self, decisions: list[Decision], received: list[NodeEvent]) -> None:
        """The receiver's answers: record each fulfil or fail (then applied), report the events."""
        for decision in decisions:
            if isinstance(decision, Settle):
                part = decision.part
                secret = self._part_secrets.get((part.channel_id, part.htlc_id), b"")
                self._record(IncomingHtlcRecord(part.channel_id, part.htlc_id, part.payment_hash, secret,
                                                preimage=decision.preimage))
            elif isinstance(decision, Fail):
                part = decision.part
                secret = self._part_secrets.get((part.channel_id, part.htlc_id), bytes(32))
                blinded = self.blinded.failure_record((part.channel_id, part.htlc_id), part.payment_hash,
                                                      decision.failure) if part.blinded else None
                self._record(IncomingHtlcRecord(part.channel_id, part.htlc_id, part.payment_hash, secret,
                                                failure=blinded or create_failure_packet(
                                                    secret, decision.failure.to_bytes())))
            elif isinstance(decision, Received):
                self._mark_invoice_paid(decision)
                received.append(PaymentReceived(decision.key, decision.amount_msat))
            elif isinstance(decision, Held):
                received.append(HtlcHeld(decision.payment_hash, decision.amount_msat))

    def _mark_invoice_paid(self, done: Received) -> None:
        if done.kind == "amp" and done.invoice_hash is not None:  # an AMP invoice paid by this set
            amp_record = self.store.invoice(done.invoice_hash)
            if amp_record is not None and amp_record.status != "paid":
                self.store.put_invoice(dataclasses.replace(amp_record, status="paid", received_msat=done.amount_msat))
                self.settled_invoices.add(done.invoice_hash)
        record = self.store.invoice(done.key)
        if done.kind == "invoice" and record is not None and record.status != "paid":
            preimage = record.preimage
            claim = next((r for r in self._incoming.values() if r.payment_hash == done.key and r.preimage), None)
            if claim is not None and claim.preimage is not None:
                preimage = claim.preimage  # a hold invoice learns its preimage now
            self.store.put_invoice(InvoiceRecord(record.payment_hash, record.invoice, preimage,
                                                 record.payment_secret, record.amount_msat, "paid",
                                                 done.amount_msat, claim.channel_id if claim else None,
                                                 claim.htlc_id if claim else None))
        self.settled_invoices.add(done.key)

    def _record(self, record: IncomingHtlcRecord) -> None:
        """Commit a decision about an incoming HTLC, then apply it if its channel can take updates now."""
        key = (record.channel_id, record.htlc_id)
        self._incoming[key] = record
        self.store.put_incoming_htlc(record)
        if record.out_channel_id is not None and record.out_htlc_id is not None:
            self._by_out[(record.out_channel_id, record.out_htlc_id)] = key
        self._apply_record(record)

    def _apply_record(self, record: IncomingHtlcRecord) -> None:
        """Fulfil or fail the incoming HTLC as recorded (a no-op while it waits or is being removed)."""
        channel = self.channels.get(record.channel_id)
        if channel is None or record.channel_id not in self._reestablished:
            return  # applied after the reestablish
        message: WireMessage
        try:
            malformed = parse_malformed(record.failure) if record.failure is not None else None
            if record.preimage is not None:
                message = channel.fulfill_htlc(record.htlc_id, record.preimage)
            elif malformed is not None:  # inside a blinded path (node.blinded)
                message = channel.fail_malformed_htlc(record.htlc_id, malformed[1], malformed[0])
            elif record.failure is not None:
                message = channel.fail_htlc(record.htlc_id, record.failure)
            else:
                return
        except UsageError:  # already being removed, or not yet committed: a later step applies it
            return
        self._dirty.setdefault(record.channel_id, []).append(message)

    # -- forwarding ------------------------------------------------------------------------------

    def short_channel_id(self, channel_id: bytes) -> int | None:
        """BOLT 7 short channel id of a channel whose funding transaction is mined (else None)."""
        scid = self._scid.get(channel_id)
        if scid is None:
            channel = self.channels.get(channel_id)
            position = None if channel is None else self.chain.tx_position(channel.config.funding_txid)
            if channel is None or position is None:
                return None
            scid = short_channel_id(position[0], position[1], channel.config.funding_output_index)
            self._scid[channel_id], self._by_scid[scid] = scid, channel_id
        return scid

    def _sendable_msat(self, channel: Channel) -> int:
        """Exactly the largest HTLC ``add_htlc`` accepts now (BOLT 2 limits, reserve, fees: channel/limits.py)."""
        return channel.sendable_msat()

    def _usable(self, channel_id: bytes) -> bool:
        """Ready, reestablished with a connected peer, not closing: new HTLCs may go out on it."""
        peer = self._channel_peer.get(channel_id)
        return (self.channel_is_ready(channel_id) and channel_id in self._reestablished and peer is not None
                and not peer.session.closed and channel_id not in self._closings)

    def _outgoing_channels(self) -> dict[int, OutgoingChannel]:
        out: dict[int, OutgoingChannel] = {}
        for cid, channel in self.channels.items():
            scid = self.short_channel_id(cid)
            if scid is None:
                continue
            usable = self._usable(cid)
            log = channel.log
            offered = sum(1 for h in log.commitment(Side.REMOTE, pending=True).htlcs if h.offerer is Side.LOCAL)
            slots = channel.config.remote_max_accepted_htlcs - offered if usable else 0
            out[scid] = OutgoingChannel(scid, self._channel_policy(channel),
                                        self._sendable_msat(channel) if usable else 0, slots,
                                        self._channel_update(cid, scid, usable))
        return out

    def _channel_policy(self, channel: Channel) -> ForwardingPolicy:
        """Our forwarding policy narrowed to the HTLC amounts this channel's peer agreed to take."""
        p = self.forwarding_policy
        low, high = advertised_htlc_range(channel.config, p.htlc_minimum_msat, p.htlc_maximum_msat)
        return dataclasses.replace(p, htlc_minimum_msat=low, htlc_maximum_msat=high)

    def _channel_update(self, channel_id: bytes, scid: int, enabled: bool) -> bytes:
        """Our signed channel_update for the direction leaving us (type included), for failures.

        Cached per channel and state: signing one for every forward would cost a signature each.
        """
        key = (scid, enabled, self.forwarding_policy)
        cached = self._updates.get(channel_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        p = self._channel_policy(self.channels[channel_id])
        update = create_channel_update(
            self.privkey, chain_hash=self.network.chain_hash, short_channel_id=scid, timestamp=int(time.time()),
            direction=direction_of(self.node_id, self._channel_node[channel_id]),
            cltv_expiry_delta=p.cltv_expiry_delta, htlc_minimum_msat=p.htlc_minimum_msat,
            htlc_maximum_msat=p.htlc_maximum_msat,
            fee_base_msat=p.fee_base_msat, fee_proportional_millionths=p.fee_proportional_millionths,
            disabled=not enabled)
        encoded = encode_message(update)
        self._updates[channel_id] = (key, encoded)
        return encoded

    def _forward(self, channel: Channel, htlc: LoggedHtlc, read: Forward, height: int) -> None:
        cid = channel.config.channel_id
        decision = decide_forward(htlc.amount_msat, htlc.cltv_expiry, read.payload, self._outgoing_channels(), height)
        if isinstance(decision, ForwardTo):
            out_cid = self._by_scid[decision.short_channel_id]
            out = self.channels[out_cid]
            try:
                add = out.add_htlc(decision.amount_msat, htlc.payment_hash, decision.cltv_expiry, read.next_onion)
            except UsageError:
                update = self._channel_update(out_cid, decision.short_channel_id, True)
                decision = FailureMessage(FailureCode.TEMPORARY_CHANNEL_FAILURE, channel_update=update)
            else:
                self._dirty.setdefault(out_cid, []).append(add)
                self._record(IncomingHtlcRecord(cid, htlc.htlc_id, htlc.payment_hash, read.shared_secret,
                                                out_channel_id=out_cid, out_htlc_id=add.id))
                return
        reason = create_failure_packet(read.shared_secret, decision.to_bytes())
        self._record(IncomingHtlcRecord(cid, htlc.htlc_id, htlc.payment_hash, read.shared_secret, failure=reason))

    def _forward_settled(self, out: HtlcKey, preimage: bytes, out_msat: int) -> bool:
        """An HTLC we forwarded was fulfilled: fulfil the incoming one at once (True if it was ours)."""
        incoming = self._by_out.get(out)
        record = self._incoming.get(incoming) if incoming is not None else None
        if record is None or incoming is None:
            return False
        if record.preimage is None:
            self._record(dataclasses.replace(record, preimage=preimage, failure=None))
            channel = self.channels.get(incoming[0])
            in_msat = None if channel is None else next(
                (h.amount_msat for h in channel.log.commitment(Side.LOCAL, pending=True).htlcs
                 if h.offerer is Side.REMOTE and h.htlc_id == incoming[1]), None)
            if in_msat is not None:
                self.events.put_nowait(ForwardSettled(incoming[0], out[0], in_msat, out_msat, record.payment_hash))
        return True

    def _forward_failed(self, out: HtlcKey, payment_hash: bytes) -> bool:
        """An HTLC we forwarded is gone without a preimage: fail the incoming one with its reason."""
        incoming = self._by_out.get(out)
        record = self._incoming.get(incoming) if incoming is not None else None
        if record is None or record.payment_hash != payment_hash:
            return False
        del self._by_out[out]
        if record.preimage is not None or record.failure is not None:
            return True
        outcome = self._failures.pop(out, HtlcOutcome())
        blinded = self.blinded.failure_record(incoming, record.payment_hash, None) if incoming is not None else None
        if blinded is not None:  # BOLT 2: inside a blinded path every downstream error is invalid_onion_blinding
            reason = blinded
        elif outcome.reason is not None:
            reason = wrap_failure_packet(record.shared_secret, outcome.reason)
        else:
            # BOLT 4: a malformed answer from the next node becomes our failure with its code;
            # an HTLC that never left us (dropped on a disconnection) a temporary channel failure.
            scid = self.short_channel_id(out[0])
            update = b"" if scid is None or out[0] not in self.channels else self._channel_update(
                out[0], scid, self._usable(out[0]))
            failure = (FailureMessage(outcome.malformed_code, sha256_of_onion=outcome.sha256_of_onion)
                       if outcome.malformed_code is not None
                       else FailureMessage(FailureCode.TEMPORARY_CHANNEL_FAILURE, channel_update=update))
            reason = create_failure_packet(record.shared_secret, failure.to_bytes())
        self._record(dataclasses.replace(record, out_channel_id=None, out_htlc_id=None, failure=reason))
        return True

    # -- our own HTLCs: fulfilled or gone --------------------------------------------------------

    def _succeed(self, channel_id: bytes, htlc: LoggedHtlc, preimage: bytes) -> None:
        """The peer fulfilled our HTLC (inside the step's transaction): a forward or a payment."""
        key = (channel_id, htlc.htlc_id)
        if self._forward_settled(key, preimage, htlc.amount_msat):
            return
        self._in_flight.get(channel_id, {}).pop(htlc.htlc_id, None)
        self.store.delete_payment_part(channel_id, htlc.htlc_id)
        payment = self.store.payment(htlc.payment_hash)
        if payment is not None and payment.status != "succeeded":
            self.store.put_payment(PaymentRecord(payment.payment_hash, payment.amount_msat, "succeeded",
                                                 payment.invoice, preimage, channel_id, htlc.htlc_id))
            self.events.put_nowait(PaymentSent(payment.payment_hash, preimage, payment.amount_msat))
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(HtlcOutcome(preimage=preimage))

    def _resolve_payments(self, channel: Channel) -> None:
        """Our HTLCs that left both commitments without a preimage (inside a transaction).

        A forwarded one fails its incoming HTLC; one a sender awaits is reported to it (it
        decides whether to retry); any other (after a restart) fails its payment.
        """
        cid = channel.config.channel_id
        live = {(h.htlc_id, h.payment_hash) for h in self._unresolved_htlcs(channel) if h.offerer is Side.LOCAL}
        for out, incoming in list(self._by_out.items()):
            if out[0] != cid:
                continue
            record = self._incoming.get(incoming)
            if record is not None and (out[1], record.payment_hash) not in live:
                self._forward_failed(out, record.payment_hash)
        flying = self._in_flight.get(cid)
        if not flying:
            return
        for htlc_id, payment_hash in list(flying.items()):
            if (htlc_id, payment_hash) in live:
                continue
            del flying[htlc_id]
            self.store.delete_payment_part(cid, htlc_id)
            outcome = self._failures.pop((cid, htlc_id), HtlcOutcome())
            waiter = self._waiters.pop((cid, htlc_id), None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(outcome)
                continue
            payment = self.store.payment(payment_hash)
            if payment is None or payment.status != "pending" or self.store.payment_parts(payment_hash):
                continue  # settled already, or other parts still in flight: the last one decides
            reason = "the payee refused the payment"
            self.store.put_payment(PaymentRecord(payment_hash, payment.amount_msat, "failed", payment.invoice,
                                                 None, cid, htlc_id, reason))
            self.events.put_nowait(PaymentFailed(payment_hash, reason))
            future = self._pending.pop(payment_hash, None)
            if future is not None and not future.done():
                future.set_exception(PaymentError(reason))

    @staticmethod
    def _unresolved_htlcs(channel: Channel) -> set[LoggedHtlc]:
        """HTLCs still in some commitment not yet revoked, or added and not yet signed.

        A failed HTLC is gone for good only once no unrevoked commitment holds it: until the
        peer revokes its last commitment with the HTLC, it could still claim it on chain.
        """
        log = channel.log
        found = set(log.commitment(Side.REMOTE, pending=True).htlcs) | set(log.commitment(Side.LOCAL, pending=True).htlcs)
        for owner in Side:
            for ctn in range(max(log.revoked[owner] + 1, log.oldest_view[owner]), log.ctn[owner]):
                found.update(log.commitment(owner, ctn).htlcs)
        return found

    # -- the receiver's timer and the application's decisions on hold invoices ------------------

    async def _receiver_timer(self, interval: float) -> None:
        while not self._stopping:
            await asyncio.sleep(interval)
            height = self.chain.tip()[0]
            self.invoices.maybe_prune(time.time(), self._invoice_hashes_in_channels)
            decisions = self.receiver.tick(time.time(), height)
            if decisions:
                await self._run_step(lambda received, d=decisions: self._apply_decisions(d, received))  # type: ignore[misc]

    def create_hold_invoice(self, payment_hash: bytes, amount_msat: int, description: str = "",
                            expiry: int = 3600) -> Invoice:
        """An invoice for a hash whose preimage we do not know yet: a payment is held (``HtlcHeld``)
        until :meth:`settle_hold` gives the preimage or :meth:`cancel_hold` refuses it."""
        if len(payment_hash) != 32:
            raise UsageError("payment_hash: must be 32 bytes")
        if self.store.invoice(payment_hash) is not None:
            raise UsageError("payment_hash: an invoice for it exists already")
        return self._new_invoice(payment_hash, b"", amount_msat, description, expiry, ())

    async def settle_hold(self, preimage: bytes) -> None:
        """Release a held payment: every part is fulfilled with ``preimage``."""
        payment_hash = sha256(preimage)
        try:
            decisions = self.receiver.settle_held(payment_hash, preimage)
        except KeyError:
            raise UsageError(f"payment_hash: no held payment for {payment_hash.hex()}") from None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        await self._run_step(lambda received: self._apply_decisions(decisions, received))

    async def cancel_hold(self, payment_hash: bytes) -> None:
        """Refuse a held payment: every part fails (incorrect_or_unknown_payment_details)."""
        try:
            decisions = self.receiver.cancel_held(payment_hash, self.chain.tip()[0])
        except KeyError:
            raise UsageError(f"payment_hash: no held payment for {payment_hash.hex()}") from None
        await self._run_step(lambda received: self._apply_decisions(decisions, received))

    async def update_fee(self, channel_id: bytes, feerate_per_kw: int) -> None:
        """As the funder, move the channel's commitments to a new feerate (update_fee, then signed)."""
        channel = self.channels.get(channel_id)
        if channel is None or channel_id in self.closed_channels:
            raise UsageError(f"channel_id: no open channel {channel_id.hex()}")
        if not self._usable(channel_id):
            raise UsageError("channel_id: the channel is not ready or its peer is not connected")
        message = channel.update_fee(feerate_per_kw)  # raises UsageError: not the funder, unaffordable

        def decide(received: list[NodeEvent]) -> None:
            self._dirty.setdefault(channel_id, []).append(message)

        await self._run_step(decide)

    # -- queries and commands for the REST API ---------------------------------------------------

    closed_channels: dict[bytes, Transaction] = field(default_factory=dict, init=False, repr=False)
    _closings: dict[bytes, _Closing] = field(default_factory=dict, init=False, repr=False)

    def peer(self, node_id: bytes) -> Peer | None:
        """The live connection to ``node_id``, if any (operator queries: node.queries)."""
        peer = self._peers.get(node_id)
        return None if peer is None or peer.session.closed else peer

    def peer_ids(self) -> list[bytes]:
        """Node ids of the peers we are connected to now."""
        return [node_id for node_id, peer in self._peers.items() if not peer.session.closed]

    def channel_peer_id(self, channel_id: bytes) -> bytes | None:
        """The node id of the channel's peer, connected or not (None for an unknown channel)."""
        return self._channel_node.get(channel_id)

    def channel_is_ready(self, channel_id: bytes) -> bool:
        """True once channel_ready went both ways (payments may flow)."""
        ready = self._ready.get(channel_id)
        return ready is not None and ready.is_set()

    def channel_is_closing(self, channel_id: bytes) -> bool:
        return channel_id in self._closings

    def closed_channel_records(self) -> list[ClosedChannel]:
        """Closed channels as the store keeps them (they outlive restarts), oldest first."""
        return self.store.closed_channels()

    def pending_sweeps(self) -> list[PendingSweep]:
        """Funds of closed channels not yet swept to the wallet (force closes), with their maturity."""
        return self._onchain.pending_sweeps()

    def _closing_fees(self) -> tuple[int, int]:
        """Our acceptable closing fee range: the chain's feerate for the closing weight, up to 4x."""
        low = CLOSING_WEIGHT * self.chain.estimate_feerate_per_kw() // 1000 + 1
        return low, 4 * low

    async def close_channel(self, channel_id: bytes, timeout: float = 30, script_pubkey: bytes | None = None,
                            feerate_per_kw: int | None = None) -> Transaction:
        """Mutual close (BOLT 2 shutdown, closing_signed): returns the agreed closing transaction.

        It is committed, then broadcast through :class:`Broadcaster` (retried while the chain is
        busy, rebroadcast after a restart): it may still be on its way to the chain.

        The closing output pays a fresh wallet key, so the balance returns to the on-chain wallet,
        or ``script_pubkey`` (close --address). ``feerate_per_kw``: the closing fee we offer and
        accept (else the chain's estimate, up to 4x).
        """
        channel = self.channels.get(channel_id)
        if channel is None:
            raise UsageError(f"no open channel {channel_id.hex()}")
        log = channel.log
        if log.commitment(Side.LOCAL).htlcs or log.commitment(Side.REMOTE).htlcs or log.has_changes_to_sign():
            raise UsageError("HTLCs or updates are still pending on this channel; close once they settle")
        closing = self._closings.get(channel_id)
        if closing is None:
            done: asyncio.Future[Transaction] = asyncio.get_running_loop().create_future()
            fee_range = None
            if feerate_per_kw is not None:
                fee = CLOSING_WEIGHT * feerate_per_kw // 1000 + 1
                fee_range = (fee, fee)
            closing = self._closings[channel_id] = _Closing(script_pubkey or self.wallet.new_key().script_pubkey,
                                                            done, fee_range=fee_range)
        if not closing.shutdown_sent:
            closing.shutdown_sent = True
            self._save_shutdown(channel_id, closing.local_script)
            await self._channel_peer[channel_id].send(shutdown(channel, closing.local_script))
        return await asyncio.wait_for(asyncio.shield(closing.done), timeout)

    def _save_shutdown(self, channel_id: bytes, script_pubkey: bytes) -> None:
        """Committed before our shutdown goes out: after a restart it is resent, no HTLC added."""
        with self.store.transaction():
            self.store.put_shutdown(channel_id, script_pubkey)

    async def _on_closing_message(self, peer: Peer, message: Shutdown | ClosingSigned) -> None:
        channel = self.channels.get(message.channel_id)
        if channel is None or self._channel_peer.get(message.channel_id) is not peer:
            raise PeerProtocolError(f"{message.NAME} for an unknown channel")
        closing = self._closings.get(message.channel_id)
        if isinstance(message, Shutdown):
            if closing is None:
                done: asyncio.Future[Transaction] = asyncio.get_running_loop().create_future()
                closing = _Closing(self.wallet.new_key().script_pubkey, done)
                self._closings[message.channel_id] = closing
            if not closing.shutdown_sent:  # BOLT 2: answer a shutdown with our own
                closing.shutdown_sent = True
                self._save_shutdown(message.channel_id, closing.local_script)
                await peer.send(shutdown(channel, closing.local_script))
            low, high = closing.fee_range or self._closing_fees()
            closing.negotiation = ClosingNegotiation.start(channel, closing.local_script, message.scriptpubkey,
                                                           low, high)
            if channel.config.local_is_funder:  # BOLT 2: the funder sends the first closing_signed
                await peer.send(closing.negotiation.propose((low + high) // 2))
            return
        if closing is None or closing.negotiation is None:
            raise PeerProtocolError("closing_signed before shutdown", message.channel_id)
        reply = closing.negotiation.receive(message)
        if reply is not None:
            await peer.send(reply)
        agreed = closing.negotiation.agreed
        if agreed is not None and not closing.done.done():
            what = f"mutual close of channel {message.channel_id.hex()}"
            with self.store.transaction():  # the close and its transaction, committed before the broadcast
                self.store.close_channel(message.channel_id, agreed.txid, close_summary(channel, "mutual"))
                self.broadcaster.keep(agreed, what)
            # Retried while the chain is busy, rebroadcast after a restart; a refusal is a
            # BroadcastRejected event (the peer's broadcast of the same transaction is no refusal).
            self.broadcaster.submit(agreed, what)
            self.channels.pop(message.channel_id, None)
            self._channel_peer.pop(message.channel_id, None)
            self.closed_channels[message.channel_id] = agreed
            closing.done.set_result(agreed)

    # -- force close and on-chain resolution (lightspeed.node.onchain) --------------------------

    def _new_onchain_watcher(self) -> OnchainWatcher:
        """The chain watcher; channels it is resolving are not open channels any more."""
        def load(stored: StoredChannel) -> Channel:
            return channel_from_record(stored.state, stored.remote_commitments, self._derive_secrets)

        watcher = OnchainWatcher(self.chain, self.store, lambda: self.wallet.new_key().script_pubkey,
                                 self._known_preimage, load)
        backfill_close_summaries(self.store, load)  # closed under an older version: listed like the others
        for cid in watcher.active():
            self.channels.pop(cid, None)
        return watcher

    def _known_preimage(self, payment_hash: bytes) -> bytes | None:
        """The preimage of an HTLC paid to us that we would fulfil: our invoice's, or a forward's."""
        invoice = self.store.invoice(payment_hash)
        if invoice is not None and invoice.preimage:
            return invoice.preimage
        return next((r.preimage for r in self.store.incoming_htlcs()
                     if r.payment_hash == payment_hash and r.preimage), None)

    async def force_close_channel(self, channel_id: bytes, reason: str = "channel force closed") -> Transaction:
        """Fail the channel (BOLT 2): broadcast our latest commitment; returns what spent the funding.

        If the funding output is already spent (the peer closed first), that spend is resolved
        instead. The watcher then sweeps our outputs as their delays expire.
        """
        self._require_store()
        channel = self.channels.get(channel_id)
        if channel is None:
            raise UsageError(f"no open channel {channel_id.hex()}")
        funding = OutPoint(channel.config.funding_txid, channel.config.funding_output_index)
        spend = self.chain.spending_tx(funding)
        if spend is None:
            commitment = channel.signed_local_commitment()
            try:  # with a CPFP child through our anchor if the commitment pays less than the chain asks
                broadcast_commitment(self.chain, self.wallet, channel, commitment,
                                     self.chain.estimate_feerate_per_kw())
                spend = commitment
            except RejectedTransaction:
                spend = self.chain.spending_tx(funding)
                if spend is None:
                    raise
        await self._on_onchain_events([self._onchain.start(channel, spend)])
        peer = self._peers.get(self._channel_node.get(channel_id, b""))
        if peer is not None:  # BOLT 1: the error tells the peer the channel failed
            with contextlib.suppress(UsageError, ConnectionError, OSError):
                await peer.send(Error(channel_id, reason.encode()))
        return spend

    async def _watch_chain(self) -> None:
        """Poll the tip; on each new block let the watcher detect spends and broadcast claims."""
        seen: tuple[int, bytes] | None = None
        while not self._stopping:
            tip = self.chain.tip()
            if tip != seen:
                seen = tip
                await self._on_onchain_events(self._onchain.poll(self.channels, self._closings))
                self.synced_tip = tip  # getinfo's synced flag: every block up to here is handled
                for cid, channel in list(self.channels.items()):  # BOLT 2 HTLC deadlines
                    reason = htlc_deadline_passed(channel, tip[0], lambda h: self._known_preimage(h) is not None)
                    if reason is not None:
                        with contextlib.suppress(LightspeedError):
                            await self.force_close_channel(cid, reason)
            await asyncio.sleep(0.05)

    async def _on_onchain_events(self, events: list[OnchainEvent]) -> None:
        for event in events:
            cid = event.channel_id
            if isinstance(event, ChannelClosedOnChain):
                self.channels.pop(cid, None)
                self._channel_peer.pop(cid, None)
                self._reestablished.discard(cid)
                closing = self._closings.get(cid)
                found = self.chain.get_transaction(event.spend_txid)
                if found is not None:
                    self.closed_channels[cid] = found[0]  # listed as closed by what spent the funding
                if event.kind is SpendKind.MUTUAL and closing is not None and found is not None \
                        and not closing.done.done():
                    closing.done.set_result(found[0])  # a close_channel() still waiting ends here
            elif isinstance(event, HtlcResolvedOnChain) and event.offered:
                await self._onchain_htlc_outcome(cid, event.htlc_id, event.payment_hash, event.preimage)
            elif isinstance(event, ResolutionFinished):  # what never made it on chain is lost
                for htlc_id, payment_hash in list(self._in_flight.get(cid, {}).items()):
                    await self._onchain_htlc_outcome(cid, htlc_id, payment_hash, None)
                for out, incoming in list(self._by_out.items()):
                    record = self._incoming.get(incoming)
                    if out[0] == cid and record is not None:
                        await self._onchain_htlc_outcome(cid, out[1], record.payment_hash, None)

    async def _onchain_htlc_outcome(self, channel_id: bytes, htlc_id: int | None, payment_hash: bytes,
                                    preimage: bytes | None) -> None:
        """An HTLC we offered ended on chain: claimed with its preimage, or timed out back to us.

        Settled like one the peer fulfilled or failed off chain: a forward passes the preimage
        (or a failure) to its incoming HTLC, a sender waiting on it learns the outcome, a payment
        left from before a restart is recorded. One store transaction, then the messages.
        """
        if htlc_id is None:  # not in the channel's log any more: find it by its payment hash
            flying = self._in_flight.get(channel_id, {})
            htlc_id = next((i for i, h in flying.items() if h == payment_hash), None)
            if htlc_id is None:
                return
        key = (channel_id, htlc_id)
        with self.store.transaction():
            if preimage is not None:
                self._succeed(channel_id, LoggedHtlc(Side.LOCAL, htlc_id, 0, payment_hash, 0), preimage)
            elif not self._forward_failed(key, payment_hash):
                self._in_flight.get(channel_id, {}).pop(htlc_id, None)
                self.store.delete_payment_part(channel_id, htlc_id)
                waiter = self._waiters.pop(key, None)
                payment = self.store.payment(payment_hash)
                if waiter is not None:
                    if not waiter.done():
                        waiter.set_result(HtlcOutcome())  # the sender decides: retry elsewhere or fail
                elif payment is not None and payment.status == "pending" and not self.store.payment_parts(payment_hash):
                    reason = "the HTLC timed out on chain after a force close"
                    self.store.put_payment(dataclasses.replace(payment, status="failed", reason=reason))
                    self.events.put_nowait(PaymentFailed(payment_hash, reason))
            batches = self._step_batches()
        await self._send_all(batches)

    async def _on_protocol_error(self, peer: Peer, exc: PeerProtocolError) -> None:
        """A peer broke the protocol: fail the channel where BOLT 2 says so, else warn and hang up."""
        cid = exc.channel_id
        if isinstance(exc, DataLossError) and cid is not None:
            # BOLT 2: we fell behind: MUST NOT broadcast our commitment; the error asks the peer
            # to close, and the watcher sweeps our to_remote from its commitment.
            stored = self.store.channel(cid)
            if stored is not None and cid not in self._onchain.resolutions:
                self._onchain.await_peer_close(channel_from_record(stored.state, stored.remote_commitments,
                                                                   self._derive_secrets))
            self.channels.pop(cid, None)
            await self._send_error(peer, cid, f"{exc.reason}: please fail the channel")
        elif isinstance(exc, ChannelFailure) and cid is not None and cid in self.channels:
            await self._send_error(peer, cid, exc.reason)
            stored = self.store.channel(cid)  # the state machine may have moved before it refused:
            if stored is not None:  # close from the last committed state, which both sides signed
                self.channels[cid] = channel_from_record(stored.state, stored.remote_commitments,
                                                         self._derive_secrets)
            with contextlib.suppress(LightspeedError):
                await self.force_close_channel(cid, exc.reason)
        elif isinstance(exc, ChannelFailure) and cid is not None:
            # A channel being opened (BOLT 2: MUST fail the channel): an error for its temporary
            # id; nothing was funded, so nothing to close.
            self._fail_openings(peer, f"we refused the peer's terms: {exc.reason}", cid)
            self._openings.pop(cid, None)
            await self._send_error(peer, cid, exc.reason)
        else:  # not fatal to the channel: a warning, then a fresh connection (BOLT 1)
            with contextlib.suppress(UsageError, ConnectionError, OSError):
                await peer.send(Warning(cid or bytes(32), exc.reason.encode()))
            await peer.close()

    def _fail_openings(self, peer: Peer, reason: str, channel_id: bytes | None = None) -> None:
        """Our openings with ``peer`` (or the one ``channel_id`` names) end unfunded: wake their callers.

        BOLT 2: before funding_signed nothing is funded; the channel is simply forgotten.
        """
        for key, opening in list(self._openings.items()):
            temp_id = opening.open_msg.temporary_channel_id
            if opening.peer is not peer or not opening.funder or channel_id not in (None, key, bytes(32)):
                continue
            self._openings.pop(key, None)
            self._openings.pop(temp_id, None)
            self._open_failed[temp_id] = reason
            waiter = self._ready.get(temp_id)
            if waiter is not None:
                waiter.set()

    async def _on_error_message(self, peer: Peer, message: Error) -> None:
        """BOLT 1: an error naming one of our channels with this peer fails that channel."""
        cid = message.channel_id
        text = "".join(c if c.isprintable() else "?" for c in message.data.decode(errors="replace"))[:300]
        self._fail_openings(peer, f"the peer refused it: {text or 'no reason given'}", cid)
        if cid in self.channels and self._channel_node.get(cid) == peer.remote_pubkey:
            with contextlib.suppress(LightspeedError):
                await self.force_close_channel(cid, "the peer failed the channel")
