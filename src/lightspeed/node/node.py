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
(started and fed by :mod:`lightspeed.node.closing`).

Blinded paths (BOLT 4 route blinding): :mod:`lightspeed.node.blinded` builds them to us
(:meth:`Node.blinded_payment_paths`), receives and forwards over them (an ``update_add_htlc`` with
``path_key``, or our payload naming us the introduction node) and pays to them
(:meth:`Node.pay_blinded`); the node only hands it those HTLCs and their failures.

Every HTLC of an outgoing payment (each part of an MPP payment) is recorded while in flight: after
a restart the payment succeeds as soon as one part brings the preimage, and fails only once all
its parts failed.

Structure: this module holds the node's state (the dataclass fields, ``__post_init__``, loading
from the store) and the small read-only queries; its behaviour lives in parts, one
responsibility each: :mod:`~lightspeed.node.connections`, :mod:`~lightspeed.node.opening`,
:mod:`~lightspeed.node.channel_steps`, :mod:`~lightspeed.node.sending`,
:mod:`~lightspeed.node.receiving`, :mod:`~lightspeed.node.forwarding_runtime` and
:mod:`~lightspeed.node.closing`. A part is a module of functions whose first parameter is
``self: Node``, bound onto :class:`Node` by name in its class body (``pay = sending.pay``), so
they are ordinary methods: ``node.pay(...)`` and the private ``node._save(...)`` work as before,
and the parts call each other through ``self``. Chosen over mixins because mypy rejects a mixin
method whose ``self`` is annotated with the class that inherits it (and unannotated, the mixin
would type-check nothing); chosen over helper objects because the parts share most of the
node's state, and a rewrite of every ``self.x`` would not be the pure refactor this split is.
Parts import ``Node`` only under ``TYPE_CHECKING``: node.py imports them, never the reverse
(tests/test_nodesplit_structure.py checks it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lightspeed.bitcoin.network import REGTEST, Network
from lightspeed.bitcoin.tx import Transaction
from lightspeed.chain.source import NodeChain
from lightspeed.chain.wallet import HdSeed, Wallet
from lightspeed.channel.establish import (
    ANCHORS,
    STATIC_REMOTEKEY,
    ChannelPolicy,
)
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.serialize import channel_from_record
from lightspeed.channel.state import (
    Channel,
    LocalSecrets,
)
from lightspeed.codec.features import Features
from lightspeed.codec.message_base import WireMessage
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.node import (
    backup_runtime,
    channel_steps,
    closing,
    connections,
    forwarding_runtime,
    funding_watch,
    opening,
    receiving,
    recovery,
    sending,
)
from lightspeed.node.async_draft import AsyncDraft
from lightspeed.node.async_lsp import AsyncLsp
from lightspeed.node.async_runtime import AsyncPayRuntime
from lightspeed.node.backup import BackupChannel
from lightspeed.node.blinded import BlindedPayments
from lightspeed.node.broadcast import Broadcaster
from lightspeed.node.closing import CLOSING_WEIGHT, _Closing
from lightspeed.node.connections import RECONNECT_DELAYS
from lightspeed.node.events import EventBus
from lightspeed.node.fee_bumper import ParentBumper
from lightspeed.node.fee_updates import FeeFollower
from lightspeed.node.forwarding import DEFAULT_POLICY
from lightspeed.node.funding_watch import FundingWatch
from lightspeed.node.gossip_runtime import GossipRuntime
from lightspeed.node.invoices import InvoiceBook
from lightspeed.node.keys import ChannelKeys, DerivedChannelKeys
from lightspeed.node.multihash import MultihashPayments
from lightspeed.node.offers_flow import OffersFlow
from lightspeed.node.onchain import PendingSweep
from lightspeed.node.onion_messenger import OnionMessenger
from lightspeed.node.onion_ratelimit import OnionMessageLimits
from lightspeed.node.opening import _Opening
from lightspeed.node.outcomes import (
    AsyncPaymentSucceeded,
    HtlcHeld,
    HtlcKey,
    HtlcReleased,
    NodeEvent,
    PaymentFailed,
    PaymentReceived,
    PaymentSent,
)
from lightspeed.node.paying import HtlcOutcome
from lightspeed.node.peer import DEFAULT_FEATURES, Peer, PeerListener
from lightspeed.node.recovery import RecoveringChannel
from lightspeed.node.refunds import Refunds
from lightspeed.node.return_paths import ReturnPaths
from lightspeed.node.sending import (
    FINAL_CLTV_MARGIN,
    MAX_PARTS,
    REESTABLISH_GRACE_S,
    ROUTE_BLINDING_REQUIRED,
)
from lightspeed.node.settings import DEFAULT_CHANNEL_SETTINGS, ChannelSettings
from lightspeed.payments.forward import ForwardingPolicy
from lightspeed.payments.receiver import Receiver
from lightspeed.routing import ChannelGraph, ProbabilisticScorer
from lightspeed.store import (
    ClosedChannel,
    IncomingHtlcRecord,
    SqliteStore,
    Store,
)

#: Names importers take from here (``from lightspeed.node.node import PaymentReceived``), now defined in the parts.
__all__ = [
    "CLOSING_WEIGHT",
    "FINAL_CLTV_MARGIN",
    "MAX_PARTS",
    "RECONNECT_DELAYS",
    "REESTABLISH_GRACE_S",
    "ROUTE_BLINDING_REQUIRED",
    "AsyncPaymentSucceeded",
    "HtlcHeld",
    "HtlcKey",
    "HtlcReleased",
    "Node",
    "NodeEvent",
    "PaymentFailed",
    "PaymentReceived",
    "PaymentSent",
]


def _in_memory_store() -> Store:
    return SqliteStore(":memory:")


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
    #: The LSP role of async payments (``node start --lsp``): holds registered clients' HTLCs.
    async_lsp: AsyncLsp | None = None
    #: Where the static channel backup is rewritten whenever a channel opens or closes (node.backup).
    channel_backup_file: Path | None = None
    #: Follow the chain's fee estimates with update_fee on the channels we fund, and check the
    #: peer's update_fee against them (node.fee_updates). None: on, except on regtest.
    fee_updates: bool | None = None
    closed_channels: dict[bytes, Transaction] = field(default_factory=dict, init=False, repr=False)
    _closings: dict[bytes, _Closing] = field(default_factory=dict, init=False, repr=False)

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
        self._backup_entries: dict[bytes, BackupChannel] = {}  # open channels, as the static backup lists them
        self.channel_backup_error: str | None = None  # why the last backup write failed (None: it did not)
        self._recovering: dict[bytes, RecoveringChannel] = {}  # channels restored from a static backup (node.recovery)
        self._sent_shutdown: dict[bytes, bytes] = {}  # loaded: closes under way (resumed by start())
        self.settled_invoices: set[bytes] = set()  # payment hashes of our invoices we fulfilled
        self.sent_counts: Counter[str] = Counter()  # channel messages sent, by name (benchmarks)
        self.channel_writes = 0  # channel states committed to the store (benchmarks)
        self.htlc_signatures_sent = 0  # HTLC signatures in our commitment_signed (benchmarks: the floor)
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
        self._funding_watch = FundingWatch(self.chain)  # funding reorganised out after channel_ready
        self.gossip = GossipRuntime(self)  # BOLT 7: announces our channels, fills self.graph
        self.onion_messages = OnionMessenger(self, self.onion_message_limits)  # BOLT 4: relay, receive, send
        self.offers = OffersFlow(self)  # BOLT 12 over onion messages: answers invoice requests
        self.refunds = Refunds(self)  # BOLT 12 refunds: pays invoices for ours, answers others'
        self.return_paths = ReturnPaths(self)  # private refunds through a return path sent with a payment
        self.multihash = MultihashPayments(self)  # multi-hash requests and refund declarations
        self.broadcaster = Broadcaster(self.chain, self.wallet, self._spawn, self.events.put_nowait, self.store)
        # CPFP of our funding and mutual-close transactions while they wait (None: never bumped)
        self.parent_bumper: ParentBumper | None = ParentBumper(self.chain, self.wallet)
        self.fee_follower = FeeFollower(self)  # update_fee from the backend's estimates, every block
        self.blinded = BlindedPayments(self)  # BOLT 4 route blinding: paths to us, forwarding, paying
        self.asyncpay = AsyncPayRuntime(self)  # async payments: LSP holds and mailbox, pay_async, unblock
        self.async_draft = AsyncDraft(self)  # async payments, the draft flow: static invoices, hold_htlc

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
            if key_index is not None:
                self._backup_entries[cid] = backup_runtime.backup_entry(channel, stored.peer_id, key_index)
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
        ready = self._ready.get(channel_id)  # and not suspended by a reorganised funding (node.funding_watch)
        return ready is not None and ready.is_set() and channel_id not in self._funding_watch.suspended

    def channel_is_closing(self, channel_id: bytes) -> bool:
        return channel_id in self._closings

    def closed_channel_records(self) -> list[ClosedChannel]:
        """Closed channels as the store keeps them (they outlive restarts), oldest first."""
        return self.store.closed_channels()

    def pending_sweeps(self) -> list[PendingSweep]:
        """Funds of closed channels not yet swept to the wallet (force closes), with their maturity."""
        return self._onchain.pending_sweeps()

    # The parts' functions, bound as methods (see the module docstring).

    # -- connections (lightspeed.node.connections) --
    start = connections.start
    stop = connections.stop
    _spawn = connections._spawn
    _task_done = connections._task_done
    _on_store_failure = connections._on_store_failure
    _halt = connections._halt
    _require_store = connections._require_store
    _networks = connections._networks
    connect = connections.connect
    _adopt_connection = connections._adopt_connection
    _keep_connected = connections._keep_connected
    _serve = connections._serve
    _handle_burst = connections._handle_burst
    _send_error = connections._send_error
    _on_connected = connections._on_connected
    _on_disconnected = connections._on_disconnected
    _forget_uncommitted = connections._forget_uncommitted
    _handle = connections._handle
    _on_reestablish = connections._on_reestablish
    _on_protocol_error = connections._on_protocol_error
    _on_error_message = connections._on_error_message

    # -- opening (lightspeed.node.opening) --
    _new_secrets = opening._new_secrets
    _config = opening._config
    open_channel = opening.open_channel
    _remote_features = opening._remote_features
    _on_open = opening._on_open
    _on_accept = opening._on_accept
    _adopt = opening._adopt

    # -- static channel backup (lightspeed.node.backup_runtime) --
    channel_backup = backup_runtime.channel_backup
    _backup_channel_added = backup_runtime.backup_channel_added
    _backup_channel_closed = backup_runtime.backup_channel_closed
    _write_channel_backup = backup_runtime.write_channel_backup

    # -- recovery from a static backup (lightspeed.node.recovery) --
    restore_from_backup = recovery.restore_from_backup
    resume_recovery = recovery.resume_recovery
    _start_recovery = recovery.start_recovery
    _on_connected_recovering = recovery.on_connected_recovering
    _on_reestablish_recovering = recovery.on_reestablish_recovering

    def recovering_channels(self) -> list[RecoveringChannel]:
        """Channels restored from a static backup: ``recovering`` until their funds are swept, then ``closed``."""
        return list(self._recovering.values())
    _on_funding_created = opening._on_funding_created
    _on_funding_signed = opening._on_funding_signed
    _on_channel_ready = opening._on_channel_ready
    _mark_ready = opening._mark_ready
    _funding_depth_reached = opening._funding_depth_reached
    _watch_funding = opening._watch_funding
    _fail_openings = opening._fail_openings

    # -- sending (lightspeed.node.sending) --
    _guard = sending._guard
    pay = sending.pay
    keysend = sending.keysend
    pay_amp = sending.pay_amp
    _pay = sending._pay
    _can_send_msat = sending._can_send_msat
    _reestablishing = sending._reestablishing
    _graph_for = sending._graph_for
    _wait_for_channels = sending._wait_for_channels
    _pay_parts = sending._pay_parts
    _pay_part = sending._pay_part
    pay_blinded = sending.pay_blinded
    send_to_route = sending.send_to_route
    _next_revocation = sending._next_revocation
    _send_htlc = sending._send_htlc
    _offer_htlc = sending._offer_htlc
    payment_status = sending.payment_status
    _succeed = sending._succeed
    _resolve_payments = sending._resolve_payments
    _unresolved_htlcs = staticmethod(sending._unresolved_htlcs)

    # -- receiving (lightspeed.node.receiving) --
    create_invoice = receiving.create_invoice
    private_route_hints = receiving.private_route_hints
    create_amp_invoice = receiving.create_amp_invoice
    _new_invoice = receiving._new_invoice
    blinded_payment_paths = receiving.blinded_payment_paths
    _locked_incoming = staticmethod(receiving._locked_incoming)
    _process_incoming = receiving._process_incoming
    _decide_incoming = receiving._decide_incoming
    _apply_decisions = receiving._apply_decisions
    _mark_invoice_paid = receiving._mark_invoice_paid
    _record = receiving._record
    _apply_record = receiving._apply_record
    _receiver_timer = receiving._receiver_timer
    create_hold_invoice = receiving.create_hold_invoice
    settle_hold = receiving.settle_hold
    cancel_hold = receiving.cancel_hold

    # -- forwarding_runtime (lightspeed.node.forwarding_runtime) --
    short_channel_id = forwarding_runtime.short_channel_id
    _sendable_msat = forwarding_runtime._sendable_msat
    _usable = forwarding_runtime._usable
    _outgoing_channels = forwarding_runtime._outgoing_channels
    _channel_policy = forwarding_runtime._channel_policy
    _channel_update = forwarding_runtime._channel_update
    _forward = forwarding_runtime._forward
    _forward_settled = forwarding_runtime._forward_settled
    _forward_failed = forwarding_runtime._forward_failed

    # -- channel_steps (lightspeed.node.channel_steps) --
    _save = channel_steps._save
    _send = channel_steps._send
    _queue_all = channel_steps._queue_all
    _send_all = channel_steps._send_all
    _step_batches = channel_steps._step_batches
    _on_channel_message = channel_steps._on_channel_message
    _advance = channel_steps._advance
    _run_step = channel_steps._run_step
    update_fee = channel_steps.update_fee

    # -- closing (lightspeed.node.closing) --
    _closing_fees = closing._closing_fees
    close_channel = closing.close_channel
    _save_shutdown = closing._save_shutdown
    _on_closing_message = closing._on_closing_message
    _new_onchain_watcher = closing._new_onchain_watcher
    _known_preimage = closing._known_preimage
    force_close_channel = closing.force_close_channel
    _watch_chain = closing._watch_chain
    _bump_parents = closing._bump_parents
    _on_funding_events = funding_watch.on_funding_events
    _on_onchain_events = closing._on_onchain_events
    _onchain_htlc_outcome = closing._onchain_htlc_outcome

