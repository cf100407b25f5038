"""A channel in normal operation (BOLT 2): updates, commitment_signed, revoke_and_ack, with real signatures.

Theory of operation: a :class:`Channel` is one side of an open channel. Local
commands (``add_htlc``, ``fulfill_htlc``, ``fail_htlc``, ``sign``) return the
message to send; ``receive(message)`` checks a peer message and returns the
replies (a ``revoke_and_ack`` answers each ``commitment_signed``) and what
happened. Which update is in which commitment is :class:`HtlcLog`'s job; this
class turns those views into BOLT 3 transactions, signs the peer's commitments
and HTLC transactions, verifies the peer's signatures on ours, and keeps the
per-commitment secrets straight (ours from a seed, theirs in a shachain store).

A protocol violation raises :class:`~lightspeed.errors.PeerProtocolError`; the
channel must then be failed (and, with funds at stake, force-closed with
:meth:`Channel.signed_local_commitment`). State is in memory: persisting each
change before its message goes out is the runtime's job (issue 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from lightspeed.bitcoin.sighash import SIGHASH_ALL, verify_der_signature
from lightspeed.bitcoin.tx import Transaction
from lightspeed.channel.commitment import (
    ChannelBasepoints,
    CommitmentKeys,
    CommitmentParams,
    CommitmentTx,
    Htlc,
    build_commitment_tx,
    commitment_fee_sat,
    commitment_sighash,
    obscuring_factor,
    sign_commitment,
    with_funding_witness,
)
from lightspeed.channel.htlc_log import CommitmentView, HtlcLog, LoggedHtlc, Side
from lightspeed.channel.htlc_tx import (
    build_htlc_txs,
    htlc_sighash,
    remote_htlc_sighash_type,
    sign_htlc_tx,
)
from lightspeed.channel.limits import max_offer_msat, offer_problem
from lightspeed.channel.numbered import NumberedBook, numbers_above
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT
from lightspeed.codec.generated import (
    ChannelReady,
    ChannelReestablish,
    CommitmentSigned,
    RevokeAndAck,
    UpdateAddHtlc,
    UpdateFailHtlc,
    UpdateFailMalformedHtlc,
    UpdateFee,
    UpdateFulfillHtlc,
)
from lightspeed.codec.message_base import WireMessage
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.keys import (
    MAX_INDEX,
    derive_privkey,
    per_commitment_secret,
    point_from_secret,
)
from lightspeed.crypto.secp256k1 import compact_to_der, der_to_compact
from lightspeed.crypto.shachain import ShachainError, ShachainStore
from lightspeed.errors import PeerProtocolError, UsageError


class DataLossError(PeerProtocolError):
    """The peer proved our state is older than theirs: never broadcast our commitment now."""


class ChannelFailure(PeerProtocolError):
    """The peer broke a rule for which BOLT 2 says: send an error and fail the channel (force close)."""

_M = TypeVar("_M", bound=WireMessage)

ONION_SIZE = 1366
#: update_add_htlc TLV of the async-payments draft (LDK ``ln/msgs.rs``: ``hold_htlc``), empty: "hold this HTLC".
UPDATE_ADD_HOLD_HTLC = 75537
BADONION = 0x8000
MIN_FEERATE_PER_KW = 253
MAX_FEERATE_PER_KW = 100_000


@dataclass(frozen=True)
class LocalSecrets:
    """Our channel secrets: the five basepoint secrets and the per-commitment seed."""

    funding: bytes
    revocation: bytes
    payment: bytes
    delayed_payment: bytes
    htlc: bytes
    per_commitment_seed: bytes

    def basepoints(self) -> ChannelBasepoints:
        return ChannelBasepoints(*(point_from_secret(s) for s in (
            self.funding, self.revocation, self.payment, self.delayed_payment, self.htlc)))


@dataclass(frozen=True)
class ChannelConfig:
    """What both sides agreed on at opening (open_channel / accept_channel / funding)."""

    channel_id: bytes
    funding_txid: bytes
    funding_output_index: int
    funding_sat: int
    local_is_funder: bool
    anchors: bool
    remote_basepoints: ChannelBasepoints
    local_dust_limit_sat: int
    remote_dust_limit_sat: int
    local_to_self_delay: int  # the delay on our to_local output (set by the peer)
    remote_to_self_delay: int  # the delay on theirs (set by us)
    max_accepted_htlcs: int = 30  # HTLCs we accept from the peer
    remote_max_accepted_htlcs: int = 30  # HTLCs the peer accepts from us
    htlc_minimum_msat: int = 1  # the smallest HTLC we accept
    remote_htlc_minimum_msat: int = 1  # the smallest HTLC the peer accepts
    reserve_from_remote_sat: int = 0  # what the peer must keep in the channel (we chose it)
    reserve_for_local_sat: int = 0  # what we must keep (the peer chose it)
    max_htlc_value_in_flight_msat: int = 2**64 - 1  # from the peer, in total
    remote_max_htlc_value_in_flight_msat: int = 2**64 - 1  # from us, in total
    # accept_channel's minimum_depth: both sides wait for it before channel_ready (None: a record
    # stored before it was kept; the node then uses its own setting, as it did then).
    minimum_depth: int | None = None
    # open_channel's announce_channel bit (None: a record stored before it was kept).
    announce_channel: bool | None = None


def channel_id_from_funding(funding_txid: bytes, output_index: int) -> bytes:
    """BOLT 2: funding_txid XOR funding_output_index (big-endian, in the last two bytes)."""
    return funding_txid[:30] + bytes(a ^ b for a, b in zip(funding_txid[30:], output_index.to_bytes(2, "big"), strict=True))


@dataclass(frozen=True)
class HtlcFulfilled:
    htlc: LoggedHtlc
    preimage: bytes


@dataclass
class Channel:
    """One side of a channel in normal operation (see the module docstring)."""

    config: ChannelConfig
    secrets: LocalSecrets
    local_msat: int
    remote_msat: int
    feerate_per_kw: int
    remote_points: dict[int, bytes]  # the peer's per-commitment points by commitment number (0 and 1 at start)
    log: HtlcLog = field(init=False)
    remote_secrets: ShachainStore = field(default_factory=ShachainStore)
    preimages: dict[int, bytes] = field(default_factory=dict)  # by id of an HTLC we offered
    _remote_signature: bytes | None = None  # the peer's signature on our latest commitment (DER)
    _journal: list[WireMessage] = field(default_factory=list)  # sent messages that may need retransmission
    remote_htlc_signatures: tuple[bytes, ...] = ()  # the peer's (DER + type) on our latest HTLC txs
    # What each remote commitment we signed contained: what punishing it, once revoked, needs.
    signed_remote: dict[int, CommitmentParams] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Both grow with the channel's age; a book knows its highest number (see numbered.py).
        self.remote_points = NumberedBook(self.remote_points)
        self.signed_remote = NumberedBook(self.signed_remote)
        self.log = HtlcLog(self.local_msat, self.remote_msat, self.feerate_per_kw)
        self._basepoints = self.secrets.basepoints()
        funder, fundee = ((self._basepoints, self.config.remote_basepoints) if self.config.local_is_funder
                          else (self.config.remote_basepoints, self._basepoints))
        self.obscuring = obscuring_factor(funder.payment_basepoint, fundee.payment_basepoint)
        self._points: dict[int, bytes] = {}
        self._key_cache: dict[tuple[bool, int], tuple[bytes, CommitmentKeys]] = {}
        # The JSON text (wire encoding in hex) of each journal message, by id, holding the message so
        # the id stays its own: every save writes the journal, and re-encoding it each time was a top cost.
        self._journal_json: dict[int, tuple[WireMessage, str]] = {}
        # The JSON text of the record's parts made from one immutable object, with that object
        # (see channel/serialize.py::_kept_json): encoded again only once the object is replaced.
        self._record_json: dict[str, tuple[object, str]] = {}
        # The preimages' members of that JSON, by HTLC id, with the preimage (serialize.py::_preimages_json).
        self._preimage_json: dict[int, tuple[bytes, str, str]] = {}

    def signed_remote_after(self, ctn: int) -> list[int]:
        """Numbers of the remote commitments we signed above ``ctn`` (those a save has not stored yet)."""
        return numbers_above(self.signed_remote, ctn)

    # -- keys and transactions -----------------------------------------------------------------

    def local_point(self, ctn: int) -> bytes:
        point = self._points.get(ctn)
        if point is None:
            point = self._points[ctn] = point_from_secret(self.local_secret(ctn))
        return point

    def local_secret(self, ctn: int) -> bytes:
        return per_commitment_secret(self.secrets.per_commitment_seed, MAX_INDEX - ctn)

    def _keys(self, local: bool, ctn: int, point: bytes) -> CommitmentKeys:
        """Per-commitment keys, derived once per (side, commitment): 5 EC operations each time otherwise."""
        cached = self._key_cache.get((local, ctn))
        if cached is not None and cached[0] == point:
            return cached[1]
        owner, other = ((self._basepoints, self.config.remote_basepoints) if local
                        else (self.config.remote_basepoints, self._basepoints))
        keys = CommitmentKeys.derive(point, owner, other)
        if len(self._key_cache) > 16:  # only the last few commitments are ever asked for again
            self._key_cache.clear()
            self._points.clear()
        self._key_cache[(local, ctn)] = (point, keys)
        return keys

    def params_for(self, view: CommitmentView) -> CommitmentParams:
        local = view.owner is Side.LOCAL
        point = self.local_point(view.ctn) if local else self.remote_points[view.ctn]
        return CommitmentParams(
            funding_txid=self.config.funding_txid,
            funding_output_index=self.config.funding_output_index,
            funding_sat=self.config.funding_sat,
            commitment_number=view.ctn,
            obscuring_factor=self.obscuring,
            to_self_delay=self.config.local_to_self_delay if local else self.config.remote_to_self_delay,
            dust_limit_sat=self.config.local_dust_limit_sat if local else self.config.remote_dust_limit_sat,
            feerate_per_kw=view.feerate_per_kw,
            to_local_msat=view.to_local_msat,
            to_remote_msat=view.to_remote_msat,
            local_is_funder=self.config.local_is_funder == local,
            anchors=self.config.anchors,
            keys=self._keys(local, view.ctn, point),
            htlcs=tuple(Htlc(h.offerer is view.owner, h.amount_msat, h.payment_hash, h.cltv_expiry)
                        for h in view.htlcs),
        )

    def commitment(self, owner: Side, ctn: int | None = None) -> CommitmentTx:
        return build_commitment_tx(self.params_for(self.log.commitment(owner, ctn)))

    def _htlc_txs(self, commitment: CommitmentTx, params: CommitmentParams) -> tuple[Transaction, ...]:
        return build_htlc_txs(commitment, params.to_self_delay, params.keys.revocation_pubkey,
                              params.keys.local_delayed_pubkey, params.feerate_per_kw, params.anchors)

    def signed_local_commitment(self) -> Transaction:
        """Our latest commitment with both signatures: what a force close broadcasts."""
        if self._remote_signature is None:
            raise UsageError("no signature from the peer on our commitment yet")
        commitment = self.commitment(Side.LOCAL)
        return with_funding_witness(commitment, sign_commitment(commitment, self.secrets.funding),
                                    self._remote_signature)

    # -- funding (BOLT 2 funding_created / funding_signed / channel_ready) --------------------

    def initial_signature(self) -> bytes:
        """Our signature on the peer's first commitment (funding_created or funding_signed)."""
        params = self.params_for(self.log.commitment(Side.REMOTE, 0))
        self.signed_remote[0] = params
        return der_to_compact(sign_commitment(build_commitment_tx(params), self.secrets.funding)[:-1])

    def receive_initial_signature(self, signature: bytes) -> None:
        """Check the peer's signature on our first commitment before the funding can be relied on.

        BOLT #2: the recipient of funding_created / funding_signed MUST fail the channel if the
        signature is incorrect (and the funder MUST NOT broadcast the funding transaction then).
        """
        commitment = self.commitment(Side.LOCAL, 0)
        try:
            der = compact_to_der(signature) + bytes([SIGHASH_ALL])
        except ValueError:
            raise self._fail("initial commitment signature is malformed") from None
        if not verify_der_signature(self.config.remote_basepoints.funding_pubkey, der, commitment_sighash(commitment)):
            raise self._fail("initial commitment signature does not verify")
        self._remote_signature = der

    def channel_ready(self) -> ChannelReady:
        """Our channel_ready: announces the point of our commitment number 1."""
        return ChannelReady(channel_id=self.config.channel_id, second_per_commitment_point=self.local_point(1))

    def receive_channel_ready(self, message: ChannelReady) -> None:
        if message.channel_id != self.config.channel_id:
            raise self._fail("channel_ready for another channel")
        self.remote_points[1] = message.second_per_commitment_point

    # -- local commands -----------------------------------------------------------------------

    def add_htlc(self, amount_msat: int, payment_hash: bytes, cltv_expiry: int,
                 onion: bytes = bytes(ONION_SIZE), path_key: bytes | None = None,
                 hold_htlc: bool = False) -> UpdateAddHtlc:
        """Offer an HTLC; ``path_key`` when relaying inside a blinded path (BOLT 2: MUST set it);
        ``hold_htlc``: ask the peer (our LSP) to hold it for an async payment (TLV 75537, odd: others ignore it)."""
        # BOLT #2: an offering node MUST respect the receiver's htlc_minimum_msat, max_accepted_htlcs
        # and max_htlc_value_in_flight_msat, keep its reserve and (funder) pay the fee: see limits.py.
        problem = offer_problem(self.config, self._views(), Side.LOCAL, amount_msat, fee_spike_buffer=True)
        if problem is not None:
            raise UsageError(f"cannot offer this HTLC: {problem}")
        htlc = self.log.send_add(amount_msat, payment_hash, cltv_expiry)
        tlvs: dict[str | int, object] = {} if path_key is None else {"blinded_path": {"path_key": path_key}}
        if hold_htlc:
            tlvs[UPDATE_ADD_HOLD_HTLC] = b""
        return self._sent(UpdateAddHtlc(channel_id=self.config.channel_id, id=htlc.htlc_id, amount_msat=amount_msat,
                                        payment_hash=payment_hash, cltv_expiry=cltv_expiry, onion_routing_packet=onion,
                                        tlvs=tlvs))

    def _views(self) -> dict[Side, CommitmentView]:
        """Both commitments as the next update would find them (unsigned updates included)."""
        return {owner: self.log.commitment(owner, pending=True) for owner in Side}

    def sendable_msat(self) -> int:
        """The largest HTLC ``add_htlc`` accepts now: what routing and forwarding may count on."""
        return max_offer_msat(self.config, self._views(), Side.LOCAL, fee_spike_buffer=True)

    def receivable_msat(self) -> int:
        """The largest HTLC the peer could offer us now (its balance, reserve, fees and our limits)."""
        return max_offer_msat(self.config, self._views(), Side.REMOTE)

    def offer_problem(self, amount_msat: int) -> str | None:
        """Why ``add_htlc`` would refuse ``amount_msat`` now, or None."""
        return offer_problem(self.config, self._views(), Side.LOCAL, amount_msat, fee_spike_buffer=True)

    def _fee_at_msat(self, feerate_per_kw: int, htlcs: int) -> int:
        """What the funder pays on a commitment: the fee (every HTLC counted) and the two anchors."""
        fee = commitment_fee_sat(feerate_per_kw, htlcs, self.config.anchors)
        return 1000 * (fee + (2 * ANCHOR_OUTPUT_SAT if self.config.anchors else 0))

    def update_fee_problem(self, feerate_per_kw: int) -> str | None:
        """Why :meth:`update_fee` would refuse ``feerate_per_kw`` now, or None (a feerate follower
        searches the highest affordable feerate with it)."""
        if not self.config.local_is_funder:
            return "only the funder sends update_fee"
        if not MIN_FEERATE_PER_KW <= feerate_per_kw <= MAX_FEERATE_PER_KW:
            return f"feerate_per_kw must be within {MIN_FEERATE_PER_KW}..{MAX_FEERATE_PER_KW}"
        # BOLT #2: the funder SHOULD NOT send update_fee it cannot afford on the peer's commitment
        # (the receiver SHOULD fail the channel then); we also keep our reserve.
        view = self.log.commitment(Side.REMOTE, pending=True)
        fee_msat = self._fee_at_msat(feerate_per_kw, len(view.htlcs))
        if fee_msat + self.config.reserve_for_local_sat * 1000 > view.to_remote_msat:
            return (f"feerate_per_kw {feerate_per_kw}: the commitment fee of {fee_msat // 1000} sat would "
                    f"take our balance below the reserve of {self.config.reserve_for_local_sat} sat")
        return None

    def update_fee(self, feerate_per_kw: int) -> UpdateFee:
        """update_fee (BOLT 2: only the funder, who pays the fee, may send it)."""
        problem = self.update_fee_problem(feerate_per_kw)
        if problem is not None:
            raise UsageError(problem)
        self.log.send_fee(feerate_per_kw)
        return self._sent(UpdateFee(channel_id=self.config.channel_id, feerate_per_kw=feerate_per_kw))

    def fulfill_htlc(self, htlc_id: int, preimage: bytes) -> UpdateFulfillHtlc:
        htlc = self._remote_offered(htlc_id)
        if sha256(preimage) != htlc.payment_hash:
            raise UsageError("the preimage does not match the HTLC's payment hash")
        self.log.send_fulfill(htlc_id)
        return self._sent(UpdateFulfillHtlc(channel_id=self.config.channel_id, id=htlc_id, payment_preimage=preimage))

    def fail_htlc(self, htlc_id: int, reason: bytes) -> UpdateFailHtlc:
        self.log.send_fail(htlc_id)
        return self._sent(UpdateFailHtlc(channel_id=self.config.channel_id, id=htlc_id, reason=reason))

    def fail_malformed_htlc(self, htlc_id: int, sha256_of_onion: bytes, failure_code: int) -> UpdateFailMalformedHtlc:
        """The onion could not be parsed: we cannot create an encrypted failure, so say so."""
        if not failure_code & BADONION:
            raise UsageError("update_fail_malformed_htlc needs a BADONION failure code")
        self.log.send_fail(htlc_id)
        return self._sent(UpdateFailMalformedHtlc(channel_id=self.config.channel_id, id=htlc_id,
                                                  sha256_of_onion=sha256_of_onion, failure_code=failure_code))

    def _remote_offered(self, htlc_id: int) -> LoggedHtlc:
        for htlc in self.log.commitment(Side.LOCAL).htlcs:
            if htlc.offerer is Side.REMOTE and htlc.htlc_id == htlc_id:
                return htlc
        raise UsageError(f"no HTLC {htlc_id} from the peer in our commitment")

    def sign(self) -> CommitmentSigned:
        """commitment_signed for the peer's next commitment: our funding and HTLC signatures."""
        view = self.log.send_commitment()
        params = self.params_for(view)
        self.signed_remote[view.ctn] = params
        commitment = build_commitment_tx(params)
        htlc_key = derive_privkey(self.secrets.htlc, self.remote_points[view.ctn])  # ours, on their commitment
        htlc_signatures = tuple(
            der_to_compact(sign_htlc_tx(tx, out, htlc_key, by_owner=False, anchors=params.anchors)[:-1])
            for tx, out in zip(self._htlc_txs(commitment, params), commitment.htlc_outputs, strict=True)
        )
        signature = der_to_compact(sign_commitment(commitment, self.secrets.funding)[:-1])
        return self._sent(CommitmentSigned(channel_id=self.config.channel_id, signature=signature,
                                           htlc_signature=htlc_signatures))

    def _sent(self, message: _M) -> _M:
        self._journal.append(message)
        return message

    # -- reconnection (BOLT 2 "Message Retransmission") ---------------------------------------

    def disconnected(self) -> list[LoggedHtlc | None]:
        """Forget uncommitted updates (ours unsigned, theirs uncovered); returns the dropped HTLCs."""
        last_commit = max((i for i, m in enumerate(self._journal) if isinstance(m, CommitmentSigned)), default=-1)
        self._journal = self._journal[: last_commit + 1] + [
            m for m in self._journal[last_commit + 1 :] if isinstance(m, RevokeAndAck)]
        return self.log.discard_uncommitted()

    def reestablish_message(self) -> ChannelReestablish:
        next_revocation = self.log.revoked[Side.REMOTE] + 1
        last_secret = (bytes(32) if next_revocation == 0
                       else self.remote_secrets.get(MAX_INDEX - self.log.revoked[Side.REMOTE]) or bytes(32))
        return ChannelReestablish(channel_id=self.config.channel_id,
                                  next_commitment_number=self.log.ctn[Side.LOCAL] + 1,
                                  next_revocation_number=next_revocation,
                                  your_last_per_commitment_secret=last_secret,
                                  my_current_per_commitment_point=self.local_point(self.log.ctn[Side.LOCAL]))

    def receive_reestablish(self, message: ChannelReestablish) -> list[WireMessage]:
        """The messages to retransmit, in their original order; raises on a mismatch or data loss."""
        if message.channel_id != self.config.channel_id:
            raise self._fail("channel_reestablish for another channel")
        revoked = self.log.revoked[Side.LOCAL]
        expected_secret = bytes(32) if message.next_revocation_number == 0 else self.local_secret(message.next_revocation_number - 1)
        if message.next_revocation_number > revoked + 1:
            if message.your_last_per_commitment_secret == expected_secret:
                # BOLT #2: the peer proves it saw revocations we do not remember: we lost data.
                # MUST NOT broadcast our commitment transaction.
                raise DataLossError("the peer is ahead of us: our channel state is outdated", self.config.channel_id)
            raise self._fail("next_revocation_number is ahead and unproven")
        if message.your_last_per_commitment_secret != expected_secret:
            raise self._fail("your_last_per_commitment_secret does not match")
        signed = self.log.ctn[Side.REMOTE]
        resend_commit = False
        if message.next_commitment_number == signed and self.log.awaiting_revoke:
            resend_commit = True  # BOLT #2: MUST reuse the same commitment number: retransmit it
        elif message.next_commitment_number != signed + 1:
            raise self._fail(f"next_commitment_number {message.next_commitment_number}, expected {signed + 1}")
        resend_revoke = message.next_revocation_number == revoked and revoked >= 0
        if message.next_revocation_number not in (revoked, revoked + 1):
            raise self._fail(f"next_revocation_number {message.next_revocation_number}, expected {revoked + 1}")
        out: list[WireMessage] = []
        last_commit = max((i for i, m in enumerate(self._journal) if isinstance(m, CommitmentSigned)), default=-1)
        for i, m in enumerate(self._journal):
            if isinstance(m, RevokeAndAck):
                if resend_revoke and m is [r for r in self._journal if isinstance(r, RevokeAndAck)][-1]:
                    out.append(m)
            elif resend_commit and i <= last_commit:
                out.append(m)
        return out

    # -- peer messages ------------------------------------------------------------------------

    def receive(self, message: WireMessage) -> tuple[list[WireMessage], list[HtlcFulfilled]]:
        """Apply a peer message; returns (messages to send back, fulfilled HTLCs we offered)."""
        if getattr(message, "channel_id", None) != self.config.channel_id:
            raise PeerProtocolError("message for another channel", self.config.channel_id)
        if isinstance(message, UpdateAddHtlc):
            self._receive_add(message)
        elif isinstance(message, UpdateFulfillHtlc):
            return [], [self._receive_fulfill(message)]
        elif isinstance(message, UpdateFailHtlc):
            self.log.recv_fail(message.id)
        elif isinstance(message, UpdateFailMalformedHtlc):
            # BOLT #2: if the BADONION bit in failure_code is not set for update_fail_malformed_htlc:
            # MUST send a warning and close the connection, or send an error and fail the channel.
            if not message.failure_code & BADONION:
                raise self._fail("update_fail_malformed_htlc without the BADONION bit")
            self.log.recv_fail(message.id)
        elif isinstance(message, UpdateFee):
            # BOLT #2: if the sender is not responsible for paying the Bitcoin fee: MUST fail the channel.
            if self.config.local_is_funder:
                raise self._fail("update_fee from the node that does not pay the fee")
            # BOLT #2: if the update_fee is too low for timely processing, or is unreasonably large:
            # MUST send a warning and close the connection, or send an error and fail the channel.
            if not MIN_FEERATE_PER_KW <= message.feerate_per_kw <= MAX_FEERATE_PER_KW:
                raise self._fail(f"feerate_per_kw {message.feerate_per_kw} is out of bounds")
            # BOLT #2: if the sender cannot afford the new fee rate on the receiving node's current
            # commitment transaction: SHOULD send a warning and close the connection, or fail the channel.
            view = self.log.commitment(Side.LOCAL, pending=True)
            if self._fee_at_msat(message.feerate_per_kw, len(view.htlcs)) > view.to_remote_msat:
                raise self._fail(f"update_fee {message.feerate_per_kw}: the funder cannot afford the fee")
            self.log.recv_fee(message.feerate_per_kw)
        elif isinstance(message, CommitmentSigned):
            return [self._receive_commitment(message)], []
        elif isinstance(message, RevokeAndAck):
            self._receive_revoke(message)
        else:
            raise UsageError(f"{message.NAME} is not a normal-operation message")
        return [], []

    def _fail(self, reason: str) -> ChannelFailure:
        return ChannelFailure(reason, self.config.channel_id)

    def _receive_add(self, message: UpdateAddHtlc) -> None:
        # BOLT #2: a receiving node, receiving an amount_msat of 0 or below its htlc_minimum_msat, that
        # the sender cannot afford (reserve and anchors kept), or adding more than its
        # max_accepted_htlcs or max_htlc_value_in_flight_msat: SHOULD send an error and fail the channel.
        problem = offer_problem(self.config, self._views(), Side.REMOTE, message.amount_msat, as_receiver=True)
        if problem is not None:
            raise self._fail(problem)
        # BOLT #2: if the cltv_expiry is greater than or equal to 500000000: SHOULD fail the channel.
        if message.cltv_expiry >= 500_000_000:
            raise self._fail("cltv_expiry is not a block height")
        self.log.recv_add(message.id, message.amount_msat, message.payment_hash, message.cltv_expiry)

    def _receive_fulfill(self, message: UpdateFulfillHtlc) -> HtlcFulfilled:
        htlc = next((h for h in self.log.commitment(Side.LOCAL).htlcs
                     if h.offerer is Side.LOCAL and h.htlc_id == message.id), None)
        if htlc is None:
            raise self._fail(f"update_fulfill_htlc for unknown HTLC {message.id}")
        # BOLT #2: if the payment_preimage value does not SHA256 to the corresponding HTLC
        # payment_hash: MUST send an error and fail the channel.
        if sha256(message.payment_preimage) != htlc.payment_hash:
            raise self._fail("payment_preimage does not match the payment hash")
        self.log.recv_fulfill(message.id)
        self.preimages[message.id] = message.payment_preimage
        return HtlcFulfilled(htlc, message.payment_preimage)

    def _receive_commitment(self, message: CommitmentSigned) -> RevokeAndAck:
        view = self.log.recv_commitment()
        params = self.params_for(view)
        commitment = build_commitment_tx(params)
        remote_funding = self.config.remote_basepoints.funding_pubkey
        try:
            der = compact_to_der(message.signature)
        except ValueError:
            raise self._fail("commitment signature is malformed") from None
        # BOLT #2: if signature is not valid for its local commitment transaction OR non-compliant
        # with LOW-S-standard rule: MUST send a warning and close the connection, or fail the channel.
        if not verify_der_signature(remote_funding, der + bytes([SIGHASH_ALL]), commitment_sighash(commitment)):
            raise self._fail("commitment_signed signature does not verify")
        # BOLT #2: if num_htlcs is not equal to the number of HTLC outputs in the local commitment
        # transaction: MUST fail the channel.
        if len(message.htlc_signature) != len(commitment.htlc_outputs):
            raise self._fail(f"{len(message.htlc_signature)} HTLC signatures for "
                             f"{len(commitment.htlc_outputs)} HTLC outputs")
        sighash_type = remote_htlc_sighash_type(params.anchors)
        for i, (tx, out, sig) in enumerate(zip(self._htlc_txs(commitment, params), commitment.htlc_outputs,
                                               message.htlc_signature, strict=True)):
            try:
                der_htlc = compact_to_der(sig) + bytes([sighash_type])
            except ValueError:
                raise self._fail(f"HTLC signature {i} is malformed") from None
            # BOLT #2: if any htlc_signature is not valid for the corresponding HTLC transaction:
            # MUST send a warning and close the connection, or fail the channel.
            if not verify_der_signature(params.keys.remote_htlc_pubkey, der_htlc, htlc_sighash(tx, out, sighash_type)):
                raise self._fail(f"HTLC signature {i} does not verify")
        self._remote_signature = der + bytes([SIGHASH_ALL])
        self.remote_htlc_signatures = tuple(compact_to_der(sig) + bytes([sighash_type]) for sig in message.htlc_signature)
        # Revoke the previous commitment: reveal its secret, announce the point after next.
        revoked = view.ctn - 1
        self.log.send_revoke()
        return self._sent(RevokeAndAck(channel_id=self.config.channel_id, per_commitment_secret=self.local_secret(revoked),
                                       next_per_commitment_point=self.local_point(view.ctn + 1)))

    def _receive_revoke(self, message: RevokeAndAck) -> None:
        revoked = self.log.ctn[Side.REMOTE] - 1
        # BOLT #2: if the per_commitment_secret was not generated by the protocol in BOLT #3:
        # MUST send an error and fail the channel.
        if point_from_secret(message.per_commitment_secret) != self.remote_points[revoked]:
            raise self._fail("per_commitment_secret does not match the commitment being revoked")
        try:
            self.remote_secrets.insert(MAX_INDEX - revoked, message.per_commitment_secret)
        except ShachainError as exc:
            raise self._fail(f"per_commitment_secret breaks the shachain: {exc}") from None
        self.log.recv_revoke()
        self.remote_points[revoked + 2] = message.next_per_commitment_point
        # Everything up to the acknowledged commitment_signed is delivered for good; keep our last
        # revoke_and_ack (the peer may still ask for it) and what came after the commitment.
        last_commit = max(i for i, m in enumerate(self._journal) if isinstance(m, CommitmentSigned))
        last_revoke = [m for m in self._journal[:last_commit] if isinstance(m, RevokeAndAck)][-1:]
        self._journal = last_revoke + self._journal[last_commit + 1 :]
