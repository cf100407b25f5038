"""A funding transaction reorganised out after channel_ready: suspend, wait, or give the channel up.

BOLT 2 has both sides wait for ``minimum_depth`` before channel_ready and says nothing of what
follows if a reorganisation takes that depth back. The funding output is then no longer
settled: the funder could double-spend its inputs and every balance in the channel would be
worth nothing. What Lightspeed does (close to LDK, which fails such a channel, and Core
Lightning, which waits for the funding to come back, and picks the safe half of each):

* **Suspended** while the funding is shallower than ``minimum_depth`` (in the mempool again,
  gone, or mined again in a later block): the channel is not ready (``Node.channel_is_ready``
  is False: no payment and no forward goes out on it), HTLCs the peer adds on it are failed
  rather than forwarded or accepted (the payment they carry may not exist; not yet those inside a
  blinded path, whose failures follow route blinding's own rules), and its short
  channel id is forgotten (it names the old block). The funder broadcasts its funding again
  (a chain that dropped it from its mempool takes it back).
* **Resumed** once the funding is ``minimum_depth`` deep again, under its new short channel id.
* **Gone** when a transaction spending one of the funding's inputs (a double spend) is
  ``minimum_depth`` deep: the funding can never confirm. The channel is closed without any
  on-chain resolution (there is no output to claim), its HTLCs fail, the peer gets an error.
  The funding's inputs are remembered from the first time the watcher sees the transaction,
  since after the double spend no chain shows it any more.

The watcher only reads the chain and returns events; the node applies them
(:func:`on_funding_events`). Nothing is persisted: after a restart the first poll finds the
same state from the chain again.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lightspeed.bitcoin.tx import Transaction
from lightspeed.chain.source import ChainSource
from lightspeed.channel.state import Channel
from lightspeed.codec.messages import Error
from lightspeed.errors import LightspeedError
from lightspeed.node.onchain import close_summary

if TYPE_CHECKING:
    from lightspeed.node.node import Node

log = logging.getLogger("lightspeed.node")

DEFAULT_MINIMUM_DEPTH = 3  # a channel record from before minimum_depth was kept (as node.queries)
FUNDING_RECHECK_S = 1.0  # between blocks too: an Electrum client proves confirmations after the tip moves


@dataclass(frozen=True)
class FundingUnconfirmed:
    """The funding of a ready channel fell below ``minimum_depth``: the channel is suspended."""

    channel_id: bytes
    depth: int  # 0: not in a block any more


@dataclass(frozen=True)
class FundingReconfirmed:
    """The funding is ``minimum_depth`` deep again: the channel can be used."""

    channel_id: bytes


@dataclass(frozen=True)
class FundingDoubleSpent:
    """A transaction spending the funding's input is ``minimum_depth`` deep: the channel is gone."""

    channel_id: bytes
    conflict_txid: bytes


FundingEvent = FundingUnconfirmed | FundingReconfirmed | FundingDoubleSpent


def minimum_depth(channel: Channel) -> int:
    return channel.config.minimum_depth or DEFAULT_MINIMUM_DEPTH


class FundingWatch:
    """Follows the funding depth of ready channels (see the module docstring)."""

    def __init__(self, chain: ChainSource) -> None:
        self.chain = chain
        self.suspended: dict[bytes, int] = {}  # channel id -> funding depth when last polled
        self._funding: dict[bytes, Transaction] = {}  # channel id -> the funding, once seen

    def remember(self, channel_id: bytes, funding: Transaction) -> None:
        """The funding transaction itself (the funder has it from the start)."""
        self._funding[channel_id] = funding

    def funding(self, channel_id: bytes) -> Transaction | None:
        return self._funding.get(channel_id)

    def forget(self, channel_id: bytes) -> None:
        self.suspended.pop(channel_id, None)
        self._funding.pop(channel_id, None)

    def poll(self, ready: Mapping[bytes, Channel]) -> list[FundingEvent]:
        """Check every ready channel's funding once; returns what changed."""
        events: list[FundingEvent] = []
        for cid in [c for c in self.suspended if c not in ready]:  # closed meanwhile
            self.forget(cid)
        for cid, channel in ready.items():
            try:
                event = self._check(cid, channel)
            except LightspeedError as exc:  # a busy or unreachable chain: the next poll asks again
                log.debug("funding of channel %s not checked: %s", cid.hex(), exc)
                continue
            if event is not None:
                events.append(event)
        return events

    def _check(self, cid: bytes, channel: Channel) -> FundingEvent | None:
        txid = channel.config.funding_txid
        found = self.chain.get_transaction(txid)
        if found is not None:
            self._funding.setdefault(cid, found[0])
        depth = 0 if found is None else found[1]
        enough = depth >= minimum_depth(channel)
        if cid not in self.suspended:
            if not enough:
                self.suspended[cid] = depth
                return FundingUnconfirmed(cid, depth)
            return None
        self.suspended[cid] = depth
        if enough:
            del self.suspended[cid]
            return FundingReconfirmed(cid)
        if depth == 0:
            conflict = self._double_spend(channel)
            if conflict is not None:
                self.forget(cid)
                return FundingDoubleSpent(cid, conflict)
        return None

    def _double_spend(self, channel: Channel) -> bytes | None:
        """The txid of a ``minimum_depth``-deep transaction spending one of the funding's inputs."""
        funding = self._funding.get(channel.config.channel_id)
        if funding is None:  # never seen (a restart after it vanished): nothing to compare with
            return None
        for txin in funding.inputs:
            spender = self.chain.spending_tx(txin.prevout)
            if spender is None or spender.txid == funding.txid:
                continue
            found = self.chain.get_transaction(spender.txid)
            if found is not None and found[1] >= minimum_depth(channel):
                return spender.txid
        return None


