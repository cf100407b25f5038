"""BOLT 2 update bookkeeping: which HTLC changes are in which commitment, for both sides.

Theory of operation. Each side has its own commitment transaction and numbers
it (``ctn``). An update (add, fulfill, fail) proposed by one side enters the
two commitments at different moments (BOLT 2, "Committing Updates So Far"):

* a ``commitment_signed`` from X signs Y's next commitment; it covers every
  update X has proposed, and every update Y proposed that X has already
  acknowledged with a ``revoke_and_ack``;
* the ``revoke_and_ack`` that answers it acknowledges everything the received
  commitment contained.

So our own update goes into the remote commitment when we sign, and into our
own commitment when the remote signs after acknowledging it; a remote update
goes into our commitment when the remote signs, and into the remote's when we
sign after acknowledging it. The log records, for every update, the ``ctn`` of
each commitment that first contains it; any commitment's HTLC set and
balances are then a pure function of the log. This is the model Electrum's
``lnhtlc.py`` uses (mirrored ``send_*``/``recv_*`` operations), written anew.

Pure and sans-IO: methods mutate the log in memory and return values; the
channel state machine decides what to persist and send.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from lightspeed.channel.record_json import json_array
from lightspeed.errors import PeerProtocolError, UsageError


class Side(Enum):
    LOCAL = "local"
    REMOTE = "remote"

    # Members are singletons compared by identity, so identity hashing agrees with equality.
    # Enum's own __hash__ is a Python function (hash of the name): the views key dicts by
    # Side thousands of times per payment, and that call was the top CPU cost per payment.
    __hash__ = object.__hash__

    @property
    def other(self) -> Side:
        return Side.REMOTE if self is Side.LOCAL else Side.LOCAL


class Removal(Enum):
    FULFILL = "fulfill"
    FAIL = "fail"

    __hash__ = object.__hash__  # as for Side: identity equality, C-level hash


@dataclass(frozen=True)
class LoggedHtlc:
    offerer: Side
    htlc_id: int
    amount_msat: int
    payment_hash: bytes
    cltv_expiry: int


def _htlc_order(htlc: LoggedHtlc) -> tuple[bool, int]:
    """Local offers first, then remote ones, each by id (the order of ``Side.value``: "local" < "remote").

    A bool, not ``offerer.value``: the Enum ``value`` property is a Python call per comparison key.
    """
    return htlc.offerer is Side.REMOTE, htlc.htlc_id


@dataclass
class _Update:
    proposer: Side
    htlc: LoggedHtlc | None  # None: a fee update
    removal: Removal | None  # None: this update adds the HTLC (or changes the fee)
    in_commitment: dict[Side, int | None] = field(default_factory=lambda: {Side.LOCAL: None, Side.REMOTE: None})
    feerate_per_kw: int | None = None  # set on update_fee entries
    # The entry's JSON text in the store record, kept between saves. Only ``in_commitment`` ever
    # changes after creation, and only through enter(), which drops the text.
    json_memo: str | None = field(default=None, compare=False, repr=False)

    def enter(self, owner: Side, ctn: int) -> None:
        """The update is first in ``owner``'s commitment number ``ctn``."""
        self.in_commitment[owner] = ctn
        self.json_memo = None


@dataclass(frozen=True)
class CommitmentView:
    """One commitment's content, from the point of view of its ``owner``."""

    owner: Side
    ctn: int
    to_local_msat: int  # the owner's balance
    to_remote_msat: int  # the other side's balance
    htlcs: tuple[LoggedHtlc, ...]
    feerate_per_kw: int


