"""Opening channels (BOLT 2 open_channel .. channel_ready), as funder or fundee, and the funding watch.

A part of :class:`~lightspeed.node.node.Node` (its methods, bound onto the class there). The
protocol checks are :mod:`lightspeed.channel.establish`'s; this module keeps the exchange going:
the messages so far (:class:`_Opening`), the secrets and config of the new channel, the funding
broadcast, and channel_ready once the funding is deep enough.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.bitcoin.tx import Transaction, TxOut
from lightspeed.channel.commitment import ChannelBasepoints
from lightspeed.channel.establish import (
    ChannelType,
    check_accept_channel,
    check_open_channel,
    choose_channel_type,
    implied_channel_type,
)
from lightspeed.channel.scripts import funding_script
from lightspeed.channel.state import (
    Channel,
    ChannelConfig,
    LocalSecrets,
    channel_id_from_funding,
)
from lightspeed.codec.features import Features
from lightspeed.codec.generated import (
    AcceptChannel,
    ChannelReady,
    FundingCreated,
    FundingSigned,
    OpenChannel,
)
from lightspeed.codec.messages import make_message
from lightspeed.errors import (
    ChannelOpenFailed,
    PeerProtocolError,
    UsageError,
)
from lightspeed.node.keys import new_key_id
from lightspeed.node.peer import Peer

if TYPE_CHECKING:
    from lightspeed.node.node import Node


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


def _funding_what(channel_id: bytes) -> str:
    return f"funding of channel {channel_id.hex()}"


def _new_secrets(self: Node) -> tuple[int, LocalSecrets]:
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


def _config(self: Node, channel_id: bytes, funding: Transaction, funder: bool, local: OpenChannel | AcceptChannel,
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


async def open_channel(self: Node, node_id: bytes, funding_sat: int, push_msat: int = 0) -> bytes:
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


async def _remote_features(self: Node, peer: Peer) -> Features:
    """The peer's init features (both fields combined)."""
    return (await peer.connected()).remote_init.all_features


async def _on_open(self: Node, peer: Peer, message: OpenChannel) -> None:
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


async def _on_accept(self: Node, message: AcceptChannel) -> None:
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


def _adopt(self: Node, channel: Channel, peer: Peer, key_index: int, funding: Transaction | None = None) -> None:
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
    self._backup_channel_added(channel, peer.remote_pubkey, key_index)  # before the funding can be broadcast


async def _on_funding_created(self: Node, message: FundingCreated) -> None:
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


async def _on_funding_signed(self: Node, message: FundingSigned) -> None:
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


def _on_channel_ready(self: Node, peer: Peer, message: ChannelReady) -> None:
    channel = self.channels[message.channel_id]
    if self._channel_peer.get(message.channel_id) is not peer:
        raise PeerProtocolError("channel_ready for a channel with another peer", message.channel_id)
    channel.receive_channel_ready(message)
    self._mark_ready(message.channel_id, "received")
    with self.store.transaction():
        self._save(channel)


def _mark_ready(self: Node, channel_id: bytes, how: str) -> None:
    """BOLT 2: updates may flow only once channel_ready was both sent and received."""
    marks = self._ready_marks.setdefault(channel_id, set())
    marks.add(how)
    if marks == {"sent", "received"} and channel_id in self._reestablished:
        self._ready.setdefault(channel_id, asyncio.Event()).set()


def _funding_depth_reached(self: Node, channel: Channel) -> bool:
    """BOLT 2 (channel_ready): MUST wait until the funding transaction has reached minimum_depth.

    That is accept_channel's minimum_depth, for the funder and the accepter alike: the
    accepter asked for it (the funder's own setting only applies when it accepts).
    """
    depth = channel.config.minimum_depth
    if depth is None:  # a channel stored before the agreed depth was kept
        depth = self.channel_settings.minimum_depth
    found = self.chain.get_transaction(channel.config.funding_txid)
    return found is not None and found[1] >= depth


def _watch_funding(self: Node, channel_id: bytes, txid: bytes) -> None:
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


def _fail_openings(self: Node, peer: Peer, reason: str, channel_id: bytes | None = None) -> None:
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
