"""A Lightning node runtime: peers over TCP, channels, direct payments with onions and invoices.

The node owns the I/O: sockets (through :mod:`lightspeed.node.peer`), the chain,
the wallet and the clock. Every protocol decision is made by the sans-IO
machines it drives: :class:`~lightspeed.channel.Channel` for channel state,
:mod:`lightspeed.channel.establish` for opening, :mod:`lightspeed.onion` for the
payment onion and :mod:`lightspeed.invoice` for the request. After any change a
channel has to sign for, the node signs (the commitment "dance" is automatic).

Not yet here (issue 5): a durable store (state is in memory), multi-hop
forwarding, reconnection of channels after a restart.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from lightspeed.bitcoin.network import REGTEST, Network
from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.bitcoin.tx import Transaction, TxOut
from lightspeed.chain.regtest import RegtestChain
from lightspeed.chain.wallet import Wallet
from lightspeed.channel.closing import ClosingNegotiation, shutdown
from lightspeed.channel.establish import (
    ANCHORS,
    ChannelPolicy,
    ChannelType,
    check_accept_channel,
    check_open_channel,
)
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.scripts import funding_script
from lightspeed.channel.state import (
    Channel,
    ChannelConfig,
    HtlcFulfilled,
    LocalSecrets,
    channel_id_from_funding,
)
from lightspeed.codec.features import Features
from lightspeed.codec.generated import (
    AcceptChannel,
    ChannelReady,
    ClosingSigned,
    CommitmentSigned,
    FundingCreated,
    FundingSigned,
    OpenChannel,
    RevokeAndAck,
    Shutdown,
    UpdateAddHtlc,
    UpdateFailHtlc,
    UpdateFulfillHtlc,
)
from lightspeed.codec.message_base import WireMessage
from lightspeed.codec.messages import Error, make_message
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import (
    LightspeedError,
    PaymentError,
    PeerProtocolError,
    RejectedTransaction,
    UsageError,
)
from lightspeed.invoice import Invoice, build_invoice
from lightspeed.node.peer import Peer, PeerListener
from lightspeed.node.peer import connect as connect_peer
from lightspeed.onion import build_onion, peel_onion
from lightspeed.onion.payload import HopPayload
from lightspeed.onion.sphinx import OnionPacket

DUST_LIMIT_SAT = 546
TO_SELF_DELAY = 144
MIN_DEPTH = 3
FEERATE_PER_KW = 2500


@dataclass(frozen=True)
class PaymentReceived:
    payment_hash: bytes
    amount_msat: int


@dataclass(frozen=True)
class PaymentSent:
    payment_hash: bytes
    preimage: bytes
    amount_msat: int


@dataclass
class _Opening:
    """A channel being opened: the messages exchanged so far."""

    peer: Peer
    secrets: LocalSecrets
    open_msg: OpenChannel
    funder: bool
    accept_msg: AcceptChannel | None = None
    channel: Channel | None = None
    funding_tx: Transaction | None = None


@dataclass
class _Closing:
    """A mutual close in progress: our shutdown script, then the fee negotiation."""

    local_script: bytes
    done: asyncio.Future[Transaction]
    shutdown_sent: bool = False
    negotiation: ClosingNegotiation | None = None


CLOSING_WEIGHT = 700  # a closing transaction with two P2WPKH outputs weighs about 680


@dataclass
class Node:
    """One node. ``start()`` listens; ``connect``, ``open_channel``, ``create_invoice``, ``pay``."""

    privkey: bytes
    chain: RegtestChain
    wallet_seed: bytes
    network: Network = REGTEST
    channels: dict[bytes, Channel] = field(default_factory=dict)
    events: asyncio.Queue[PaymentReceived | PaymentSent] = field(default_factory=asyncio.Queue)

    def __post_init__(self) -> None:
        self.node_id = pubkey_from_privkey(self.privkey)
        self.wallet = Wallet(self.wallet_seed, self.chain, self.network)
        self._listener = PeerListener(self.privkey, self._serve)
        self._peers: dict[bytes, Peer] = {}
        self._channel_peer: dict[bytes, Peer] = {}
        self._openings: dict[bytes, _Opening] = {}
        self._ready: dict[bytes, asyncio.Event] = {}
        self._invoices: dict[bytes, tuple[Invoice, bytes]] = {}  # payment_hash -> (invoice, preimage)
        self._pending: dict[bytes, asyncio.Future[bytes]] = {}  # payment_hash -> preimage future
        self._tasks: set[asyncio.Task[None]] = set()
        self._policy = ChannelPolicy(chain_hash=self.network.chain_hash)
        self._onions: dict[tuple[bytes, int], bytes] = {}  # incoming HTLC onions by (channel, id)
        self._paid: set[bytes] = set()
        self.settled_invoices: set[bytes] = set()  # payment hashes of our invoices we fulfilled
        self._ready_marks: dict[bytes, set[str]] = {}  # payment hashes we paid (kept: never pay one twice)

    # -- connections -------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        return await self._listener.start(host, port)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for peer in list(self._peers.values()):
            await peer.close()
        await self._listener.stop()

    async def connect(self, host: str, port: int, node_id: bytes) -> Peer:
        peer = await connect_peer(host, port, self.privkey, node_id)
        self._peers[node_id] = peer
        task = asyncio.create_task(self._serve(peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return peer

    async def _serve(self, peer: Peer) -> None:
        assert peer.remote_pubkey is not None
        self._peers[peer.remote_pubkey] = peer
        async for message in peer:
            if isinstance(message, WireMessage):
                try:
                    await self._handle(peer, message)
                except PeerProtocolError as exc:
                    await peer.send(Error(exc.channel_id or bytes(32), exc.reason.encode()))
                    await peer.close()
                    return
                except (LightspeedError, KeyError, ValueError) as exc:
                    # A message we cannot place (unknown temporary id, out-of-order funding, ...):
                    # no input may crash the node; tell the peer and drop this connection only.
                    await peer.send(Error(bytes(32), f"cannot process {message.NAME}: {exc}".encode()))
                    await peer.close()
                    return

    # -- opening -------------------------------------------------------------------------------

    def _secrets(self) -> LocalSecrets:
        return LocalSecrets(*(os.urandom(32) for _ in range(6)))

    def _config(self, channel_id: bytes, funding: Transaction, funder: bool, remote: OpenChannel | AcceptChannel,
                channel_type: ChannelType) -> ChannelConfig:
        from lightspeed.channel.commitment import ChannelBasepoints

        basepoints = ChannelBasepoints(remote.funding_pubkey, remote.revocation_basepoint, remote.payment_basepoint,
                                       remote.delayed_payment_basepoint, remote.htlc_basepoint)
        return ChannelConfig(channel_id, funding.txid, 0, funding.outputs[0].value_sat, funder, channel_type.anchors,
                             basepoints, DUST_LIMIT_SAT, remote.dust_limit_satoshis, remote.to_self_delay,
                             TO_SELF_DELAY, max_accepted_htlcs=30, remote_max_accepted_htlcs=remote.max_accepted_htlcs)

    async def open_channel(self, node_id: bytes, funding_sat: int, push_msat: int = 0) -> bytes:
        """Open, fund (wallet) and wait until the channel is ready; returns the channel id."""
        peer = self._peers[node_id]
        secrets = self._secrets()
        points = secrets.basepoints()
        temp_id = os.urandom(32)
        probe = Channel(ChannelConfig(temp_id, bytes(32), 0, 1, True, True, points, 0, 0, 0, 0), secrets, 0, 0, 1, {})
        open_msg = make_message(
            "open_channel", tlvs={"upfront_shutdown_script": {"shutdown_scriptpubkey": b""},
                                  "channel_type": {"type": ANCHORS.to_bytes()}},
            chain_hash=self.network.chain_hash, temporary_channel_id=temp_id, funding_satoshis=funding_sat,
            push_msat=push_msat, dust_limit_satoshis=DUST_LIMIT_SAT, max_htlc_value_in_flight_msat=funding_sat * 1000,
            channel_reserve_satoshis=max(DUST_LIMIT_SAT, funding_sat // 100), htlc_minimum_msat=1,
            feerate_per_kw=FEERATE_PER_KW, to_self_delay=TO_SELF_DELAY, max_accepted_htlcs=30,
            funding_pubkey=points.funding_pubkey, revocation_basepoint=points.revocation_basepoint,
            payment_basepoint=points.payment_basepoint, delayed_payment_basepoint=points.delayed_payment_basepoint,
            htlc_basepoint=points.htlc_basepoint, first_per_commitment_point=probe.local_point(0),
            channel_flags=b"\x00")
        assert isinstance(open_msg, OpenChannel)
        ready = self._ready.setdefault(temp_id, asyncio.Event())
        self._openings[temp_id] = _Opening(peer, secrets, open_msg, funder=True)
        await peer.send(open_msg)
        await asyncio.wait_for(ready.wait(), 30)
        return next(cid for cid, p in self._channel_peer.items() if p is peer and cid in self.channels)

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
            self.channels[message.channel_id].receive_channel_ready(message)
            self._mark_ready(message.channel_id, "received")
        elif isinstance(message, (Shutdown, ClosingSigned)):
            await self._on_closing_message(peer, message)
        else:
            await self._on_channel_message(peer, message)

    async def _on_open(self, peer: Peer, message: OpenChannel) -> None:
        channel_type = check_open_channel(message, self._policy, Features())
        secrets = self._secrets()
        points = secrets.basepoints()
        probe = Channel(ChannelConfig(bytes(32), bytes(32), 0, 1, False, True, points, 0, 0, 0, 0), secrets, 0, 0, 1, {})
        accept = make_message(
            "accept_channel", tlvs={"channel_type": {"type": channel_type.to_bytes()}},
            temporary_channel_id=message.temporary_channel_id, dust_limit_satoshis=DUST_LIMIT_SAT,
            max_htlc_value_in_flight_msat=message.funding_satoshis * 1000,
            channel_reserve_satoshis=max(DUST_LIMIT_SAT, message.funding_satoshis // 100), htlc_minimum_msat=1,
            minimum_depth=MIN_DEPTH, to_self_delay=TO_SELF_DELAY, max_accepted_htlcs=30,
            funding_pubkey=points.funding_pubkey, revocation_basepoint=points.revocation_basepoint,
            payment_basepoint=points.payment_basepoint, delayed_payment_basepoint=points.delayed_payment_basepoint,
            htlc_basepoint=points.htlc_basepoint, first_per_commitment_point=probe.local_point(0))
        assert isinstance(accept, AcceptChannel)
        self._openings[message.temporary_channel_id] = _Opening(peer, secrets, message, funder=False, accept_msg=accept)
        await peer.send(accept)

    async def _on_accept(self, message: AcceptChannel) -> None:
        opening = self._openings[message.temporary_channel_id]
        channel_type = check_accept_channel(message, opening.open_msg, self._policy)
        points = opening.secrets.basepoints()
        script = p2wsh_script(funding_script(points.funding_pubkey, message.funding_pubkey))
        funding = self.wallet.create_transaction([TxOut(opening.open_msg.funding_satoshis, script)])
        channel_id = channel_id_from_funding(funding.txid, 0)
        config = self._config(channel_id, funding, True, message, channel_type)
        funding_msat = opening.open_msg.funding_satoshis * 1000
        channel = Channel(config, opening.secrets, funding_msat - opening.open_msg.push_msat,
                          opening.open_msg.push_msat, opening.open_msg.feerate_per_kw,
                          {0: message.first_per_commitment_point})
        opening.accept_msg, opening.channel, opening.funding_tx = message, channel, funding
        self._openings[channel_id] = opening
        await opening.peer.send(FundingCreated(temporary_channel_id=message.temporary_channel_id,
                                               funding_txid=funding.txid, funding_output_index=0,
                                               signature=channel.initial_signature()))

    async def _on_funding_created(self, message: FundingCreated) -> None:
        opening = self._openings.pop(message.temporary_channel_id)
        assert opening.accept_msg is not None
        tx = Transaction(2, (), (TxOut(opening.open_msg.funding_satoshis, b""),), 0)  # only txid/amount used
        channel_id = channel_id_from_funding(message.funding_txid, message.funding_output_index)
        config = self._config(channel_id, tx, False, opening.open_msg, ANCHORS)
        config = ChannelConfig(**{**config.__dict__, "funding_txid": message.funding_txid,
                                  "funding_output_index": message.funding_output_index})
        funding_msat = opening.open_msg.funding_satoshis * 1000
        channel = Channel(config, opening.secrets, opening.open_msg.push_msat, funding_msat - opening.open_msg.push_msat,
                          opening.open_msg.feerate_per_kw, {0: opening.open_msg.first_per_commitment_point})
        channel.receive_initial_signature(message.signature)
        self.channels[channel_id] = channel
        self._channel_peer[channel_id] = opening.peer
        await opening.peer.send(FundingSigned(channel_id=channel_id, signature=channel.initial_signature()))
        self._watch_funding(channel_id, message.funding_txid)

    async def _on_funding_signed(self, message: FundingSigned) -> None:
        opening = self._openings.pop(message.channel_id)
        assert opening.channel is not None and opening.funding_tx is not None
        opening.channel.receive_initial_signature(message.signature)  # only now is broadcasting safe
        self.channels[message.channel_id] = opening.channel
        self._channel_peer[message.channel_id] = opening.peer
        self._ready[message.channel_id] = self._ready.pop(opening.open_msg.temporary_channel_id, asyncio.Event())
        self.chain.broadcast(opening.funding_tx)
        self._watch_funding(message.channel_id, opening.funding_tx.txid)

    def _mark_ready(self, channel_id: bytes, how: str) -> None:
        """BOLT 2: updates may flow only once channel_ready was both sent and received."""
        marks = self._ready_marks.setdefault(channel_id, set())
        marks.add(how)
        if marks == {"sent", "received"}:
            self._ready.setdefault(channel_id, asyncio.Event()).set()

    def _watch_funding(self, channel_id: bytes, txid: bytes) -> None:
        async def watch() -> None:
            while True:  # poll the chain: the runtime's job, not the state machine's
                found = self.chain.get_transaction(txid)
                if found is not None and found[1] >= MIN_DEPTH:
                    break
                await asyncio.sleep(0.02)
            await self._channel_peer[channel_id].send(self.channels[channel_id].channel_ready())
            self._mark_ready(channel_id, "sent")

        task = asyncio.create_task(watch())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- payments ----------------------------------------------------------------------------

    def create_invoice(self, amount_msat: int, description: str, expiry: int = 3600) -> Invoice:
        preimage, secret = os.urandom(32), os.urandom(32)
        invoice = build_invoice(network=self.network, amount_msat=amount_msat, description=description,
                                payment_hash=sha256(preimage), payment_secret=secret, timestamp=int(time.time()),
                                expiry=expiry, payee=None).sign(self.privkey)
        self._invoices[invoice.payment_hash] = (invoice, preimage)
        return invoice

    async def pay(self, invoice: Invoice, timeout: float = 30) -> bytes:
        """Pay over a direct channel to the payee; returns the preimage (the proof of payment)."""
        channel_id = next((cid for cid, peer in self._channel_peer.items()
                           if peer.remote_pubkey == invoice.payee and cid in self.channels), None)
        if channel_id is None:
            raise PaymentError("no channel to the payee (multi-hop payments come with issue 6)")
        if invoice.amount_msat is None or invoice.payment_secret is None:
            raise PaymentError("the invoice has no amount or no payment secret")
        # The double-pay guard: anyone on the first route could take a second payment to this hash.
        if invoice.payment_hash in self._paid:
            raise PaymentError("this invoice is already paid")
        if invoice.payment_hash in self._pending:
            raise PaymentError("this invoice is already being paid")
        await self._ready.setdefault(channel_id, asyncio.Event()).wait()
        channel = self.channels[channel_id]
        height = self.chain.tip()[0]
        cltv = height + invoice.min_final_cltv_expiry + 3
        payload = HopPayload(amt_to_forward_msat=invoice.amount_msat, outgoing_cltv_value=cltv,
                             payment_secret=invoice.payment_secret, total_msat=invoice.amount_msat)
        onion = build_onion(os.urandom(32), [invoice.payee], [payload.to_bytes()], invoice.payment_hash).packet
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[invoice.payment_hash] = future
        add = channel.add_htlc(invoice.amount_msat, invoice.payment_hash, cltv, onion.to_bytes())
        peer = self._channel_peer[channel_id]
        await peer.send(add)
        await self._sign_if_needed(channel, peer)
        preimage = await asyncio.wait_for(future, timeout)
        self._paid.add(invoice.payment_hash)
        await self.events.put(PaymentSent(invoice.payment_hash, preimage, invoice.amount_msat))
        return preimage

    async def _sign_if_needed(self, channel: Channel, peer: Peer) -> None:
        if channel.log.has_changes_to_sign() and not channel.log.awaiting_revoke:
            await peer.send(channel.sign())

    async def _on_channel_message(self, peer: Peer, message: WireMessage) -> None:
        channel_id = getattr(message, "channel_id", None)
        channel = self.channels.get(channel_id) if isinstance(channel_id, bytes) else None
        if channel is None:
            raise PeerProtocolError(f"{message.NAME} for an unknown channel")
        if isinstance(message, UpdateAddHtlc):
            self._onions[(channel.config.channel_id, message.id)] = message.onion_routing_packet
        if isinstance(message, UpdateFailHtlc):
            failed = next((h for h in channel.log.commitment(Side.LOCAL).htlcs
                           if h.offerer is Side.LOCAL and h.htlc_id == message.id), None)
            future = self._pending.pop(failed.payment_hash, None) if failed is not None else None
            if future is not None and not future.done():
                future.set_exception(PaymentError("the payee refused the payment"))
        replies, fulfilled = channel.receive(message)
        for reply in replies:
            await peer.send(reply)
        for done in fulfilled:
            self._settle_sent(done)
        if isinstance(message, (CommitmentSigned, RevokeAndAck)):
            await self._settle_received(channel, peer)
            await self._sign_if_needed(channel, peer)

    def _settle_sent(self, done: HtlcFulfilled) -> None:
        future = self._pending.pop(done.htlc.payment_hash, None)
        if future is not None and not future.done():
            future.set_result(done.preimage)

    async def _settle_received(self, channel: Channel, peer: Peer) -> None:
        """Fulfil HTLCs to us once irrevocably committed, after checking the onion against the invoice."""
        for htlc in channel.log.commitment(Side.LOCAL).htlcs:
            if htlc.offerer is not Side.REMOTE:
                continue
            message: WireMessage
            try:
                message = channel.fulfill_htlc(htlc.htlc_id, self._check_incoming(channel, htlc))
            except PaymentError:
                try:
                    message = channel.fail_htlc(htlc.htlc_id, b"incorrect_or_unknown_payment_details")
                except UsageError:
                    continue
            except UsageError:  # not yet irrevocably committed, or already settled: next round
                continue
            if isinstance(message, UpdateFulfillHtlc):
                self.settled_invoices.add(htlc.payment_hash)
                await self.events.put(PaymentReceived(htlc.payment_hash, htlc.amount_msat))
            await peer.send(message)

    def _check_incoming(self, channel: Channel, htlc: object) -> bytes:
        from lightspeed.channel.htlc_log import LoggedHtlc

        assert isinstance(htlc, LoggedHtlc)
        found = self._invoices.get(htlc.payment_hash)
        if found is None:
            raise PaymentError("unknown payment hash")
        invoice, preimage = found
        onion_bytes = self._onions.get((channel.config.channel_id, htlc.htlc_id))
        if onion_bytes is not None:
            layer = peel_onion(OnionPacket.from_bytes(onion_bytes), self.privkey, htlc.payment_hash)
            payload = HopPayload.from_bytes(layer.payload)
            # BOLT 4 final node: payment_secret and total_msat must match the invoice, amount too.
            if payload.payment_secret != invoice.payment_secret or payload.amt_to_forward_msat != htlc.amount_msat:
                raise PaymentError("onion does not match the invoice")
        if invoice.amount_msat is not None and htlc.amount_msat < invoice.amount_msat:
            raise PaymentError("underpaid")
        return preimage

    # -- queries and commands for the REST API ---------------------------------------------------

    closed_channels: dict[bytes, Transaction] = field(default_factory=dict, init=False, repr=False)
    _closings: dict[bytes, _Closing] = field(default_factory=dict, init=False, repr=False)

    def peer_ids(self) -> list[bytes]:
        """Node ids of the peers we are connected to now."""
        return [node_id for node_id, peer in self._peers.items() if not peer.session.closed]

    def channel_peer_id(self, channel_id: bytes) -> bytes | None:
        peer = self._channel_peer.get(channel_id)
        return None if peer is None else peer.remote_pubkey

    def channel_is_ready(self, channel_id: bytes) -> bool:
        """True once channel_ready went both ways (payments may flow)."""
        ready = self._ready.get(channel_id)
        return ready is not None and ready.is_set()

    def channel_is_closing(self, channel_id: bytes) -> bool:
        return channel_id in self._closings

    def _closing_fees(self) -> tuple[int, int]:
        """Our acceptable closing fee range: the chain's feerate for the closing weight, up to 4x."""
        low = CLOSING_WEIGHT * self.chain.estimate_feerate_per_kw() // 1000 + 1
        return low, 4 * low

    async def close_channel(self, channel_id: bytes, timeout: float = 30) -> Transaction:
        """Mutual close (BOLT 2 shutdown, closing_signed): returns the broadcast closing transaction.

        The closing output pays a fresh wallet key, so the balance returns to the on-chain wallet.
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
            closing = self._closings[channel_id] = _Closing(self.wallet.new_key().script_pubkey, done)
        if not closing.shutdown_sent:
            closing.shutdown_sent = True
            await self._channel_peer[channel_id].send(shutdown(channel, closing.local_script))
        return await asyncio.wait_for(asyncio.shield(closing.done), timeout)

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
                await peer.send(shutdown(channel, closing.local_script))
            low, high = self._closing_fees()
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
            try:
                self.chain.broadcast(agreed)
            except RejectedTransaction:
                if self.chain.get_transaction(agreed.txid) is None:  # the peer's broadcast is fine
                    raise
            self.channels.pop(message.channel_id, None)
            self._channel_peer.pop(message.channel_id, None)
            self.closed_channels[message.channel_id] = agreed
            closing.done.set_result(agreed)
