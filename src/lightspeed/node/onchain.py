"""The chain watcher: notices a spent funding output and resolves the channel on chain (BOLT 5).

The runtime calls :meth:`OnchainWatcher.poll` on every new block. For each open
channel it asks the chain whether the funding output is spent; a spend starts a
:class:`Resolution` (the decisions are :mod:`lightspeed.channel.resolve`'s): the
channel is marked closed and the resolution recorded in one store transaction,
then each claim is broadcast as soon as its locks allow, until every claim is
confirmed or moot (its output went to the peer). A revoked commitment is
answered with the penalty transaction on the first poll that sees it.

Restart safety: the record holds only what is not derivable (the spend's txid,
the wallet script we sweep to, the feerate, whether we are done); the claims are
rebuilt from the channel record and the chain, byte for byte, so a restarted
node finds the ones already broadcast by txid and carries on with the rest.

Funds in limbo: until a claim of ours confirms, what it sweeps to the wallet is listed by
:meth:`OnchainWatcher.pending_sweeps` with the height from which the chain accepts it, so a
force-closed balance is never invisible while its delay runs.

Fees: the claims pay their fee from the output they spend, at the chain's
estimate. Under option_anchors our HTLC transactions carry no fee (the peer signed
them SIGHASH_SINGLE|ANYONECANPAY): :mod:`.htlc_bump` adds wallet inputs at a feerate
that rises with the HTLC's deadline, and replaces an unconfirmed version (RBF). Each
version is recorded before its broadcast; the sweep of its output follows its txid.
While an anchor commitment (ours, or the peer's) waits unconfirmed, a CPFP child through our
anchor is broadcast and replaced at a rising feerate
(:class:`~lightspeed.node.fee_bumper.CommitmentBumper`), found again by its spend of our anchor
after a restart. A sweep paying its own fee is replaced at a rising feerate while it waits
(:mod:`.sweep_rbf`); every feerate used is recorded, so a restart rebuilds every version.
Once the commitment confirmed, our anchor on it is swept when worth it, batched into the main
sweep or alone (:meth:`OnchainWatcher._sweep_anchor`, :mod:`lightspeed.channel.anchor_sweep`);
the decision is recorded, so a restart rebuilds the same transactions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from lightspeed.bitcoin.tx import OutPoint, Transaction
from lightspeed.chain.source import ChainSource
from lightspeed.channel.anchor_sweep import (
    ANCHOR_GIVE_UP_BLOCKS,
    ANCHOR_PUBLIC_AFTER_BLOCKS,
    FEERATE_FLOOR_PER_KW,
    our_anchor,
    worth_alone,
    worth_batching,
)
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.resolve import (
    AnchorPlan,
    Claim,
    SpendKind,
    batch_partner,
    claims_for,
    classify_spend,
    penalty_claims,
)
from lightspeed.channel.state import Channel
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import DecodeError, LightspeedError, RejectedTransaction
from lightspeed.node.fee_bumper import Child, CommitmentBumper
from lightspeed.node.htlc_bump import Bump, HtlcFeeBumper, is_zero_fee_htlc, rebase_sweep
from lightspeed.node.sweep_rbf import (
    SWEEP_RBF_AFTER_BLOCKS,
    claim_key,
    next_sweep_feerate,
    sweep_deadline,
    within_cap,
)
from lightspeed.store.base import CloseKind, CloseSummary, Store, StoredChannel

log = logging.getLogger("lightspeed.node")

_CLOSE_KINDS: dict[SpendKind, CloseKind] = {SpendKind.LOCAL: "local", SpendKind.REMOTE: "remote",
                                            SpendKind.REVOKED: "revoked", SpendKind.MUTUAL: "mutual"}


def close_summary(channel: Channel, kind: CloseKind) -> CloseSummary:
    """What the channel was when it closed (listed after a restart without rebuilding it)."""
    view = channel.log.commitment(Side.LOCAL)
    config = channel.config
    return CloseSummary(kind, config.funding_txid, config.funding_output_index, config.funding_sat,
                        config.local_is_funder, view.to_local_msat, view.to_remote_msat)


def backfill_close_summaries(store: Store, load_channel: Callable[[StoredChannel], Channel]) -> int:
    """Summaries for channels closed before they were kept (older stores): once, at start.

    How it closed comes from its resolution record if it has one (a force close), else it
    was a mutual close. A record that cannot be read is left without a summary.
    """
    missing = [c for c in store.closed_channels() if c.summary is None]
    if not missing:
        return 0
    resolutions = store.resolutions()
    done = 0
    with store.transaction():
        for closed in missing:
            stored = store.channel(closed.channel_id)
            try:
                if stored is None:
                    continue
                channel = load_channel(stored)
                raw = resolutions.get(closed.channel_id)
                kind: CloseKind = "mutual"
                if raw is not None:
                    spend_kind = json.loads(raw).get("kind")
                    kind = "data_loss" if spend_kind is None else _CLOSE_KINDS[SpendKind(spend_kind)]
            except (LightspeedError, ValueError, KeyError):
                continue
            store.close_channel(closed.channel_id, closed.closing_txid or bytes(32), close_summary(channel, kind))
            done += 1
    return done


@dataclass(frozen=True)
class PendingSweep:
    """Funds of a closed channel on their way to the wallet: a claim of ours not yet broadcast.

    ``maturity_height`` is the first block that may include the claim, None while the
    transaction it spends is unconfirmed (its relative delay has not started).
    """

    channel_id: bytes
    label: str
    amount_sat: int
    maturity_height: int | None


@dataclass(frozen=True)
class ChannelClosedOnChain:
    """The funding output of ``channel_id`` was spent by ``spend_txid`` (``kind`` says how)."""

    channel_id: bytes
    kind: SpendKind
    spend_txid: bytes


@dataclass(frozen=True)
class HtlcResolvedOnChain:
    """An HTLC ended on chain. For one we ``offered``: ``preimage`` if the peer claimed it
    (our payment succeeded), else None (timed out back to us: the payment failed)."""

    channel_id: bytes
    payment_hash: bytes
    offered: bool
    preimage: bytes | None
    htlc_id: int | None = None  # the channel's id for the HTLC (links a forward to its incoming HTLC)


@dataclass(frozen=True)
class ResolutionFinished:
    """Every claim of ours on ``channel_id`` is confirmed or moot: nothing left to watch."""

    channel_id: bytes


OnchainEvent = ChannelClosedOnChain | HtlcResolvedOnChain | ResolutionFinished


@dataclass
class Resolution:
    """One channel being resolved; ``spend_txid`` is None while we wait for the peer to close."""

    channel_id: bytes
    channel: Channel
    sweep_script: bytes
    feerate_per_kw: int
    spend_txid: bytes | None = None
    kind: SpendKind | None = None
    finished: bool = False
    claims: list[Claim] = field(default_factory=list)
    settled: set[bytes] = field(default_factory=set)  # txids of claims confirmed or moot
    ours: set[bytes] = field(default_factory=set)  # txids of every claim ever planned
    taken: dict[int, Transaction] = field(default_factory=dict)  # revoked outputs the cheater spent
    preimage_hashes: frozenset[bytes] = frozenset()  # the HTLCs to us the claims were planned to claim
    # zero-fee HTLC transactions (by their own txid) and the fee-paying versions of them broadcast
    originals: dict[bytes, Claim] = field(default_factory=dict)
    versions: dict[bytes, Bump] = field(default_factory=dict)  # every version, by its txid (recorded)
    bumps: dict[bytes, Bump] = field(default_factory=dict)  # original txid -> the version to broadcast
    anchor_child: Child | None = None  # the last CPFP child of our commitment this process broadcast
    sweep_feerates: dict[str, list[int]] = field(default_factory=dict)  # claim_key -> feerates of its RBF versions
    sweep_seen: dict[str, int] = field(default_factory=dict)  # claim_key -> height its current version was seen
    # our anchor on the commitment: "" undecided, "batch" (in the main sweep), "alone" (its own claim at
    # anchor_feerate), "spent" (by our CPFP child or a third party), "none" (no anchor, or given up)
    anchor: str = ""
    anchor_feerate: int = 0

    def to_record(self) -> bytes:
        return json.dumps({
            "sweep_script": self.sweep_script.hex(), "feerate_per_kw": self.feerate_per_kw,
            "spend_txid": None if self.spend_txid is None else self.spend_txid.hex(),
            "kind": None if self.kind is None else self.kind.value, "finished": self.finished,
            "bumps": [v.to_json() for v in self.versions.values()],
            "current": {k.hex(): v.tx.txid.hex() for k, v in self.bumps.items()},
            "sweep_feerates": self.sweep_feerates,
            "anchor": self.anchor, "anchor_feerate": self.anchor_feerate,
        }, sort_keys=True).encode()


class OnchainWatcher:
    """Watches funding outputs and drives every :class:`Resolution` (see the module docstring)."""

    def __init__(self, chain: ChainSource, store: Store, new_script: Callable[[], bytes],
                 preimage_for: Callable[[bytes], bytes | None],
                 load_channel: Callable[[StoredChannel], Channel], bumper: HtlcFeeBumper | None = None,
                 commitment_bumper: CommitmentBumper | None = None) -> None:
        self.chain, self.store = chain, store
        self.commitment_bumper = commitment_bumper  # None: a commitment keeps the child it went out with
        self.sweep_rbf = True  # False: sweeps keep the feerate planned at the close (never replaced)
        self.bumper = bumper  # None: zero-fee HTLC transactions go out as signed (a real mempool refuses them)
        self._new_script, self._preimage_for = new_script, preimage_for
        self.resolutions: dict[bytes, Resolution] = {}
        self.errors: dict[bytes, str] = {}  # the last failure per channel (retried at each block)
        for cid, raw in store.resolutions().items():
            stored = store.channel(cid)
            if stored is None:
                raise DecodeError("resolution record", f"channel {cid.hex()} is missing from the store")
            try:
                record = json.loads(raw)
                resolution = Resolution(cid, load_channel(stored), bytes.fromhex(record["sweep_script"]),
                                        int(record["feerate_per_kw"]), finished=bool(record["finished"]))
                spend = record["spend_txid"]
                for raw_bump in record.get("bumps", []):
                    bump = Bump.from_json(raw_bump)
                    resolution.versions[bump.tx.txid] = bump
                resolution.sweep_feerates = {str(k): [int(r) for r in v]
                                             for k, v in record.get("sweep_feerates", {}).items()}
                resolution.anchor = str(record.get("anchor", ""))
                resolution.anchor_feerate = int(record.get("anchor_feerate", 0))
                for original, current in record.get("current", {}).items():
                    resolution.bumps[bytes.fromhex(original)] = resolution.versions[bytes.fromhex(current)]
            except (ValueError, KeyError, TypeError) as exc:
                raise DecodeError("resolution record", f"malformed: {exc!r}") from None
            self.resolutions[cid] = resolution
            if spend is not None:
                found = chain.get_transaction(bytes.fromhex(spend))
                if found is not None:
                    self._plan(resolution, found[0])

    def active(self) -> set[bytes]:
        """Channels under resolution: the node must not use them as open channels."""
        return set(self.resolutions)

    # -- starting a resolution ---------------------------------------------------------------

    def await_peer_close(self, channel: Channel) -> None:
        """We lost data: never broadcast our commitment, wait for the peer's and take to_remote."""
        cid = channel.config.channel_id
        if cid in self.resolutions:
            return
        resolution = Resolution(cid, channel, self._new_script(), self.chain.estimate_feerate_per_kw())
        with self.store.transaction():
            # no longer an open channel (none to resume); the closing transaction is not known yet
            self.store.close_channel(cid, bytes(32), close_summary(channel, "data_loss"))
            self.store.put_resolution(cid, resolution.to_record())
        self.resolutions[cid] = resolution

    def start(self, channel: Channel, spend: Transaction) -> ChannelClosedOnChain:
        """``spend`` spent the funding output: record the resolution, mark the channel closed."""
        cid = channel.config.channel_id
        resolution = self.resolutions.get(cid)
        if resolution is None:
            resolution = Resolution(cid, channel, self._new_script(), self.chain.estimate_feerate_per_kw())
            self.resolutions[cid] = resolution
        self._plan(resolution, spend)
        assert resolution.kind is not None
        with self.store.transaction():
            self.store.close_channel(cid, spend.txid, close_summary(channel, _CLOSE_KINDS[resolution.kind]))
            self.store.put_resolution(cid, resolution.to_record())
        return ChannelClosedOnChain(cid, resolution.kind, spend.txid)

    def _plan(self, resolution: Resolution, spend: Transaction) -> None:
        channel = resolution.channel
        kind, _ = classify_spend(channel, spend)
        resolution.spend_txid, resolution.kind = spend.txid, kind
        preimages = self._preimages(channel, spend)
        resolution.preimage_hashes = frozenset(preimages)
        resolution.claims = claims_for(channel, spend, kind, preimages, resolution.sweep_script,
                                       resolution.feerate_per_kw, self._anchor_plan(resolution))
        resolution.ours.update(c.tx.txid for c in resolution.claims)
        resolution.originals = {c.tx.txid: c for c in resolution.claims if is_zero_fee_htlc(c)}
        resolution.ours.update(resolution.versions)
        self._apply_sweep_feerates(resolution, spend)
        self._apply_bumps(resolution)

    @staticmethod
    def _apply_bumps(resolution: Resolution) -> None:
        """Make each zero-fee HTLC claim the version to broadcast (its original if none), and the
        sweep of its delayed output spend that version."""
        for original_txid, original in resolution.originals.items():
            bump = resolution.bumps.get(original_txid)
            target = original.tx if bump is None else bump.tx
            index = next((i for i, c in enumerate(resolution.claims)
                          if c.tx.txid == original_txid or (c.tx.txid in resolution.versions
                          and resolution.versions[c.tx.txid].original_txid == original_txid)), None)
            if index is None or resolution.claims[index].tx.txid == target.txid:
                continue
            old_txid = resolution.claims[index].tx.txid
            resolution.claims[index] = dataclasses.replace(resolution.claims[index], tx=target)
            for j, child in enumerate(resolution.claims):
                if child.parent_txid == old_txid:
                    sweep = rebase_sweep(resolution.channel, child.tx, target)
                    resolution.claims[j] = dataclasses.replace(child, tx=sweep, parent_txid=target.txid)
                    resolution.ours.add(sweep.txid)

    def _original_of(self, resolution: Resolution, claim: Claim) -> Claim | None:
        """The zero-fee HTLC claim ``claim`` is a version of, if it is one."""
        bump = resolution.versions.get(claim.tx.txid)
        return resolution.originals.get(claim.tx.txid if bump is None else bump.original_txid)

    def _choose_version(self, resolution: Resolution, original: Claim, version: Transaction) -> None:
        """``version`` (the original or a recorded bump) is the one to follow (it is in the chain)."""
        bump = resolution.versions.get(version.txid)
        if bump is None:
            resolution.bumps.pop(original.tx.txid, None)
        else:
            resolution.bumps[original.tx.txid] = bump
        with self.store.transaction():
            self.store.put_resolution(resolution.channel_id, resolution.to_record())
        self._apply_bumps(resolution)

    def _broadcast(self, resolution: Resolution, claim: Claim, tip: int) -> None:
        """Broadcast ``claim``; a zero-fee HTLC transaction in a fee-paying version, bumped
        again (RBF) while it stays unconfirmed and its deadline nears."""
        original = self._original_of(resolution, claim)
        if original is not None and self.bumper is not None:
            current = resolution.bumps.get(original.tx.txid)
            try:
                bump = self.bumper.next_version(resolution.channel, original, current, tip)
            except LightspeedError as exc:  # a claim we cannot fee must not stop the others
                log.warning("%s: no fee bump: %s", original.label, exc)
                bump = None
            if bump is not None:
                resolution.versions[bump.tx.txid] = bump
                resolution.bumps[original.tx.txid] = bump
                resolution.ours.add(bump.tx.txid)
                with self.store.transaction():  # recorded before it goes out: a restart resumes its inputs
                    self.store.put_resolution(resolution.channel_id, resolution.to_record())
                self._apply_bumps(resolution)
                claim = dataclasses.replace(claim, tx=bump.tx)
        with contextlib.suppress(RejectedTransaction):  # tried again at the next block
            self.chain.broadcast(claim.tx)

    def _learn_preimages(self, resolution: Resolution) -> None:
        """Plan again when a preimage became known after the close (a hold invoice settled, the
        outgoing HTLC of a forward fulfilled): the HTLC to us is claimed with it.

        BOLT #5: "if it receives (or already possesses) a payment preimage for an unresolved HTLC
        output that it has been offered [...]: MUST *resolve* the output by spending it". The claims
        already planned come out byte for byte the same (deterministic signatures), so the ones
        broadcast or settled keep their txids.
        """
        if resolution.kind not in (SpendKind.LOCAL, SpendKind.REMOTE) or resolution.spend_txid is None:
            return
        found = self.chain.get_transaction(resolution.spend_txid)
        if found is None:
            return
        if not set(self._preimages(resolution.channel, found[0])) <= resolution.preimage_hashes:
            self._plan(resolution, found[0])

    def _preimages(self, channel: Channel, spend: Transaction) -> dict[bytes, bytes]:
        """Preimages of the HTLCs offered to us that we can claim (what the node would fulfil)."""
        hashes = {h.payment_hash for owner in Side for h in channel.log.commitment(owner).htlcs}
        for params in channel.signed_remote.values():
            hashes.update(h.payment_hash for h in params.htlcs)
        found = {}
        for payment_hash in hashes:
            preimage = self._preimage_for(payment_hash)
            if preimage is not None and sha256(preimage) == payment_hash:
                found[payment_hash] = preimage
        return found

    # -- funds in limbo ----------------------------------------------------------------------

    def pending_sweeps(self) -> list[PendingSweep]:
        """What our unsettled claims will bring to the wallet, and from which height.

        A claim already in the mempool is left out: the wallet counts its output already.
        Only outputs paying our sweep script count (a first-stage HTLC transaction pays a
        delayed output that its own sweep claims later; that sweep is what is listed).
        """
        tip = self.chain.tip()[0]
        pending: list[PendingSweep] = []
        for resolution in self.resolutions.values():
            if resolution.finished or resolution.spend_txid is None:
                continue
            for claim in resolution.claims:
                txid = claim.tx.txid
                amount = sum(o.value_sat for o in claim.tx.outputs if o.script_pubkey == resolution.sweep_script)
                if txid in resolution.settled or amount == 0 or self._confirmations(txid) is not None:
                    continue
                parent = self._confirmations(claim.parent_txid)
                maturity = None
                if parent is not None and parent >= 1:
                    parent_height = tip - parent + 1
                    # BIP 68: csv blocks after the parent's; the absolute lock: a block above locktime.
                    maturity = max(parent_height + claim.csv, claim.tx.locktime + 1)
                pending.append(PendingSweep(resolution.channel_id, claim.label, amount, maturity))
        return pending

    # -- every block -------------------------------------------------------------------------

    def poll(self, open_channels: Mapping[bytes, Channel], closing: Iterable[bytes] = ()) -> list[OnchainEvent]:
        """Detect spent funding outputs, then broadcast what is ready; returns what happened.

        A mutual close of a channel in ``closing`` is left to the closing negotiation until
        it confirms (the last ``closing_signed`` may have been lost with the connection).
        """
        events: list[OnchainEvent] = []
        negotiating = set(closing)
        for cid, channel in list(open_channels.items()):
            try:
                spend = self._funding_spend(channel)
                if spend is None or cid in self.resolutions:
                    continue
                if (cid in negotiating and classify_spend(channel, spend)[0] is SpendKind.MUTUAL
                        and not self._confirmations(spend.txid)):
                    continue  # the negotiation finishes it; once confirmed, it is closed regardless
                events.append(self.start(channel, spend))
            except LightspeedError as exc:  # one broken channel must not stop the others: next block
                self.errors[cid] = str(exc)
        for resolution in list(self.resolutions.values()):
            if resolution.finished:
                continue
            try:
                if resolution.spend_txid is None:  # waiting for the peer's commitment (data loss)
                    spend = self._funding_spend(resolution.channel)
                    if spend is None:
                        continue
                    events.append(self.start(resolution.channel, spend))
                events.extend(self._advance(resolution))
            except LightspeedError as exc:
                self.errors[resolution.channel_id] = str(exc)
        return events

    def _funding_spend(self, channel: Channel) -> Transaction | None:
        outpoint = OutPoint(channel.config.funding_txid, channel.config.funding_output_index)
        return self.chain.spending_tx(outpoint)

    def _confirmations(self, txid: bytes) -> int | None:
        found = self.chain.get_transaction(txid)
        return None if found is None else found[1]

    def _advance(self, resolution: Resolution) -> list[OnchainEvent]:
        """Broadcast every claim that became valid; note the confirmed and the moot ones."""
        assert resolution.spend_txid is not None
        events: list[OnchainEvent] = []
        if resolution.kind is SpendKind.REVOKED:
            self._replan_penalty(resolution)
        else:
            self._learn_preimages(resolution)
        tip = self.chain.tip()[0]
        if (resolution.kind in (SpendKind.LOCAL, SpendKind.REMOTE)
                and self._confirmations(resolution.spend_txid) == 0):
            self._rebump_commitment(resolution, tip)
        self._sweep_anchor(resolution, tip)
        for index, claim in enumerate(list(resolution.claims)):
            claim = resolution.claims[index]  # a bump may have rebased it meanwhile
            txid = claim.tx.txid
            if txid in resolution.settled:
                continue
            confirmations = self._confirmations(txid)
            if confirmations is not None:
                if confirmations >= 1:
                    resolution.settled.add(txid)
                    events.extend(self._outcome(resolution, claim, None))
                elif self._original_of(resolution, claim) is not None:  # waiting in the mempool: RBF?
                    self._broadcast(resolution, claim, tip)
                else:
                    self._refee_sweep(resolution, index, claim, tip)
                continue
            if claim.parent_txid in resolution.settled and self._confirmations(claim.parent_txid) is None:
                resolution.settled.add(txid)  # its parent claim lost the race: nothing to spend
                continue
            rival = self._rival_spend(claim)
            original = self._original_of(resolution, claim)
            if rival is not None and original is not None and (rival.txid in resolution.versions
                                                               or rival.txid == original.tx.txid):
                self._choose_version(resolution, original, rival)  # another version of ours got there first
                continue
            if rival is not None and original is None and rival.txid in resolution.ours:
                resolution.claims[index] = dataclasses.replace(claim, tx=rival)  # an earlier version of this sweep
                continue
            if rival is not None:
                resolution.settled.add(txid)
                events.extend(self._outcome(resolution, claim, rival))
                continue
            parent = self._confirmations(claim.parent_txid)
            if parent is not None and claim.ready(tip, parent):
                self._broadcast(resolution, claim, tip)
        spend_confirmed = (self._confirmations(resolution.spend_txid) or 0) >= 1
        if (spend_confirmed and all(c.tx.txid in resolution.settled for c in resolution.claims)
                and not self._anchor_undecided(resolution)):
            resolution.finished = True
            with self.store.transaction():
                self.store.put_resolution(resolution.channel_id, resolution.to_record())
            events.append(ResolutionFinished(resolution.channel_id))
        return events

    # -- our anchor (channel.anchor_sweep) ---------------------------------------------------

    @staticmethod
    def _anchor_plan(resolution: Resolution) -> AnchorPlan | None:
        if resolution.anchor == "batch":
            return AnchorPlan(batch=True)
        if resolution.anchor == "alone":
            return AnchorPlan(batch=False, feerate_per_kw=resolution.anchor_feerate)
        return None

    @staticmethod
    def _anchor_undecided(resolution: Resolution) -> bool:
        """Our anchor may still be swept: the resolution stays open (polled) until it is decided."""
        return (resolution.anchor == "" and resolution.channel.config.anchors
                and resolution.kind in (SpendKind.LOCAL, SpendKind.REMOTE))

    def _sweep_anchor(self, resolution: Resolution, tip: int) -> None:
        """Once the commitment (ours or the peer's) confirmed: decide how our anchor on it is swept.

        Batched into the main sweep (to_local, to_remote) when that sweep is not out yet and the
        anchor's input is worth it at its feerate, if that sweep can confirm before the 16 blocks
        after which anyone may take the anchor, or alone would not be worth it; else alone when
        that is worth it at the estimate (floored at 1 sat/vbyte); else asked again at the next
        block, until ANCHOR_GIVE_UP_BLOCKS after the confirmation. A batched sweep racing a third
        party after 16 blocks loses only the anchor: a spend of it not ours makes it "spent", and
        the claims are planned again without it.
        """
        if resolution.anchor in ("spent", "none") or resolution.spend_txid is None or resolution.kind is None:
            return
        if resolution.kind not in (SpendKind.LOCAL, SpendKind.REMOTE) or not resolution.channel.config.anchors:
            return
        confirmations = self._confirmations(resolution.spend_txid)
        found = self.chain.get_transaction(resolution.spend_txid)
        if not confirmations or found is None:  # unconfirmed: the anchor may still carry a CPFP child
            return
        spend = found[0]
        index = our_anchor(resolution.channel, spend)
        decided = resolution.anchor
        spender = None if index is None else self.chain.spending_tx(OutPoint(spend.txid, index))
        if index is None:
            resolution.anchor = "none"
        elif spender is not None and spender.txid not in resolution.ours:
            resolution.anchor = "spent"  # our CPFP child, or someone else after 16 blocks
        elif not decided:
            self._choose_anchor_sweep(resolution, tip - confirmations + 1, tip)
        if resolution.anchor == decided:
            return
        log.info("anchor of channel %s: %s", resolution.channel_id.hex(), resolution.anchor)
        with self.store.transaction():  # recorded before any sweep of it goes out
            self.store.put_resolution(resolution.channel_id, resolution.to_record())
        if decided or resolution.anchor in ("batch", "alone"):
            self._plan(resolution, spend)

    def _choose_anchor_sweep(self, resolution: Resolution, confirmed_at: int, tip: int) -> None:
        assert resolution.kind is not None
        estimate = max(self.chain.estimate_feerate_per_kw(), FEERATE_FLOOR_PER_KW)
        label = batch_partner(resolution.kind)
        partner = next((c for c in resolution.claims if c.label == label), None)
        alone = worth_alone(estimate, resolution.sweep_script)
        if partner is not None and partner.tx.txid not in resolution.settled \
                and self._confirmations(partner.tx.txid) is None:
            rates = resolution.sweep_feerates.get(claim_key(partner)) or [resolution.feerate_per_kw]
            soon = partner.csv <= ANCHOR_PUBLIC_AFTER_BLOCKS
            if worth_batching(max(estimate, rates[-1])) and (soon or not alone):
                resolution.anchor = "batch"
                return
        if alone:
            resolution.anchor, resolution.anchor_feerate = "alone", estimate
        elif tip - confirmed_at + 1 >= ANCHOR_GIVE_UP_BLOCKS:
            resolution.anchor = "none"

    # -- RBF of sweeps (node.sweep_rbf) ------------------------------------------------------

    def _refeeable(self, resolution: Resolution, claim: Claim) -> bool:
        """A claim paying its own fee to our sweep script (not a zero-fee HTLC transaction, whose
        versions :mod:`.htlc_bump` makes, nor a first-stage HTLC transaction the peer signed)."""
        return (self._original_of(resolution, claim) is None and claim.label != "anchor"
                and all(o.script_pubkey == resolution.sweep_script for o in claim.tx.outputs))

    def _rebuilt(self, resolution: Resolution, spend: Transaction, feerate: int) -> list[Claim]:
        """Every claim, planned again at ``feerate`` (deterministic: same inputs, other fees)."""
        assert resolution.kind is not None
        if resolution.kind is SpendKind.REVOKED:
            return penalty_claims(resolution.channel, spend, resolution.sweep_script, feerate, resolution.taken)
        return claims_for(resolution.channel, spend, resolution.kind, self._preimages(resolution.channel, spend),
                          resolution.sweep_script, feerate, self._anchor_plan(resolution))

    @staticmethod
    def _same_inputs(claims: list[Claim], claim: Claim) -> Claim | None:
        prevouts = {txin.prevout for txin in claim.tx.inputs}
        return next((c for c in claims if {txin.prevout for txin in c.tx.inputs} == prevouts), None)

    def _apply_sweep_feerates(self, resolution: Resolution, spend: Transaction) -> None:
        """Each sweep with recorded replacements becomes its latest version; every version is ours."""
        rebuilt: dict[int, list[Claim]] = {}
        for index, claim in enumerate(resolution.claims):
            rates = resolution.sweep_feerates.get(claim_key(claim))
            if not rates or not self._refeeable(resolution, claim):
                continue
            for rate in rates:
                if rate not in rebuilt:
                    rebuilt[rate] = self._rebuilt(resolution, spend, rate)
                version = self._same_inputs(rebuilt[rate], claim)
                if version is not None:
                    resolution.ours.add(version.tx.txid)
                    resolution.claims[index] = version

    def _refee_sweep(self, resolution: Resolution, index: int, claim: Claim, tip: int) -> None:
        """``claim`` waits in the mempool: replace it at a higher feerate once it is due (sweep_rbf)."""
        if (not self.sweep_rbf or not self._refeeable(resolution, claim) or resolution.spend_txid is None
                or resolution.kind is None):
            return
        key = claim_key(claim)
        seen = resolution.sweep_seen.setdefault(key, tip)
        if tip - seen < SWEEP_RBF_AFTER_BLOCKS:
            return
        rates = resolution.sweep_feerates.get(key) or [resolution.feerate_per_kw]
        confirmations = self._confirmations(resolution.spend_txid)
        spend_height = tip - confirmations + 1 if confirmations else None
        deadline = sweep_deadline(resolution.channel, claim, resolution.kind, spend_height)
        feerate = next_sweep_feerate(self.chain.estimate_feerate_per_kw(), rates[-1], deadline, tip)
        found = self.chain.get_transaction(resolution.spend_txid)
        if feerate is None or found is None:
            return
        version = self._same_inputs(self._rebuilt(resolution, found[0], feerate), claim)
        if version is None:
            return
        value_in = 0
        for txin in version.tx.inputs:
            parent = self.chain.get_transaction(txin.prevout.txid)
            if parent is None:
                return
            value_in += parent[0].outputs[txin.prevout.index].value_sat
        if not within_cap(value_in, version.tx):
            log.warning("%s of channel %s: no replacement at %d sat/kw, its fee would pass the cap",
                        claim.label, resolution.channel_id.hex(), feerate)
            return
        resolution.sweep_feerates[key] = [*rates, feerate] if key in resolution.sweep_feerates else [feerate]
        resolution.ours.add(version.tx.txid)
        with self.store.transaction():  # recorded before it goes out: a restart rebuilds this version
            self.store.put_resolution(resolution.channel_id, resolution.to_record())
        resolution.claims[index] = version
        resolution.sweep_seen[key] = tip
        try:
            self.chain.broadcast(version.tx)
            log.info("%s of channel %s replaced at %d sat/kw", claim.label, resolution.channel_id.hex(), feerate)
        except RejectedTransaction as exc:  # the earlier version may still confirm; tried again later
            log.warning("%s of channel %s: replacement refused: %s", claim.label, resolution.channel_id.hex(), exc)

    def _rebump_commitment(self, resolution: Resolution, tip: int) -> None:
        """A commitment (ours or the peer's) waits in the mempool: a child through our anchor, or a
        replacement of the last one paying more, if due."""
        if self.commitment_bumper is None or resolution.spend_txid is None:
            return
        found = self.chain.get_transaction(resolution.spend_txid)
        if found is None:
            return
        try:
            owner = Side.LOCAL if resolution.kind is SpendKind.LOCAL else Side.REMOTE
            child = self.commitment_bumper.next_child(resolution.channel, found[0], resolution.anchor_child, tip,
                                                      owner)
            if child is not None:
                self.chain.broadcast(child.tx)
                resolution.anchor_child = child
                log.info("commitment %s of channel %s: CPFP child %s at %d sat/kw", found[0].txid_hex,
                         resolution.channel_id.hex(), child.tx.txid_hex, child.feerate_per_kw)
        except LightspeedError as exc:  # capped, no coins, refused: the claims go on; tried at the next block
            self.errors[resolution.channel_id] = f"commitment re-bump: {exc}"
            log.warning("commitment of channel %s: no re-bump: %s", resolution.channel_id.hex(), exc)

    def _replan_penalty(self, resolution: Resolution) -> None:
        """The cheater raced our penalty with its own HTLC transactions: punish what is left.

        One spent input invalidates the whole penalty transaction, so while it is unconfirmed
        it is rebuilt over the outputs still unspent, plus the revocable outputs of the
        cheater's HTLC transactions (BOLT 5: spend them with the revocation key too).
        """
        assert resolution.spend_txid is not None
        penalties = [c for c in resolution.claims if c.label.startswith("penalty")]
        if any((self._confirmations(c.tx.txid) or 0) >= 1 for c in penalties):
            return
        found = self.chain.get_transaction(resolution.spend_txid)
        if found is None:
            return
        spend = found[0]
        taken = dict(resolution.taken)
        for index in range(len(spend.outputs)):
            spender = self.chain.spending_tx(OutPoint(spend.txid, index))
            if index not in taken and spender is not None and spender.txid not in resolution.ours:
                taken[index] = spender
        if taken == resolution.taken:
            return
        resolution.taken = taken
        resolution.claims = penalty_claims(resolution.channel, spend, resolution.sweep_script,
                                           resolution.feerate_per_kw, taken)
        resolution.ours.update(c.tx.txid for c in resolution.claims)
        self._apply_sweep_feerates(resolution, spend)

    def _rival_spend(self, claim: Claim) -> Transaction | None:
        """A transaction other than ``claim`` that spends one of its inputs, if any."""
        for txin in claim.tx.inputs:
            spender = self.chain.spending_tx(txin.prevout)
            if spender is not None and spender.txid != claim.tx.txid:
                return spender
        return None

    def _outcome(self, resolution: Resolution, claim: Claim, rival: Transaction | None) -> list[OnchainEvent]:
        """What a settled HTLC claim means for the payment it carries."""
        if claim.payment_hash is None:
            return []
        preimage = None
        if rival is not None:  # the peer spent the HTLC output: with the preimage, if it claimed it
            preimage = next((item for txin in rival.inputs for item in txin.witness
                             if len(item) == 32 and sha256(item) == claim.payment_hash), None)
        if claim.offered and rival is not None and preimage is None:
            return []  # spent some other way (a revocation we cannot tell apart): no conclusion
        return [HtlcResolvedOnChain(resolution.channel_id, claim.payment_hash, claim.offered, preimage,
                                    self._htlc_id(resolution.channel, claim))]

    @staticmethod
    def _htlc_id(channel: Channel, claim: Claim) -> int | None:
        """Which of the channel's HTLCs a claim resolved (the commitment knows only its terms)."""
        offerer = Side.LOCAL if claim.offered else Side.REMOTE
        views = [channel.log.commitment(owner) for owner in Side]
        return next((h.htlc_id for view in views for h in view.htlcs
                     if h.offerer is offerer and h.payment_hash == claim.payment_hash), None)
