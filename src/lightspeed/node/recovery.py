"""Recovering channels from a static backup (node.backup) after the whole store was lost.

The restored node knows, per channel, only the peer, the funding outpoint, our key id and
the channel type: no balance, no commitment. It must never sign or broadcast anything of the
channel; it asks the peer to close (BOLT 2 option_data_loss_protect) and takes its own
output from the peer's commitment:

* on each connection it sends ``channel_reestablish`` with next_commitment_number 1,
  next_revocation_number 0 and your_last_per_commitment_secret all zeros: the peer sees we
  are behind and fails the channel (it broadcasts its latest commitment); when the peer's
  own reestablish comes back we answer with an ``error`` asking it to close, as a node that
  fell behind does;
* a watcher waits for the funding outpoint's spend and sweeps our to_remote output to the
  wallet (static_remotekey: P2WPKH to our payment basepoint; anchors: the 1-CSV P2WSH, once
  the commitment has a confirmation). The key is derived again from the node key and key id.

A channel is ``recovering`` until its sweep is broadcast (or the peer's commitment holds
nothing for us); it stays in the backup file until then. Then it is written to the store's
closed-channel history (kind ``data_loss``, with the sweep, in one transaction) and leaves the
backup file, so it is listed as closed after any restart, as every other closed channel.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lightspeed.bitcoin.tx import OutPoint, Transaction
from lightspeed.channel import ANCHOR_OUTPUT_SAT
from lightspeed.channel.resolve import Claim, payment_key_claim
from lightspeed.codec.generated import ChannelReestablish
from lightspeed.codec.messages import Error
from lightspeed.crypto.keys import MAX_INDEX, per_commitment_secret, point_from_secret
from lightspeed.errors import LightspeedError, UsageError
from lightspeed.node.backup import BackupChannel
from lightspeed.node.peer import Peer
from lightspeed.store.base import CloseSummary

if TYPE_CHECKING:
    from lightspeed.node.node import Node


@dataclass
class RecoveringChannel:
    entry: BackupChannel
    payment_secret: bytes
    per_commitment_point: bytes  # any valid point: the peer cannot check it against a state we lost
    state: str = "recovering"  # then "closed"
    closing_txid: bytes | None = None
    sweep_txid: bytes | None = None


def restore_from_backup(self: Node, entries: list[BackupChannel]) -> None:
    """Record each channel of the backup as recovering (before ``start``, which dials the peers)."""
    if self.store.channels():
        raise UsageError("--restore-backup: this datadir already has open channels; restore into a new datadir")
    resume_recovery(self, entries)


def resume_recovery(self: Node, entries: list[BackupChannel]) -> int:
    """Recover the channels of ``entries`` the store does not know (open or closed); how many.

    The node's own ``channel.backup`` goes through here at every start: the channels it still
    lists but the store lost are the ones being recovered, so a restart before the sweep
    carries on. A store that knows a channel wins: its state is never replaced by a backup's.
    """
    unknown = [e for e in entries if self.store.channel(e.channel_id) is None and e.channel_id not in self.channels]
    with self.store.transaction():
        for entry in unknown:
            if entry.host is not None and entry.port is not None:
                self.store.put_peer(entry.peer_id, entry.host, entry.port)
    for entry in unknown:
        secrets = self._derive_secrets(entry.key_index)
        self._recovering[entry.channel_id] = RecoveringChannel(
            entry, secrets.payment, point_from_secret(per_commitment_secret(secrets.per_commitment_seed, MAX_INDEX)))
        self._backup_entries[entry.channel_id] = entry  # still listed until the funds are swept
    if unknown:
        self._write_channel_backup()  # durable at once: a crash before start still recovers them
    return len(unknown)


def start_recovery(self: Node) -> None:
    """Dial every peer of a recovering channel and watch the funding outputs."""
    if not self._recovering:
        return
    known = self.store.peers()
    for recovering in self._recovering.values():
        if recovering.entry.peer_id in known:
            self._keep_connected(recovering.entry.peer_id)
    self._spawn(_watch_recovering(self))


async def on_connected_recovering(self: Node, peer: Peer) -> None:
    for cid, recovering in self._recovering.items():
        if recovering.entry.peer_id == peer.remote_pubkey and recovering.state == "recovering":
            with contextlib.suppress(UsageError, ConnectionError, OSError):
                await peer.send(ChannelReestablish(
                    channel_id=cid, next_commitment_number=1, next_revocation_number=0,
                    your_last_per_commitment_secret=bytes(32),
                    my_current_per_commitment_point=recovering.per_commitment_point))


async def on_reestablish_recovering(self: Node, peer: Peer, channel_id: bytes) -> None:
    """The peer's reestablish for a channel we lost: ask it to close (BOLT 2: we fell behind)."""
    with contextlib.suppress(UsageError, ConnectionError, OSError):
        await peer.send(Error(channel_id, b"we lost our channel state (restored from a static backup): "
                                          b"please force close the channel"))


async def _watch_recovering(self: Node) -> None:
    while not self._stopping and any(r.state == "recovering" for r in self._recovering.values()):
        for recovering in list(self._recovering.values()):
            if recovering.state == "recovering":
                with contextlib.suppress(LightspeedError):
                    _try_sweep(self, recovering)
        await asyncio.sleep(0.1)


def _try_sweep(self: Node, recovering: RecoveringChannel) -> None:
    entry = recovering.entry
    spend = self.chain.spending_tx(OutPoint(entry.funding_txid, entry.funding_output_index))
    if spend is None:
        return
    found = self.chain.get_transaction(spend.txid)
    if entry.anchors and (found is None or found[1] < 1):
        return  # the anchors to_remote is 1-CSV: the commitment must confirm first
    claim = payment_key_claim(recovering.payment_secret, entry.anchors, spend,
                              self.wallet.new_key().script_pubkey, self.chain.estimate_feerate_per_kw())
    with self.store.transaction():  # the sweep and the history together: a crash keeps both or neither
        if claim is not None:
            self.broadcaster.keep(claim.tx, f"to_remote sweep of recovered channel {entry.channel_id.hex()}")
        self.store.put_channel(entry.channel_id, entry.peer_id, b"", False)
        self.store.close_channel(entry.channel_id, spend.txid, recovered_summary(entry, spend, claim))
    if claim is not None:
        self.broadcaster.submit(claim.tx, f"to_remote sweep of recovered channel {entry.channel_id.hex()}")
        recovering.sweep_txid = claim.tx.txid
    recovering.closing_txid = spend.txid
    recovering.state = "closed"
    del self._recovering[entry.channel_id]  # listed from the store's history from now on
    self._backup_channel_closed(entry.channel_id)


def recovered_summary(entry: BackupChannel, spend: Transaction, claim: Claim | None) -> CloseSummary:
    """What a recovered channel was when the peer closed it, as far as its commitment shows.

    Our balance is our output in the peer's commitment (none: nothing of ours above dust);
    the peer's is every other output but the anchors (its balance and any HTLCs in flight).
    """
    ours = 0 if claim is None else spend.outputs[claim.tx.inputs[0].prevout.index].value_sat
    theirs = sum(o.value_sat for o in spend.outputs
                 if not (entry.anchors and o.value_sat == ANCHOR_OUTPUT_SAT)) - ours
    return CloseSummary("data_loss", entry.funding_txid, entry.funding_output_index, entry.funding_sat,
                        entry.local_is_funder, ours * 1000, max(theirs, 0) * 1000)
