"""The node's connections: listening, dialing and redialing peers, the read loop, reestablish, errors.

A part of :class:`~lightspeed.node.node.Node` (its methods, bound onto the class there; see
node.py's docstring). A burst of channel updates read together shares one store commit
(:func:`_handle_burst`); a peer's bad message becomes a BOLT 1 warning or error for that peer
only; a commit that fails stops the whole node (:func:`_on_store_failure`), because memory may
then be ahead of the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from lightspeed.bitcoin.tx import Transaction
from lightspeed.channel.closing import shutdown
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.serialize import channel_from_record
from lightspeed.channel.state import (
    Channel,
    ChannelFailure,
    DataLossError,
)
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
from lightspeed.codec.messages import Error, Message, Warning, encode_message
from lightspeed.errors import (
    LightspeedError,
    PeerProtocolError,
    UsageError,
)
from lightspeed.gossip.addresses import IPV4, Address
from lightspeed.gossip.gossiper import GOSSIP_TYPES
from lightspeed.node.closing import _Closing
from lightspeed.node.peer import Peer
from lightspeed.node.peer import connect as connect_peer
from lightspeed.store import StoreUnavailable

if TYPE_CHECKING:
    from lightspeed.node.node import Node

log = logging.getLogger("lightspeed.node")


RECONNECT_DELAYS = (0.05, 0.1, 0.2, 0.5, 1.0)  # seconds between dials to a lost peer, then the last
_UPDATES = (UpdateAddHtlc, UpdateFulfillHtlc, UpdateFailHtlc, UpdateFailMalformedHtlc, UpdateFee, CommitmentSigned,
            RevokeAndAck)


async def start(self: Node, host: str = "127.0.0.1", port: int = 0) -> int:
    """Listen, and dial every peer we have a channel with and an address for."""
    bound = await self._listener.start(host, port)
    self._write_channel_backup()  # a datadir from before backups existed gets one at once
    self._spawn(self._watch_chain())
    self.gossip.address = Address(IPV4, host, bound) if host.count(".") == 3 else None
    self._spawn(self.gossip.run())
    self._spawn(self._receiver_timer(min(1.0, self.mpp_timeout / 4)))
    self._spawn(self.asyncpay.run())  # idle unless the node is an LSP (async_lsp)
    self.broadcaster.resume()  # fundings and closes a stopped (or killed) run left unbroadcast
    for cid, script in self._sent_shutdown.items():  # a mutual close resumes: shutdown is resent
        done: asyncio.Future[Transaction] = asyncio.get_running_loop().create_future()
        self._closings[cid] = _Closing(script, done, shutdown_sent=True)
    known = self.store.peers()
    for node_id in set(self._channel_node.values()):
        if node_id in known:
            self._keep_connected(node_id)
    self._start_recovery()  # channels restored from a static backup: ask their peers to close
    return bound


async def stop(self: Node) -> None:
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


def _spawn(self: Node, coro: object) -> None:
    task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
    self._tasks.add(task)
    task.add_done_callback(self._task_done)


def _task_done(self: Node, task: asyncio.Task[None]) -> None:
    """Retrieving the exception marks it seen: a task ended by the store failure (already logged
    once by _on_store_failure) must not print its traceback too; any other still does."""
    self._tasks.discard(task)
    if not task.cancelled():
        error = task.exception()
        if error is not None and not isinstance(error, StoreUnavailable):
            asyncio.get_running_loop().call_exception_handler(
                {"message": "node task failed", "exception": error, "task": task})


def _on_store_failure(self: Node, error: StoreUnavailable) -> None:
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


async def _halt(self: Node) -> None:
    tasks = [t for t in self._tasks if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    for peer in list(self._peers.values()):
        await peer.close()
    await self._listener.stop()


def _require_store(self: Node) -> None:
    """Refuse new work once the store failed (see :meth:`_on_store_failure`)."""
    if self.store_failure is not None:
        raise StoreUnavailable(self.store_failure)


def _networks(self: Node) -> tuple[bytes, ...]:
    """The chains our init names (BOLT 1: SHOULD set networks to all chains it will gossip or open channels for)."""
    return (self.network.chain_hash,)


async def connect(self: Node, host: str, port: int, node_id: bytes) -> Peer:
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


def _adopt_connection(self: Node, peer: Peer) -> None:
    """An outbound connection: registered at once (callers use it next), then served."""
    assert peer.remote_pubkey is not None
    old = self._peers.get(peer.remote_pubkey)
    self._peers[peer.remote_pubkey] = peer
    if old is not None and old is not peer:
        self._spawn(old.close())
    self._spawn(self._serve(peer))


def _keep_connected(self: Node, node_id: bytes) -> None:
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


async def _serve(self: Node, peer: Peer) -> None:
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
            message: Message | None = received
            # A burst of channel updates hands back the message that ended it: that one goes
            # through every branch here too (an onion message right behind a revoke_and_ack is
            # an onion message, not a channel message for an unknown channel).
            while message is not None:
                current, message = message, None
                if isinstance(current, Error):  # not a WireMessage: handled here only
                    await self._on_error_message(peer, current)
                    continue
                if not isinstance(current, WireMessage):  # init, warning, ping, pong: the peer layer's
                    continue
                if current.TYPE in GOSSIP_TYPES:
                    self.gossip.receive(peer, encode_message(current))  # came before the sink was set
                    continue
                if isinstance(current, OnionMessage):  # never an error to the peer: dropped or not
                    await self.onion_messages.receive(peer, current)
                    continue
                try:
                    if isinstance(current, _UPDATES):  # a burst of these shares one store commit
                        message = await self._handle_burst(peer, current)
                    else:
                        await self._handle(peer, current)
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
        try:
            await peer.close()
        finally:  # even when this task is cancelled while it closes (the node halting on a store failure)
            self._on_disconnected(peer)


async def _handle_burst(self: Node, peer: Peer, first: WireMessage) -> Message | None:
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


async def _send_error(self: Node, peer: Peer, channel_id: bytes, reason: str) -> None:
    with contextlib.suppress(UsageError, ConnectionError, OSError):
        await peer.send(Error(channel_id, reason.encode()))
    await peer.close()


async def _on_connected(self: Node, peer: Peer) -> None:
    """BOLT 2: on reconnection, every channel with this peer starts with channel_reestablish."""
    for cid, node_id in list(self._channel_node.items()):
        if node_id != peer.remote_pubkey or cid not in self.channels:
            continue
        channel = self.channels[cid]
        self._channel_peer[cid] = peer
        self._reestablished.discard(cid)
        self._forget_uncommitted(channel)
        await self._send(peer, [channel.reestablish_message()])
    await self._on_connected_recovering(peer)
    if self.async_lsp is not None:  # a registered client back online: its mailbox
        self._spawn(self.asyncpay.deliver_mailbox(peer))


def _on_disconnected(self: Node, peer: Peer) -> None:
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


def _forget_uncommitted(self: Node, channel: Channel) -> None:
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


async def _handle(self: Node, peer: Peer, message: WireMessage) -> None:
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


async def _on_reestablish(self: Node, peer: Peer, message: ChannelReestablish) -> None:
    cid = message.channel_id
    if cid in self._recovering and cid not in self.channels:
        await self._on_reestablish_recovering(peer, cid)
        return
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
    await self.fee_follower.follow(cid)  # the estimate may have moved while the peer was away


async def _on_protocol_error(self: Node, peer: Peer, exc: PeerProtocolError) -> None:
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
        stored = self.store.channel(cid)  # the state machine may have moved before it refused:
        if stored is not None:  # close from the last committed state, which both sides signed
            self.channels[cid] = channel_from_record(stored.state, stored.remote_commitments,
                                                     self._derive_secrets)
        # Broadcast first, then tell the peer: the error makes it broadcast its own commitment,
        # and ours (whose outputs we know without waiting for the peer's) should be the one seen first.
        try:
            await self.force_close_channel(cid, exc.reason)  # sends the error to the channel's peer
        except LightspeedError:
            await self._send_error(peer, cid, exc.reason)
        else:
            await peer.close()
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


async def _on_error_message(self: Node, peer: Peer, message: Error) -> None:
    """BOLT 1: an error naming one of our channels with this peer fails that channel."""
    cid = message.channel_id
    text = "".join(c if c.isprintable() else "?" for c in message.data.decode(errors="replace"))[:300]
    self._fail_openings(peer, f"the peer refused it: {text or 'no reason given'}", cid)
    if cid in self.channels and self._channel_node.get(cid) == peer.remote_pubkey:
        with contextlib.suppress(LightspeedError):
            await self.force_close_channel(cid, "the peer failed the channel")