# -- the node's side --------------------------------------------------------------------------------

def ready_channels(node: Node) -> dict[bytes, Channel]:
    """Open channels that exchanged channel_ready (not closing on chain): whose funding to follow."""
    under_resolution = node._onchain.active()
    return {cid: channel for cid, channel in node.channels.items()
            if node._ready_marks.get(cid) == {"sent", "received"} and cid not in under_resolution
            and cid not in node.closed_channels}


def funding_suspended(node: Node, channel_id: bytes) -> bool:
    """The channel's funding was reorganised below ``minimum_depth`` after channel_ready."""
    return channel_id in node._funding_watch.suspended


async def on_funding_events(node: Node, events: list[FundingEvent]) -> None:
    for event in events:
        cid = event.channel_id
        if isinstance(event, FundingUnconfirmed):
            log.warning("channel %s: its funding was reorganised out (depth %d, below minimum_depth): "
                        "suspended until it confirms again", cid.hex(), event.depth)
            _forget_scid(node, cid)
            channel = node.channels.get(cid)
            funding = node._funding_watch.funding(cid)
            if (channel is not None and channel.config.local_is_funder and funding is not None
                    and node.chain.get_transaction(funding.txid) is None):  # not even in the mempool
                node.broadcaster.submit(funding, f"funding of channel {cid.hex()} (again, after a reorganisation)")
        elif isinstance(event, FundingReconfirmed):
            _forget_scid(node, cid)  # mined again: maybe in another block, under another short channel id
            log.info("channel %s: its funding is confirmed again (short channel id %s)", cid.hex(),
                     node.short_channel_id(cid))
        else:
            await _funding_double_spent(node, cid, event.conflict_txid)


def _forget_scid(node: Node, channel_id: bytes) -> None:
    scid = node._scid.pop(channel_id, None)
    if scid is not None:
        node._by_scid.pop(scid, None)


async def _funding_double_spent(node: Node, channel_id: bytes, conflict_txid: bytes) -> None:
    """The funding can never confirm: close the channel (nothing to claim on chain), fail its HTLCs."""
    channel = node.channels.get(channel_id)
    if channel is None:
        return
    log.error("channel %s: its funding %s was double-spent by %s: the channel is gone", channel_id.hex(),
              channel.config.funding_txid[::-1].hex(), conflict_txid[::-1].hex())
    with node.store.transaction():
        node.store.close_channel(channel_id, conflict_txid, close_summary(channel, "funding_double_spent"))
    _forget_scid(node, channel_id)
    node.channels.pop(channel_id, None)
    node._backup_channel_closed(channel_id)
    peer = node._channel_peer.pop(channel_id, None)
    node._reestablished.discard(channel_id)
    found = node.chain.get_transaction(conflict_txid)
    if found is not None:
        node.closed_channels[channel_id] = found[0]
    for htlc_id, payment_hash in list(node._in_flight.get(channel_id, {}).items()):
        await node._onchain_htlc_outcome(channel_id, htlc_id, payment_hash, None)
    for out, incoming in list(node._by_out.items()):
        record = node._incoming.get(incoming)
        if out[0] == channel_id and record is not None:
            await node._onchain_htlc_outcome(channel_id, out[1], record.payment_hash, None)
    if peer is not None:  # BOLT 1: the peer learns the channel failed, and why
        with contextlib.suppress(LightspeedError, ConnectionError, OSError):
            await peer.send(Error(channel_id, b"funding transaction double-spent: the channel is gone"))

