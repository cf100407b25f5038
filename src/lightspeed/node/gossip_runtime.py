"""BOLT 7 gossip in the running node: the asyncio side of the sans-IO :class:`Gossiper`.

The node hands this runtime its peers (:meth:`GossipRuntime.connected` /
:meth:`~GossipRuntime.disconnected`), every gossip message as wire bytes
(:meth:`~GossipRuntime.receive`) and each ``announcement_signatures``. A ticker then

* announces our public channels once the funding has :data:`ANNOUNCE_DEPTH` confirmations:
  ``announcement_signatures`` both ways, then the ``channel_announcement``, our
  ``channel_update`` (from the node's ForwardingPolicy) and our ``node_announcement``;
* re-signs a newer ``channel_update`` when the policy changes, when the peer has been
  offline for ``disable_after_s`` (disabled) or the channel closes (disabled, then the
  funding spend is reported to the view);
* runs the staggered broadcast and keeps ``Node.graph`` equal to the view's export
  (unless the application handed the node a graph of its own);
* sends the peer of each channel not (yet) announced our ``channel_update`` for it
  (``dont_forward``, the real short channel id) once the channel is ready, again after
  every reconnection and whenever the policy changes: a peer that puts the channel in
  its invoices' route hints must know our fees, or payments through us first fail with
  ``fee_insufficient``. The peer's own update for such a channel is accepted into the
  view (BOLT 7: SHOULD accept channel_updates for its own channels, even if non-public)
  and feeds :meth:`GossipRuntime.route_hints`.

The funding lookup reads the regtest chain: a short channel id names a block, a
transaction position and an output (:meth:`RegtestChain.output_at`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lightspeed.bitcoin.tx import OutPoint
from lightspeed.channel.limits import advertised_htlc_range
from lightspeed.channel.state import ChannelConfig, ChannelFailure
from lightspeed.codec.generated import AnnouncementSignatures, ChannelAnnouncement
from lightspeed.codec.messages import Warning, encode_message
from lightspeed.errors import LightspeedError, PeerProtocolError, UsageError
from lightspeed.gossip import (
    FundingOutput,
    Gossiper,
    GossipStep,
    Outcome,
    announcement_signatures,
    combine_announcement_signatures,
    create_channel_update,
    create_node_announcement,
    direction_of,
    unsigned_channel_announcement,
)
from lightspeed.gossip.addresses import Address
from lightspeed.gossip.create import scid_from_bytes
from lightspeed.invoice.fields import RouteHintHop
from lightspeed.payments.forward import ForwardingPolicy
from lightspeed.routing.graph import ChannelGraph

if TYPE_CHECKING:
    from lightspeed.node.node import Node
    from lightspeed.node.peer import Peer

ANNOUNCE_DEPTH = 6  # BOLT 7: announcement_signatures once the funding has 6 confirmations
TICK_S = 0.05
CHANNEL_UPDATE_TYPE = 258
_SCID_AT = 2 + 64 + 32  # channel_update: type, signature, chain_hash, then short_channel_id


@dataclass
class _Announced:
    """One of our announced channels: what its channel_updates need, even after it closed."""

    scid: int
    peer_id: bytes
    config: ChannelConfig  # the agreed limits our updates' HTLC range must respect
    outpoint: OutPoint
    closed: bool = False


def _split_scid(scid: int) -> tuple[int, int, int]:
    return scid >> 40, (scid >> 16) & 0xFFFFFF, scid & 0xFFFF


class GossipRuntime:
    """One node's gossip: announcing its channels, relaying others', feeding ``Node.graph``."""

    def __init__(self, node: Node, *, interval_s: int = 1, disable_after_s: float = 60.0) -> None:
        self.node = node
        self.gossiper = Gossiper(node.network.chain_hash, self._funding, int(time.time()))
        self.gossiper.broadcaster.interval_s = interval_s
        self.disable_after_s = disable_after_s
        self.alias = node.node_id[:6].hex()
        self.rgb_color = node.node_id[1:4]
        self.address: Address | None = None  # set by start(): announced with node_announcement
        self.outcomes: list[Outcome] = []  # the latest received gossip's fates (logs, tests)
        self._peers: dict[bytes, Peer] = {}
        self._ours: dict[bytes, AnnouncementSignatures] = {}  # channel id -> what we sent
        self._theirs: dict[bytes, AnnouncementSignatures] = {}
        self._announced: dict[bytes, _Announced] = {}  # channel id -> ours, once announced
        self._published: dict[bytes, tuple[ForwardingPolicy, bool]] = {}  # last update's terms
        self._offline_since: dict[bytes, float] = {}
        self._sent_private: dict[bytes, tuple[int, ForwardingPolicy]] = {}  # channel id -> (scid, policy) sent
        self._checked_height = -1  # funding spends are looked for once per block
        self._last_timestamp = 0
        self._exported: ChannelGraph | None = None
        self._graph_stale = False

    # ------------------------------------------------------------------ chain

    def _funding(self, short_channel_id: int) -> FundingOutput | None:
        found = self.node.chain.output_at(*_split_scid(short_channel_id))
        if found is None or found[1]:
            return None  # BOLT 7: the output must exist and be unspent
        return FundingOutput(found[0].script_pubkey, found[0].value_sat)

    def _timestamp(self) -> int:
        """Strictly increasing across everything we sign (a second may hold several updates)."""
        self._last_timestamp = max(int(time.time()), self._last_timestamp + 1)
        return self._last_timestamp

    # ------------------------------------------------------------------ peers and messages

    async def connected(self, peer: Peer) -> None:
        assert peer.remote_pubkey is not None
        remote_init = (await peer.connected()).remote_init
        self._peers[peer.remote_pubkey] = peer
        self._offline_since.pop(peer.remote_pubkey, None)
        self._send(self.gossiper.connected(peer.remote_pubkey, remote_init, int(time.time())))
        for cid, sigs in self._ours.items():  # BOLT 7: retransmit after a reconnection
            if self.node.channel_peer_id(cid) == peer.remote_pubkey and cid not in self._announced:
                self._send_to(peer, [encode_message(sigs)])

    def disconnected(self, peer: Peer) -> None:
        node_id = peer.remote_pubkey
        if node_id is None or self._peers.get(node_id) is not peer:
            return
        del self._peers[node_id]
        self._offline_since[node_id] = time.monotonic()
        for cid in [c for c in self._sent_private if self.node.channel_peer_id(c) == node_id]:
            del self._sent_private[cid]  # sent again after the reconnection
        self.gossiper.disconnected(node_id)

    def receive(self, peer: Peer, raw: bytes) -> None:
        """A gossip message (wire bytes) from ``peer``: verify, store, queue for relay."""
        assert peer.remote_pubkey is not None
        own = False
        if int.from_bytes(raw[:2], "big") == CHANNEL_UPDATE_TYPE and len(raw) >= _SCID_AT + 8:
            own = self._register_own_channel(peer.remote_pubkey, scid_from_bytes(raw[_SCID_AT:_SCID_AT + 8]))
        try:
            step = self.gossiper.receive(peer.remote_pubkey, raw, int(time.time()))
        except LightspeedError as exc:  # no gossip may end the connection's reader task
            step = GossipStep(warnings=[(peer.remote_pubkey, f"gossip refused: {exc}")])
        self.outcomes = (self.outcomes + step.outcomes)[-100:]
        if any(o.accepted for o in step.outcomes) and not own:  # (routing takes our channels from us)
            self._graph_stale = True
        self._send(step)

    def on_announcement_signatures(self, peer: Peer, message: AnnouncementSignatures) -> None:
        """The peer's signatures; ChannelFailure if they are wrong (see :meth:`_try_announce`)."""
        cid = message.channel_id
        if self.node.channel_peer_id(cid) != peer.remote_pubkey:
            raise PeerProtocolError("announcement_signatures for a channel with another peer", cid)
        self._theirs[cid] = message
        self._try_announce(cid)

    # ------------------------------------------------------------------ private channels

    def _register_own_channel(self, peer_id: bytes, scid: int) -> bool:
        """Let the view accept ``peer_id``'s updates for our channel ``scid`` (a private one too).

        Done when the update arrives: gossip skips the inbox, so it may overtake the
        ``channel_ready`` that came before it on the wire. True if ``scid`` is our private channel.
        """
        node = self.node
        for cid, channel in list(node.channels.items()):
            if node.channel_peer_id(cid) == peer_id and node.short_channel_id(cid) == scid:
                self.gossiper.view.add_local_channel(scid, node.node_id, peer_id, channel.config.funding_sat)
                record = self.gossiper.view.store.channel(scid)
                return record is not None and not record.public
        return False

    def _private_update_due(self, cid: bytes) -> tuple[Peer, int] | None:
        """The peer and scid if our update for ``cid`` must go (again) to the peer only."""
        node = self.node
        scid = node.short_channel_id(cid)
        peer = self._peers.get(node.channel_peer_id(cid) or b"")
        # BOLT 7: MUST NOT send a created channel_update before channel_ready has been received.
        if cid in self._announced or scid is None or peer is None or not node._usable(cid):
            return None
        if self._sent_private.get(cid) == (scid, node.forwarding_policy):
            return None
        return peer, scid

    def _send_private_update(self, cid: bytes, peer: Peer, scid: int) -> None:
        """BOLT 7: MAY create a channel_update to communicate the channel parameters to the channel
        peer, even though the channel has not yet been announced: MUST set the short_channel_id to
        either an alias it has received from the peer, or the real short_channel_id; MUST set
        dont_forward."""
        node, policy = self.node, self.node.forwarding_policy
        config = node.channels[cid].config
        # BOLT 7: htlc_minimum_msat: the minimum HTLC value the channel peer will accept;
        # htlc_maximum_msat at most the capacity and the peer's max_htlc_value_in_flight_msat.
        low = max(policy.htlc_minimum_msat, config.remote_htlc_minimum_msat)
        high = min(policy.htlc_maximum_msat, config.funding_sat * 1000, config.remote_max_htlc_value_in_flight_msat)
        self._sent_private[cid] = (scid, policy)
        if low > high:
            return  # no HTLC fits: nothing truthful to announce
        update = create_channel_update(
            node.privkey, chain_hash=node.network.chain_hash, short_channel_id=scid, timestamp=self._timestamp(),
            direction=direction_of(node.node_id, peer.remote_pubkey or b""),
            cltv_expiry_delta=policy.cltv_expiry_delta, htlc_minimum_msat=low, htlc_maximum_msat=high,
            fee_base_msat=policy.fee_base_msat, fee_proportional_millionths=policy.fee_proportional_millionths,
            dont_forward=True)
        self._send_to(peer, [encode_message(update)])

    def route_hints(self) -> list[list[RouteHintHop]]:
        """One single-hop route hint per ready channel not announced, with the peer's fees.

        The fees and CLTV delta are those of the peer's own channel_update for the direction
        towards us; a channel whose peer has sent none is left out (guessed fees would only
        make payments fail with fee_insufficient).
        """
        node, hints = self.node, []
        for cid in list(node.channels):
            scid, peer_id = node.short_channel_id(cid), node.channel_peer_id(cid)
            if cid in self._announced or scid is None or peer_id is None or not node.channel_is_ready(cid):
                continue
            update = self.gossiper.view.store.update(scid, direction_of(peer_id, node.node_id))
            if update is None or update.disabled:
                continue
            hints.append([RouteHintHop(peer_id, scid, update.fee_base_msat, update.fee_proportional_millionths,
                                       update.cltv_expiry_delta)])
        return hints

    # ------------------------------------------------------------------ our channels

    def _unsigned(self, cid: bytes, scid: int) -> ChannelAnnouncement:
        channel = self.node.channels[cid]
        peer_id = self.node.channel_peer_id(cid)
        assert peer_id is not None
        return unsigned_channel_announcement(
            chain_hash=self.node.network.chain_hash, short_channel_id=scid,
            node_id_a=self.node.node_id, node_id_b=peer_id,
            bitcoin_key_a=channel.secrets.basepoints().funding_pubkey,
            bitcoin_key_b=channel.config.remote_basepoints.funding_pubkey,
        )

    def _announceable(self, cid: bytes) -> int | None:
        """The scid of a channel ready to announce: deep enough, ready, peer connected."""
        node = self.node
        # BOLT 7: if the open_channel message has the announce_channel bit set AND a shutdown
        # message has not been sent: ... MUST send announcement_signatures; otherwise: MUST NOT
        # send the announcement_signatures message. The funder decided at opening, for both sides.
        config = node.channels[cid].config
        wanted = config.announce_channel
        if wanted is None:  # a channel stored before the bit was kept: the rule it was opened under
            wanted = node.announce_channels or (cid in self._theirs and not config.local_is_funder)
        if not wanted or cid in node._closings:
            return None
        scid = node.short_channel_id(cid)
        found = node.chain.get_transaction(node.channels[cid].config.funding_txid)
        if scid is None or found is None or found[1] < ANNOUNCE_DEPTH or not node._usable(cid):
            return None
        return scid

    def _offer_signatures(self, cid: bytes) -> None:
        if cid in self._ours:
            return
        scid = self._announceable(cid)
        if scid is None:
            return
        secrets = self.node.channels[cid].secrets
        ours = announcement_signatures(cid, self._unsigned(cid, scid), self.node.privkey, secrets.funding)
        self._ours[cid] = ours
        peer = self._peers.get(self.node.channel_peer_id(cid) or b"")
        if peer is not None:
            self._send_to(peer, [encode_message(ours)])
        try:
            self._try_announce(cid)
        except ChannelFailure as exc:  # their signatures came first and are wrong: fail it from here
            if peer is not None:
                self.node._spawn(self.node._on_protocol_error(peer, exc))

    def _try_announce(self, cid: bytes) -> None:
        """Announce once both signatures are in; ChannelFailure if the peer's are not correct.

        BOLT 7: if the node_signature OR the bitcoin_signature is NOT correct: MAY send a
        warning and close the connection, or send an error and fail the channel. We fail the
        channel: a reconnection would only bring the same signatures again.
        """
        theirs = self._theirs.get(cid)
        if cid in self._announced or theirs is None:
            return
        if cid not in self._ours:
            self._offer_signatures(cid)  # the peer went first: answer once we are deep enough too
            return
        scid = self.node.short_channel_id(cid)
        assert scid is not None
        try:
            signed = combine_announcement_signatures(self._unsigned(cid, scid), self._ours[cid], theirs)
        except (LightspeedError, UsageError) as exc:
            del self._theirs[cid]
            raise ChannelFailure(f"announcement_signatures: {exc}", cid) from None
        now = int(time.time())
        peer_id = self.node.channel_peer_id(cid)
        assert peer_id is not None
        config = self.node.channels[cid].config
        self._announced[cid] = _Announced(scid, peer_id, config,
                                          OutPoint(config.funding_txid, config.funding_output_index))
        self.gossiper.publish(encode_message(signed), now)
        self._publish_update(cid)
        self._publish_node_announcement()

    def _terms(self, cid: bytes) -> tuple[ForwardingPolicy, bool]:
        """The policy and enabled flag our channel_update for ``cid`` should carry now."""
        node, ours = self.node, self._announced[cid]
        offline = self._offline_since.get(ours.peer_id)
        enabled = (not ours.closed and cid in node.channels and cid not in node._closings
                   and (offline is None or time.monotonic() - offline < self.disable_after_s))
        return node.forwarding_policy, enabled

    def _publish_update(self, cid: bytes) -> None:
        node, ours = self.node, self._announced[cid]
        policy, enabled = terms = self._terms(cid)
        # BOLT 7: MUST set htlc_minimum_msat to the minimum HTLC value (in millisatoshi) that the
        # channel peer will accept (its open/accept_channel's), and htlc_maximum_msat to at most
        # the capacity: the same range forwarding over this channel enforces.
        low, high = advertised_htlc_range(ours.config, policy.htlc_minimum_msat, policy.htlc_maximum_msat)
        update = create_channel_update(
            node.privkey, chain_hash=node.network.chain_hash, short_channel_id=ours.scid,
            timestamp=self._timestamp(), direction=direction_of(node.node_id, ours.peer_id),
            cltv_expiry_delta=policy.cltv_expiry_delta, htlc_minimum_msat=low, htlc_maximum_msat=high,
            fee_base_msat=policy.fee_base_msat, fee_proportional_millionths=policy.fee_proportional_millionths,
            disabled=not enabled)
        outcome = self.gossiper.publish(encode_message(update), int(time.time()))
        self._published[cid] = terms  # even if refused (a spent channel): not re-signed every tick
        if outcome.accepted:
            self._graph_stale = True

    def _publish_node_announcement(self) -> None:
        announcement = create_node_announcement(
            self.node.privkey, timestamp=self._timestamp(), alias=self.alias, rgb_color=self.rgb_color,
            addresses=[] if self.address is None else [self.address],
            features=self.node.features.for_context("N").to_bytes())  # BOLT 9: the N-context features
        self.gossiper.publish(encode_message(announcement), int(time.time()))

    def _check_channels(self) -> None:
        """Offer signatures for new channels; re-sign our updates whose terms changed."""
        node = self.node
        for cid in list(node.channels):
            # Our channel_update first: the peer learns our fees as soon as the channel is
            # ready, before (and whether or not) the announcement completes.
            due = self._private_update_due(cid)
            if due is not None:
                self._send_private_update(cid, *due)
            if cid not in self._announced:
                self._offer_signatures(cid)
        for cid, ours in self._announced.items():
            if not ours.closed and node.chain.spending_tx(ours.outpoint) is not None:
                ours.closed = True
            if self._terms(cid) != self._published.get(cid):
                self._publish_update(cid)

    def _check_spends(self) -> None:
        """Once per block: channels of the view whose funding output was spent, and old ones to forget."""
        height = self.node.chain.tip()[0]
        if height == self._checked_height:
            return
        self._checked_height = height
        view = self.gossiper.view
        for record in list(view.store.channels()):
            if record.spent_at is None and self._funding(record.short_channel_id) is None:
                view.funding_spent(record.short_channel_id, height)
                self._graph_stale = True
        if view.forget_spent(height):
            self._graph_stale = True

    # ------------------------------------------------------------------ the ticker

    async def run(self) -> None:
        while True:
            with contextlib.suppress(LightspeedError):
                self._check_channels()
                self._check_spends()
            self._send(self.gossiper.handle_timer(int(time.time())))
            if self._graph_stale:
                self._refresh_graph()
            await asyncio.sleep(TICK_S)

    def _refresh_graph(self) -> None:
        """``Node.graph`` follows the view, unless the application set a graph of its own."""
        self._graph_stale = False
        if self.node.graph is not None and self.node.graph is not self._exported:
            return
        self._exported = self.gossiper.view.channel_graph()
        self.node.graph = self._exported

    def _send(self, step: GossipStep) -> None:
        by_peer: dict[object, list[bytes]] = {}
        for peer_id, raw in step.send:
            by_peer.setdefault(peer_id, []).append(raw)
        for peer_id, reason in step.warnings:
            by_peer.setdefault(peer_id, []).append(encode_message(Warning(bytes(32), reason.encode())))
        for peer_id, messages in by_peer.items():
            peer = self._peers.get(peer_id) if isinstance(peer_id, bytes) else None
            if peer is not None:
                self._send_to(peer, messages)

    def _send_to(self, peer: Peer, messages: list[bytes]) -> None:
        try:
            for raw in messages:
                peer.session.send_raw(raw)
        except UsageError:
            return  # the connection is gone: the peer gets it all again by its filter
        self.node._spawn(_flush(peer))


async def _flush(peer: Peer) -> None:
    with contextlib.suppress(UsageError, ConnectionError, OSError):
        await peer.flush()


