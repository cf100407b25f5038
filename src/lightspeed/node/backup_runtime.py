"""The node's side of static channel backups: which channels it lists, and when it rewrites the file.

The entries follow the open channels: one is added when a channel is adopted (funding
signed: from then on funds are in it) and removed when the channel is closed for good (a
mutual close agreed, or its funding spent on chain). A channel we lost data on stays listed
until the peer's commitment is seen: it still has money to recover. Entries come from the
channel's configuration only, so the file never holds a secret (see node.backup).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lightspeed.channel.state import Channel
from lightspeed.node.backup import BackupChannel, encode_backup, write_atomically

if TYPE_CHECKING:
    from lightspeed.node.node import Node

log = logging.getLogger(__name__)


def backup_entry(channel: Channel, peer_id: bytes, key_index: int) -> BackupChannel:
    config = channel.config
    return BackupChannel(
        channel_id=config.channel_id, peer_id=peer_id, host=None, port=None, funding_txid=config.funding_txid,
        funding_output_index=config.funding_output_index, funding_sat=config.funding_sat, key_index=key_index,
        anchors=config.anchors, local_is_funder=config.local_is_funder, local_to_self_delay=config.local_to_self_delay)


def channel_backup(self: Node) -> bytes:
    """The encrypted backup of the channels open now, with each peer's last known address."""
    addresses = self.store.peers()
    entries = []
    for entry in self._backup_entries.values():
        host, port = addresses.get(entry.peer_id, (None, None))
        entries.append(BackupChannel(**{**entry.__dict__, "host": host, "port": port}))
    return encode_backup(self.privkey, entries)


def backup_channel_added(self: Node, channel: Channel, peer_id: bytes, key_index: int | None) -> None:
    if key_index is None:  # fixed test keys or a record with its secrets inline: nothing derivable to back up
        return
    self._backup_entries[channel.config.channel_id] = backup_entry(channel, peer_id, key_index)
    self._write_channel_backup()


def backup_channel_closed(self: Node, channel_id: bytes) -> None:
    if self._backup_entries.pop(channel_id, None) is not None:
        self._write_channel_backup()


def write_channel_backup(self: Node) -> None:
    """Rewrite ``channel_backup_file`` (if the node has one) from the entries: whole, or not at all.

    A failed write (a full disk) is logged, never raised: the channel it follows is already
    committed to the store, and failing the opening or the close half way would put money at
    risk for a file that ``backup export`` can produce again.
    """
    if self.channel_backup_file is None:
        return
    try:
        write_atomically(self.channel_backup_file, self.channel_backup())
        self.channel_backup_error = None
    except OSError as exc:
        self.channel_backup_error = f"{self.channel_backup_file}: {exc.strerror or exc}"
        log.warning("the static channel backup was not written: %s", self.channel_backup_error)
