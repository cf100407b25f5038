"""Mutual close: ``shutdown``, then ``closing_signed`` fee negotiation with ``fee_range`` (BOLT 2, legacy).

The closing transaction (BOLT 3 "Closing Transaction") spends the funding
output to each side's shutdown script: version 2, locktime 0, final sequence,
outputs in BIP 69 order, the funder paying the fee, outputs below the dust
limit left out. Negotiation follows the modern method: the funder proposes a
fee and a range; the other side answers with a fee inside both ranges; if it
differs, the funder echoes it. Each side checks the other's signature before
agreeing, and the agreed transaction carries both signatures.
"""

from __future__ import annotations

from dataclasses import dataclass

from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input, verify_der_signature
from lightspeed.bitcoin.tx import SEQUENCE_FINAL, OutPoint, Transaction, TxIn, TxOut
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.scripts import funding_script
from lightspeed.channel.state import Channel
from lightspeed.codec.generated import ClosingSigned, Shutdown
from lightspeed.crypto.secp256k1 import compact_to_der, der_to_compact
from lightspeed.errors import PeerProtocolError, UsageError


def closing_tx(channel: Channel, local_script: bytes, remote_script: bytes, fee_sat: int) -> Transaction:
    """The unsigned closing transaction for ``fee_sat`` (paid by the funder)."""
    view = channel.log.commitment(Side.LOCAL)
    local_sat, remote_sat = view.to_local_msat // 1000, view.to_remote_msat // 1000
    if channel.config.local_is_funder:
        local_sat -= fee_sat
    else:
        remote_sat -= fee_sat
    if min(local_sat, remote_sat) < 0:
        raise UsageError("the closing fee exceeds the funder's balance")
    dust = max(channel.config.local_dust_limit_sat, channel.config.remote_dust_limit_sat)
    outputs = [TxOut(v, s) for v, s in ((local_sat, local_script), (remote_sat, remote_script)) if v >= dust]
    outputs.sort(key=lambda o: (o.value_sat, o.script_pubkey))  # BIP 69
    funding = OutPoint(channel.config.funding_txid, channel.config.funding_output_index)
    return Transaction(2, (TxIn(funding, sequence=SEQUENCE_FINAL),), tuple(outputs), 0)


@dataclass
class ClosingNegotiation:
    """One side's mutual-close negotiation (create it once both ``shutdown`` messages are exchanged)."""

    channel: Channel
    local_script: bytes
    remote_script: bytes
    min_fee_sat: int
    max_fee_sat: int
    last_sent_fee: int | None = None
    agreed: Transaction | None = None

    @classmethod
    def start(cls, channel: Channel, local_script: bytes, remote_script: bytes,
              min_fee_sat: int, max_fee_sat: int) -> ClosingNegotiation:
        # BOLT 2: closing starts once no HTLCs remain and every update is in both commitments.
        log = channel.log
        if log.commitment(Side.LOCAL).htlcs or log.commitment(Side.REMOTE).htlcs or log.has_changes_to_sign():
            raise UsageError("HTLCs or updates are still pending; closing must wait")
        return cls(channel, local_script, remote_script, min_fee_sat, max_fee_sat)

    def _script(self) -> bytes:
        basepoints = self.channel.secrets.basepoints()
        return funding_script(basepoints.funding_pubkey, self.channel.config.remote_basepoints.funding_pubkey)

    def _sighash(self, tx: Transaction) -> bytes:
        return bip143_sighash(tx, 0, self._script(), self.channel.config.funding_sat, SIGHASH_ALL)

    def propose(self, fee_sat: int) -> ClosingSigned:
        """Our closing_signed for ``fee_sat`` with our fee range."""
        if not self.min_fee_sat <= fee_sat <= self.max_fee_sat:
            raise UsageError("the proposed fee is outside our own range")
        tx = closing_tx(self.channel, self.local_script, self.remote_script, fee_sat)
        signature = der_to_compact(sign_input(self.channel.secrets.funding, self._sighash(tx), SIGHASH_ALL)[:-1])
        self.last_sent_fee = fee_sat
        return ClosingSigned(channel_id=self.channel.config.channel_id, fee_satoshis=fee_sat, signature=signature,
                             tlvs={"fee_range": {"min_fee_satoshis": self.min_fee_sat,
                                                 "max_fee_satoshis": self.max_fee_sat}})

    def receive(self, message: ClosingSigned) -> ClosingSigned | None:
        """Check the peer's offer; returns our reply (or None). ``agreed`` is set once both signed one fee."""
        fee = message.fee_satoshis
        tx = closing_tx(self.channel, self.local_script, self.remote_script, fee)
        try:
            their_der = compact_to_der(message.signature) + bytes([SIGHASH_ALL])
        except ValueError:
            raise PeerProtocolError("closing signature is malformed", self.channel.config.channel_id) from None
        # BOLT #2: if the signature is not valid for the closing transaction: MUST fail the channel.
        if not verify_der_signature(self.channel.config.remote_basepoints.funding_pubkey, their_der, self._sighash(tx)):
            raise PeerProtocolError("closing_signed signature does not verify", self.channel.config.channel_id)
        their_range = message.tlvs.get("fee_range")
        low, high = self.min_fee_sat, self.max_fee_sat
        if their_range is not None:
            low, high = max(low, their_range["min_fee_satoshis"]), min(high, their_range["max_fee_satoshis"])
            if low > high:
                raise PeerProtocolError("no overlap between the fee ranges", self.channel.config.channel_id)
        reply = None
        if fee != self.last_sent_fee:
            if self.channel.config.local_is_funder and self.last_sent_fee is not None and not low <= fee <= high:
                # BOLT #2: the funder MUST fail the channel if fee_satoshis is not in the overlap.
                raise PeerProtocolError("fee_satoshis is outside the agreed range", self.channel.config.channel_id)
            if not low <= fee <= high:
                reply = self.propose(min(max(fee, low), high))  # counter inside the overlap
                return reply
            reply = self.propose(fee)  # agree: echo the same fee
        ours = sign_input(self.channel.secrets.funding, self._sighash(tx), SIGHASH_ALL)
        first, second = ours, their_der
        local_key = self.channel.secrets.basepoints().funding_pubkey
        if local_key > self.channel.config.remote_basepoints.funding_pubkey:
            first, second = second, first
        self.agreed = tx.with_witness(0, (b"", first, second, self._script()))
        return reply


def shutdown(channel: Channel, script_pubkey: bytes) -> Shutdown:
    return Shutdown(channel_id=channel.config.channel_id, scriptpubkey=script_pubkey)