class HtlcLog:
    """The HTLC update log of one channel, kept by one side (see the module docstring)."""

    def __init__(self, local_msat: int, remote_msat: int, feerate_per_kw: int = 253) -> None:
        if local_msat < 0 or remote_msat < 0:
            raise UsageError("balances cannot be negative")
        self._initial_feerate = feerate_per_kw
        self._initial = {Side.LOCAL: local_msat, Side.REMOTE: remote_msat}
        self._total_msat = local_msat + remote_msat
        # Views of commitments older than this were compacted away (see _compact).
        self.oldest_view = {Side.LOCAL: 0, Side.REMOTE: 0}
        self.ctn = {Side.LOCAL: 0, Side.REMOTE: 0}
        self.revoked = {Side.LOCAL: -1, Side.REMOTE: -1}  # highest revoked commitment number per owner
        self._updates: list[_Update] = []
        self._adds: dict[tuple[Side, int], _Update] = {}
        self._next_id = {Side.LOCAL: 0, Side.REMOTE: 0}
        self._awaiting_revoke = False  # we signed the remote's next commitment; it must revoke
        self._unacked_remote_commitment = False  # the remote signed ours; we must revoke
        # Views computed since the last change, by (owner, ctn, pending): a node asks for the same
        # few views many times per step (limits, records, signing). Every method that changes the
        # log calls _changed(), which empties it, or says why the views it keeps are still right;
        # the views are frozen, so sharing them is safe.
        self._views: dict[tuple[Side, int, bool], CommitmentView] = {}

    def _changed(self) -> None:
        self._views.clear()

    def _added_to_views(self, htlc: LoggedHtlc) -> None:
        """The kept views after a new uncommitted add (the last update), instead of emptying them.

        In :meth:`commitment`, an update no commitment holds yet counts only in pending views,
        and only if it is an add: there it takes the amount from the offerer's balance and
        puts the HTLC among the live ones. So views without ``pending`` do not change, and a
        pending view changes by exactly that; the tests compare with views computed afresh.
        """
        for key, view in self._views.items():
            if not key[2]:
                continue
            to_local, to_remote = view.to_local_msat, view.to_remote_msat
            if htlc.offerer is view.owner:
                to_local -= htlc.amount_msat
            else:
                to_remote -= htlc.amount_msat
            self._views[key] = CommitmentView(view.owner, view.ctn, to_local, to_remote,
                                              tuple(sorted((*view.htlcs, htlc), key=_htlc_order)), view.feerate_per_kw)

    @property
    def awaiting_revoke(self) -> bool:
        """We signed the peer's newest commitment and wait for its revoke_and_ack (no new signature until then)."""
        return self._awaiting_revoke

    @property
    def capacity_msat(self) -> int:
        return self._total_msat

    # -- proposing updates ----------------------------------------------------------------------

    def _add(self, proposer: Side, htlc_id: int, amount_msat: int, payment_hash: bytes, cltv_expiry: int) -> LoggedHtlc:
        if amount_msat <= 0:
            raise UsageError("an HTLC amount must be positive")
        htlc = LoggedHtlc(proposer, htlc_id, amount_msat, payment_hash, cltv_expiry)
        update = _Update(proposer, htlc, None)
        self._updates.append(update)
        self._adds[(proposer, htlc_id)] = update
        self._next_id[proposer] = htlc_id + 1
        self._added_to_views(htlc)
        return htlc

    def send_add(self, amount_msat: int, payment_hash: bytes, cltv_expiry: int) -> LoggedHtlc:
        """Offer an HTLC (update_add_htlc); ids count up from 0 per direction."""
        return self._add(Side.LOCAL, self._next_id[Side.LOCAL], amount_msat, payment_hash, cltv_expiry)

    def recv_add(self, htlc_id: int, amount_msat: int, payment_hash: bytes, cltv_expiry: int) -> LoggedHtlc:
        # BOLT #2: if the id is not exactly one more than the previous one: MUST fail the channel.
        if htlc_id != self._next_id[Side.REMOTE]:
            raise PeerProtocolError(f"update_add_htlc id {htlc_id}, expected {self._next_id[Side.REMOTE]}")
        return self._add(Side.REMOTE, htlc_id, amount_msat, payment_hash, cltv_expiry)

    def _remove(self, proposer: Side, htlc_id: int, removal: Removal) -> LoggedHtlc:
        # The HTLC removed by ``proposer`` was offered by the other side.
        add = self._adds.get((proposer.other, htlc_id))
        if add is None or add.htlc is None:
            raise self._error(proposer, f"no HTLC {htlc_id} offered by the {proposer.other.value} side")
        # BOLT #2: an HTLC can only be removed once it is irrevocably committed in both commitments.
        if not self._irrevocably_committed(add):
            raise self._error(proposer, f"HTLC {htlc_id} is not yet committed in both commitments")
        if any(u.removal is not None and u.htlc is add.htlc for u in self._updates):  # fee updates: htlc None
            raise self._error(proposer, f"HTLC {htlc_id} is already being removed")
        self._updates.append(_Update(proposer, add.htlc, removal))
        # No view changes: a removal counts once a commitment holds it (see _added_to_views).
        return add.htlc

    def _error(self, proposer: Side, reason: str) -> Exception:
        return PeerProtocolError(reason) if proposer is Side.REMOTE else UsageError(reason)

    def _locked_in(self, update: _Update, owner: Side) -> bool:
        """In ``owner``'s commitment, and the commitment before it (without it) revoked."""
        at = update.in_commitment[owner]
        return at is not None and at - 1 <= self.revoked[owner]

    def _acked(self, update: _Update) -> bool:
        """The other side acknowledged it: locked into the commitment the proposer signed first."""
        return self._locked_in(update, update.proposer.other)

    def _irrevocably_committed(self, update: _Update) -> bool:
        return self._locked_in(update, Side.LOCAL) and self._locked_in(update, Side.REMOTE)

    def send_fee(self, feerate_per_kw: int) -> None:
        """update_fee: a new feerate for the commitments, committed like any other update."""
        self._updates.append(_Update(Side.LOCAL, None, None, feerate_per_kw=feerate_per_kw))
        # No view changes: a fee update counts once a commitment holds it (see _added_to_views).

    def recv_fee(self, feerate_per_kw: int) -> None:
        self._updates.append(_Update(Side.REMOTE, None, None, feerate_per_kw=feerate_per_kw))

    def send_fulfill(self, htlc_id: int) -> LoggedHtlc:
        return self._remove(Side.LOCAL, htlc_id, Removal.FULFILL)

    def recv_fulfill(self, htlc_id: int) -> LoggedHtlc:
        return self._remove(Side.REMOTE, htlc_id, Removal.FULFILL)

    def send_fail(self, htlc_id: int) -> LoggedHtlc:
        return self._remove(Side.LOCAL, htlc_id, Removal.FAIL)

    def recv_fail(self, htlc_id: int) -> LoggedHtlc:
        return self._remove(Side.REMOTE, htlc_id, Removal.FAIL)

    # -- committing ---------------------------------------------------------------------------

    def _pending_for(self, owner: Side) -> list[_Update]:
        """Updates that a commitment_signed for ``owner``'s commitment would newly cover."""
        signer = owner.other
        return [u for u in self._updates if u.in_commitment[owner] is None
                and (u.proposer is signer or self._acked(u))]

    def has_changes_to_sign(self) -> bool:
        return bool(self._pending_for(Side.REMOTE))

    def send_commitment(self) -> CommitmentView:
        """We send commitment_signed: the remote's next commitment. Returns what it contains."""
        if self._awaiting_revoke:
            raise UsageError("wait for revoke_and_ack before signing another commitment")
        pending = self._pending_for(Side.REMOTE)
        # BOLT #2: a sending node MUST NOT send a commitment_signed message that does not include any updates.
        if not pending:
            raise UsageError("nothing to sign: no updates since the last commitment_signed")
        self.ctn[Side.REMOTE] += 1
        for update in pending:
            update.enter(Side.REMOTE, self.ctn[Side.REMOTE])
        self._awaiting_revoke = True
        self._changed()
        return self.commitment(Side.REMOTE)

    def recv_commitment(self) -> CommitmentView:
        """The remote's commitment_signed: our next commitment. Returns what it contains."""
        if self._unacked_remote_commitment:
            raise PeerProtocolError("commitment_signed before we revoked the previous commitment")
        pending = self._pending_for(Side.LOCAL)
        if not pending:
            raise PeerProtocolError("commitment_signed without any updates")
        self.ctn[Side.LOCAL] += 1
        for update in pending:
            update.enter(Side.LOCAL, self.ctn[Side.LOCAL])
        self._unacked_remote_commitment = True
        self._changed()
        return self.commitment(Side.LOCAL)

    def send_revoke(self) -> None:
        """We send revoke_and_ack: every remote update in our commitment is now acknowledged."""
        if not self._unacked_remote_commitment:
            raise UsageError("no commitment to revoke for")
        self._unacked_remote_commitment = False
        self.revoked[Side.LOCAL] = self.ctn[Side.LOCAL] - 1
        self._changed()
        self._compact()

    def recv_revoke(self) -> None:
        """The remote's revoke_and_ack: our updates in its commitment are acknowledged."""
        if not self._awaiting_revoke:
            raise PeerProtocolError("revoke_and_ack without a commitment_signed to answer")
        self._awaiting_revoke = False
        self.revoked[Side.REMOTE] = self.ctn[Side.REMOTE] - 1
        self._changed()
        self._compact()

    def _compact(self) -> None:
        """Fold settled history into the base so views stay O(live updates), not O(channel age).

        An HTLC whose add and removal are both irrevocably committed, and a fee update that
        is, affect every current and future commitment the same way: their effect moves
        into the base balances/feerate and the entries go. Views of commitments older than
        the folded updates are no longer available (``oldest_view``); what punishing an old
        commitment needs is kept by the channel when it signs.
        """
        removed = {(u.htlc.offerer, u.htlc.htlc_id): u for u in self._updates
                   if u.htlc is not None and u.removal is not None and self._irrevocably_committed(u)}
        if not removed and not any(u.htlc is None and self._irrevocably_committed(u) for u in self._updates):
            return
        kept: list[_Update] = []
        for update in self._updates:
            htlc = update.htlc
            folded = False
            if htlc is None:
                if self._irrevocably_committed(update):
                    assert update.feerate_per_kw is not None
                    self._initial_feerate = update.feerate_per_kw
                    folded = True
            elif (htlc.offerer, htlc.htlc_id) in removed:
                if update.removal is None:
                    self._initial[htlc.offerer] -= htlc.amount_msat
                    del self._adds[(htlc.offerer, htlc.htlc_id)]
                else:
                    winner = htlc.offerer.other if update.removal is Removal.FULFILL else htlc.offerer
                    self._initial[winner] += htlc.amount_msat
                folded = True
            if folded:
                for side in Side:
                    at = update.in_commitment[side]
                    assert at is not None
                    self.oldest_view[side] = max(self.oldest_view[side], at)
            else:
                kept.append(update)
        self._updates = kept
        self._changed()

    def discard_uncommitted(self) -> list[LoggedHtlc | None]:
        """On disconnection (BOLT 2): forget updates no commitment_signed covered yet.

        The peer's updates that no commitment_signed from it covered, and ours that
        we never signed, are reversed on both sides; ids restart after the last
        kept add. Returns the HTLCs (None for fee updates) of the dropped updates.
        """
        kept: list[_Update] = []
        dropped: list[_Update] = []
        for update in self._updates:
            signed_by_proposer = update.in_commitment[update.proposer.other] is not None
            (kept if signed_by_proposer else dropped).append(update)
        self._updates = kept
        self._changed()
        for update in dropped:
            if update.htlc is not None and update.removal is None:
                del self._adds[(update.htlc.offerer, update.htlc.htlc_id)]
        for side in Side:
            dropped_ids = [u.htlc.htlc_id for u in dropped
                           if u.htlc is not None and u.removal is None and u.htlc.offerer is side]
            if dropped_ids:  # ids restart at the first dropped add (earlier ones may be folded away)
                self._next_id[side] = min(dropped_ids)
        return [u.htlc for u in dropped]

    # -- views --------------------------------------------------------------------------------

    def commitment(self, owner: Side, ctn: int | None = None, pending: bool = False) -> CommitmentView:
        """HTLCs and balances of ``owner``'s commitment number ``ctn`` (default: the latest).

        With ``pending``, HTLCs added but not yet committed count too (removals do not:
        funds are not ours until the removal is committed): the worst case the BOLT 2
        limits (balance, max_accepted_htlcs) must hold for.
        """
        ctn = self.ctn[owner] if ctn is None else ctn
        memo = self._views.get((owner, ctn, pending))
        if memo is not None:
            return memo
        if ctn < self.oldest_view[owner]:
            raise UsageError(f"commitment {ctn} is older than the compacted history ({self.oldest_view[owner]})")
        balance = dict(self._initial)
        feerate = self._initial_feerate
        live: dict[tuple[Side, int], LoggedHtlc] = {}
        for update in self._updates:
            at = update.in_commitment[owner]
            uncommitted_add = pending and at is None and update.removal is None
            if (at is None or at > ctn) and not uncommitted_add:
                continue
            htlc = update.htlc
            if htlc is None:
                assert update.feerate_per_kw is not None
                if at is not None:  # a pending fee change does not apply yet
                    feerate = update.feerate_per_kw
                continue
            key = (htlc.offerer, htlc.htlc_id)
            if update.removal is None:
                balance[htlc.offerer] -= htlc.amount_msat
                live[key] = htlc
            else:
                live.pop(key, None)
                receiver = htlc.offerer.other
                balance[receiver if update.removal is Removal.FULFILL else htlc.offerer] += htlc.amount_msat
        view = CommitmentView(owner, ctn, balance[owner], balance[owner.other],
                              tuple(sorted(live.values(), key=_htlc_order)), feerate)
        self._views[(owner, ctn, pending)] = view
        return view

    def unresolved(self) -> set[LoggedHtlc]:
        """HTLCs in a pending view or in a commitment not yet revoked (of either side).

        What the views say, in one pass without building them: in ``owner``'s pending view an
        HTLC whose add is in the log is live until its removal enters that commitment; in an
        unrevoked older commitment ``c`` (one the views still cover) it is live if its add
        entered by ``c`` and its removal after ``c``. The tests compare with the views.
        """
        removals = {(u.htlc.offerer, u.htlc.htlc_id): u for u in self._updates
                    if u.removal is not None and u.htlc is not None}
        spans = [(owner, max(self.revoked[owner] + 1, self.oldest_view[owner]), self.ctn[owner] - 1)
                 for owner in Side]
        found: set[LoggedHtlc] = set()
        for key, add in self._adds.items():
            htlc = add.htlc
            assert htlc is not None  # _adds holds adds only
            removal = removals.get(key)
            if removal is None:
                found.add(htlc)
                continue
            for owner, lowest, highest in spans:
                removed_at = removal.in_commitment[owner]
                if removed_at is None:
                    found.add(htlc)  # in owner's pending view
                    break
                added_at = add.in_commitment[owner]
                if added_at is not None:
                    first = max(lowest, added_at)
                    if first <= highest and removed_at > first:
                        found.add(htlc)  # in an unrevoked commitment between the add and the removal
                        break
        return found

    def live_offered_ids(self) -> set[int]:
        """Ids of our HTLCs in either side's latest commitment, uncommitted adds included.

        The union of the two ``commitment(owner, pending=True)`` views, without building
        them: every add still in the log is in both, until its removal enters that side's
        commitment. What the store record keeps preimages for.
        """
        local, remote = Side.LOCAL, Side.REMOTE
        removed = {u.htlc.htlc_id for u in self._updates if u.removal is not None and u.htlc is not None
                   and u.htlc.offerer is local and u.in_commitment[local] is not None
                   and u.in_commitment[remote] is not None}
        return {htlc_id for offerer, htlc_id in self._adds if offerer is local and htlc_id not in removed}

    def settled(self) -> list[tuple[LoggedHtlc, Removal]]:  # not yet compacted ones
        """Removals irrevocably committed on both sides (the HTLC is gone for good)."""
        return [(u.htlc, u.removal) for u in self._updates
                if u.htlc is not None and u.removal is not None and self._irrevocably_committed(u)]

    # -- persistence hooks (the store keeps these records; see channel/serialize.py) -----------

    def to_record(self) -> dict[str, object]:
        """Everything the log holds, as JSON-ready values (bytes in hex)."""
        record = self._fields_record()
        record["updates"] = [_update_record(u) for u in self._updates]
        return record

    def to_record_json(self) -> str:
        """``to_record()`` as compact sorted JSON, exactly, without encoding unchanged entries again.

        Saving the channel writes the log at every commitment step; most entries are the same
        as at the last save (see ``_Update.json_memo``), so only new or newly committed ones are
        encoded. The tests compare this with ``dumps(to_record())`` over random walks.
        """
        # Written directly, members in sorted order (the encoder's set-up per call cost more than
        # these few numbers); the tests compare the text with the encoder's over random walks.
        local, remote = Side.LOCAL, Side.REMOTE

        def sides(values: dict[Side, int]) -> str:
            return f"[{int.__repr__(values[local])},{int.__repr__(values[remote])}]"

        updates = json_array([u.json_memo or _update_json(u) for u in self._updates])
        return (f'{{"awaiting_revoke":{"true" if self._awaiting_revoke else "false"},"ctn":{sides(self.ctn)},'
                f'"initial":{sides(self._initial)},"initial_feerate":{int.__repr__(self._initial_feerate)},'
                f'"next_id":{sides(self._next_id)},"oldest_view":{sides(self.oldest_view)},'
                f'"revoked":{sides(self.revoked)},"total_msat":{int.__repr__(self._total_msat)},'
                f'"unacked_remote_commitment":{"true" if self._unacked_remote_commitment else "false"},'
                f'"updates":{updates}}}')

    def _fields_record(self) -> dict[str, object]:
        """The record without its updates: a few numbers, rebuilt at every save."""

        def sides(values: dict[Side, int]) -> list[int]:
            return [values[Side.LOCAL], values[Side.REMOTE]]

        return {
            "initial_feerate": self._initial_feerate,
            "initial": sides(self._initial),
            "total_msat": self._total_msat,
            "oldest_view": sides(self.oldest_view),
            "ctn": sides(self.ctn),
            "revoked": sides(self.revoked),
            "next_id": sides(self._next_id),
            "awaiting_revoke": self._awaiting_revoke,
            "unacked_remote_commitment": self._unacked_remote_commitment,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> HtlcLog:
        """Inverse of :meth:`to_record`; a removal shares its add's HTLC object, as in a live log."""
        r = record
        log = cls(0, 0)

        def sides(key: str) -> dict[Side, int]:
            local, remote = r[key]
            return {Side.LOCAL: int(local), Side.REMOTE: int(remote)}

        log._initial_feerate = int(r["initial_feerate"])
        log._initial = sides("initial")
        log._total_msat = int(r["total_msat"])
        log.oldest_view, log.ctn, log.revoked, log._next_id = (
            sides("oldest_view"), sides("ctn"), sides("revoked"), sides("next_id"))
        log._awaiting_revoke = bool(r["awaiting_revoke"])
        log._unacked_remote_commitment = bool(r["unacked_remote_commitment"])
        for item in r["updates"]:
            fields = item["htlc"]
            htlc: LoggedHtlc | None = None
            removal = None if item["removal"] is None else Removal(item["removal"])
            if fields is not None:
                offerer, htlc_id = Side(fields[0]), int(fields[1])
                if removal is not None:
                    htlc = log._adds[(offerer, htlc_id)].htlc
                else:
                    htlc = LoggedHtlc(offerer, htlc_id, int(fields[2]), bytes.fromhex(fields[3]), int(fields[4]))
            local_at, remote_at = item["in"]
            u = _Update(Side(item["proposer"]), htlc, removal, {Side.LOCAL: local_at, Side.REMOTE: remote_at},
                        item["feerate"])
            log._updates.append(u)
            if htlc is not None and removal is None:
                log._adds[(htlc.offerer, htlc.htlc_id)] = u
        log._changed()
        return log


def _update_record(u: _Update) -> dict[str, object]:
    """One log entry in the store record.

    ``_value_`` is the member's value as a plain attribute (Enum's ``value`` is a property,
    a Python call each time: this ran for every update at every store write).
    """
    htlc = u.htlc
    return {
        "proposer": u.proposer._value_,
        "htlc": None if htlc is None else [htlc.offerer._value_, htlc.htlc_id, htlc.amount_msat,
                                           htlc.payment_hash.hex(), htlc.cltv_expiry],
        "removal": None if u.removal is None else u.removal._value_,
        "in": [u.in_commitment[Side.LOCAL], u.in_commitment[Side.REMOTE]],
        "feerate": u.feerate_per_kw,
    }


def _number(value: int | None) -> str:
    """A number or null as JSON writes it (``int.__repr__`` refuses anything but an int)."""
    return "null" if value is None else int.__repr__(value)


def _update_json(u: _Update) -> str:
    """The JSON of :func:`_update_record`, kept on the entry until its commitment numbers change.

    Written directly rather than through the encoder, whose set-up per call cost more than the
    text: the members in sorted order, the strings (side and removal names, a hash in hex) with
    nothing to escape. The tests compare it with the encoder's text of :func:`_update_record`.
    """
    htlc = u.htlc
    htlc_text = "null" if htlc is None else (
        f'["{htlc.offerer._value_}",{int.__repr__(htlc.htlc_id)},{int.__repr__(htlc.amount_msat)},'
        f'"{htlc.payment_hash.hex()}",{int.__repr__(htlc.cltv_expiry)}]')
    removal = "null" if u.removal is None else f'"{u.removal._value_}"'
    at = u.in_commitment
    text = u.json_memo = (f'{{"feerate":{_number(u.feerate_per_kw)},"htlc":{htlc_text},'
                          f'"in":[{_number(at[Side.LOCAL])},{_number(at[Side.REMOTE])}],'
                          f'"proposer":"{u.proposer._value_}","removal":{removal}}}')
    return text
