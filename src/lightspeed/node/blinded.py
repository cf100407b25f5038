"""Blinded payment paths in the node: build them to us, receive and forward over them, pay to them.

The node calls in at four places and this module does the rest (the sans-IO parts are
:mod:`lightspeed.payments.blinded` and :mod:`lightspeed.node.blinded_incoming`):

* :meth:`BlindedPayments.payment_paths`: a payment we will receive only over blinded paths
  (its record is a BOLT 11 invoice with ``option_route_blinding`` required that is never
  handed out: it keeps the amount, expiry and secret across restarts like any invoice; its
  ``payment_secret`` is the ``path_id`` of every path, so only our paths can pay it);
* :meth:`BlindedPayments.decide`: an incoming HTLC inside a blinded path: forward it with the
  next ``path_key``, give it to the receiver, or fail it the way the node's role demands;
* :meth:`BlindedPayments.failure_record`: what to fail an incoming blinded HTLC with when a
  downstream HTLC or the receiver failed (the role is re-derived from the stored onion after a
  restart);
* :meth:`BlindedPayments.pay`: pay to a list of (path, payinfo): a route to each introduction
  node, MPP across paths, another path after a failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lightspeed.channel.htlc_log import LoggedHtlc, Side
from lightspeed.channel.state import Channel
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import PaymentError, UsageError
from lightspeed.gossip.create import direction_of
from lightspeed.invoice import build_invoice
from lightspeed.invoice.encode import DEFAULT_FEATURES as DEFAULT_INVOICE_FEATURES
from lightspeed.node.blinded_incoming import (
    BlindedFailure,
    BlindedFinal,
    BlindedForward,
    BlindedRead,
    Role,
    blinded_failure,
    failure_reason,
    unpack_onion,
)
from lightspeed.node.blinded_own import skip_own_hops
from lightspeed.node.forwarding import read_onion
from lightspeed.node.invoices import ROUTE_BLINDING_BIT
from lightspeed.node.paying import decode_outcome, first_preimage
from lightspeed.offers.tlv_fields import BlindedPayInfo
from lightspeed.onion.blinding import BlindedPath
from lightspeed.onion.failure import FailureCode, FailureMessage
from lightspeed.onion.payload import HopPayload
from lightspeed.payments.blinded import (
    PathTerms,
    RelayHop,
    amount_at_introduction,
    blinded_onion,
    build_payment_path,
)
from lightspeed.payments.forward import ForwardTo
from lightspeed.payments.forward import decide_forward as decide_policy
from lightspeed.payments.receiver import IncomingPart, Receivable
from lightspeed.routing import NoRouteError, find_route
from lightspeed.routing.graph import ChannelGraph
from lightspeed.store import IncomingHtlcRecord, InvoiceRecord, PaymentRecord

if TYPE_CHECKING:
    from lightspeed.node.node import Node, NodeEvent

MIN_FINAL_CLTV_EXPIRY_DELTA = 18  # what the final hop asks on top of the height (as a BOLT 11 default)
PATH_LIFETIME_BLOCKS = 144  # a path stays usable this long past the payment's expiry
FINAL_CLTV_OFFSET = 12  # the payer's offset over the current height (BOLT 4: SHOULD add it)
MALFORMED_MARK = b"\xffmalformed"  # an IncomingHtlcRecord.failure that is update_fail_malformed_htlc


def malformed_record_failure(failure: FailureMessage) -> bytes:
    """A failure to send as ``update_fail_malformed_htlc``, in the store's ``failure`` column.

    An encrypted reason is at least 256 bytes of HMAC'd data; this 44-byte form cannot be one.
    """
    assert failure.sha256_of_onion is not None
    return MALFORMED_MARK + int(failure.code).to_bytes(2, "big") + failure.sha256_of_onion


def parse_malformed(failure: bytes) -> tuple[int, bytes] | None:
    """(failure code, sha256_of_onion) of a :func:`malformed_record_failure`, else ``None``."""
    if len(failure) != len(MALFORMED_MARK) + 34 or not failure.startswith(MALFORMED_MARK):
        return None
    body = failure[len(MALFORMED_MARK):]
    return int.from_bytes(body[:2], "big"), body[2:]


@dataclass(frozen=True)
class BlindedInvoice:
    """A payment we receive over blinded paths: hand ``paths`` to the payer (a BOLT 12 invoice does)."""

    payment_hash: bytes
    amount_msat: int | None
    expires_at: int
    paths: tuple[tuple[BlindedPath, BlindedPayInfo], ...]


@dataclass(frozen=True)
class _Incoming:
    role: Role
    sha256_of_onion: bytes
    shared_secret: bytes


class BlindedPayments:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._roles: dict[tuple[bytes, int], _Incoming] = {}  # incoming HTLCs inside a blinded path
        self._plain: set[tuple[bytes, int]] = set()  # incoming HTLCs found outside any (after a restart)

    # -- building paths to us ------------------------------------------------------------------

    def payment_paths(self, amount_msat: int | None, description: str = "", expiry: int = 3600,
                      via: Sequence[Sequence[bytes]] | None = None, dummy_hops: int = 1,
                      preimage: bytes | None = None, max_paths: int = 3,
                      secret: bytes | None = None) -> BlindedInvoice:
        """A new payment to us and blinded paths to pay it over.

        ``via``: node lists, introduction node first, each ending at one of our peers (default:
        each peer we have a ready channel with, as a one-node list; an empty list: a path we
        introduce ourselves, for a payer that is our only peer). The fees and deltas of every
        hop are its channel's policy as our graph knows it; a hop without one is left out.
        """
        node = self.node
        node._require_store()
        if amount_msat is not None and amount_msat <= 0:
            raise UsageError("amount_msat: must be positive")
        if preimage is None:
            preimage = os.urandom(32)
        elif len(preimage) != 32:
            raise UsageError(f"preimage: must be 32 bytes, not {len(preimage)}")
        routes = [list(v) for v in via] if via is not None else [
            [peer] for peer in dict.fromkeys(node._channel_node[c] for c in node.channels
                                             if node.channel_is_ready(c) and c not in node._closings)]
        height = node.chain.tip()[0]
        if secret is None:
            secret = os.urandom(32)
        elif len(secret) != 32:
            raise UsageError(f"secret: must be 32 bytes, not {len(secret)}")
        terms = PathTerms(node.node_id, secret, height + PATH_LIFETIME_BLOCKS + expiry // 600,
                          MIN_FINAL_CLTV_EXPIRY_DELTA, max(1, node.forwarding_policy.htlc_minimum_msat))
        paths = []
        problems = []
        for nodes in routes:
            try:
                relays = self._relays(nodes)
            except UsageError as exc:
                problems.append(str(exc))
                continue
            paths.append(build_payment_path(os.urandom(32), relays, terms, dummy_hops))
            if len(paths) == max_paths:
                break
        if not paths:
            raise UsageError("no blinded path to us: " + ("; ".join(problems) or "no ready channel"))
        payment_hash = sha256(preimage)
        # Kept as a BOLT 11 invoice requiring option_route_blinding, never handed out.
        invoice = build_invoice(network=node.network, amount_msat=amount_msat, description=description,
                                payment_hash=payment_hash, payment_secret=secret, timestamp=int(time.time()),
                                expiry=expiry, payee=None, min_final_cltv_expiry=MIN_FINAL_CLTV_EXPIRY_DELTA,
                                features=DEFAULT_INVOICE_FEATURES | {ROUTE_BLINDING_BIT}).sign(node.privkey)
        with node.store.transaction():
            node.store.put_invoice(InvoiceRecord(payment_hash, invoice.encode(), preimage, secret, amount_msat,
                                                 expires_at=invoice.expires_at))
        node.invoices.added(Receivable(payment_hash, secret, amount_msat, MIN_FINAL_CLTV_EXPIRY_DELTA,
                                       invoice.expires_at, preimage, blinded=True))
        return BlindedInvoice(payment_hash, amount_msat, invoice.expires_at, tuple(paths))

    def _relays(self, nodes: Sequence[bytes]) -> list[RelayHop]:
        node = self.node
        if not nodes:
            return []  # we introduce the path ourselves (only dummy hops hide where it ends)
        relays = []
        for here, there in zip(nodes, [*nodes[1:], node.node_id], strict=True):
            found = self._policy(here, there)
            if found is None:
                raise UsageError(f"no channel policy known from {here.hex()} to {there.hex()}")
            relays.append(found)
        return relays

    def _policy(self, source: bytes, target: bytes) -> RelayHop | None:
        """The channel ``source`` -> ``target`` and its terms: our graph, else the peer's own update."""
        node = self.node
        graph = node.graph or ChannelGraph()
        for direction in graph.incoming.get(target, []):
            if direction.source == source and not direction.policy.disabled:
                p = direction.policy
                cap = direction.capacity_sat * 1000 if direction.capacity_sat is not None else None
                maximum = min(x for x in (p.htlc_maximum_msat, cap, 1 << 64) if x is not None)
                return RelayHop(source, direction.short_channel_id, p.fee_base_msat, p.fee_proportional_millionths,
                                p.cltv_expiry_delta, p.htlc_minimum_msat, maximum)
        if target != node.node_id:
            return None
        for cid in node.channels:
            scid = node.short_channel_id(cid)
            if node.channel_peer_id(cid) != source or scid is None:
                continue
            update = node.gossip.gossiper.view.store.update(scid, direction_of(source, target))
            if update is not None and not update.disabled:
                return RelayHop(source, scid, update.fee_base_msat, update.fee_proportional_millionths,
                                update.cltv_expiry_delta, update.htlc_minimum_msat,
                                node.channels[cid].config.funding_sat * 1000)
        return None

    # -- incoming HTLCs inside a blinded path ----------------------------------------------------

    def decide(self, channel: Channel, htlc: LoggedHtlc, read: BlindedRead, height: int,
               received: list[NodeEvent]) -> None:
        """Act on what :func:`~lightspeed.node.blinded_incoming.read_blinded` found (in the step's transaction)."""
        node = self.node
        cid = channel.config.channel_id
        key = (cid, htlc.htlc_id)
        if isinstance(read, BlindedFailure):
            self._fail(key, htlc.payment_hash, read)
            return
        self._roles[key] = _Incoming(read.role, read.sha256_of_onion, read.shared_secret)
        if isinstance(read, BlindedForward):
            self._forward(channel, htlc, read, height)
            return
        node.invoices.load_for(htlc.payment_hash, None, False)
        receivable = node.receiver.invoices.get(htlc.payment_hash)
        if receivable is None:  # a static invoice's payment: the payer chose the preimage (node/async_draft.py)
            receivable = node.async_draft.static_receivable(read, htlc.payment_hash)
        # BOLT #4: the final recipient MUST ignore the message if the `path_id` does not match the
        # blinded route it created for this purpose (ours is the payment's secret).
        if (receivable is None or not receivable.blinded or read.path_id is None
                or not hmac.compare_digest(read.path_id, receivable.payment_secret)):
            unknown = FailureMessage(FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS, htlc_msat=htlc.amount_msat,
                                     height=height)
            self._fail(key, htlc.payment_hash, blinded_failure(read.role, read.sha256_of_onion, read.shared_secret,
                                                               unknown))
            return
        node._handled.add(key)
        node._part_secrets[key] = read.shared_secret
        payload = HopPayload(amt_to_forward_msat=read.amt_to_forward_msat, outgoing_cltv_value=read.outgoing_cltv_value,
                             payment_secret=read.path_id, total_msat=read.total_amount_msat)
        part = IncomingPart(cid, htlc.htlc_id, htlc.amount_msat, htlc.cltv_expiry, htlc.payment_hash, payload,
                            blinded=True)
        node._apply_decisions(node.receiver.receive(part, height, time.time()), received)

    def _fail(self, key: tuple[bytes, int], payment_hash: bytes, failure: BlindedFailure) -> None:
        reason = malformed_record_failure(failure.failure) if failure.malformed else failure_reason(failure)
        self.node._record(IncomingHtlcRecord(key[0], key[1], payment_hash, failure.shared_secret or b"",
                                             failure=reason))

    def _forward(self, channel: Channel, htlc: LoggedHtlc, read: BlindedForward, height: int) -> None:
        node = self.node
        key = (channel.config.channel_id, htlc.htlc_id)
        outgoing = node._outgoing_channels()
        scid = read.short_channel_id
        if scid is None:  # next_node_id: any usable channel of ours to that node
            scid = next((s for s, c in outgoing.items()
                         if node.channel_peer_id(node._by_scid[s]) == read.next_node_id and c.available_msat > 0),
                        next((s for s in outgoing if node.channel_peer_id(node._by_scid[s]) == read.next_node_id),
                             None))
        if scid is None:
            self._fail(key, htlc.payment_hash, blinded_failure(read.role, read.sha256_of_onion, read.shared_secret))
            return
        # Our own policy still holds (minimum, fee, delta, expiry, capacity): the recipient's
        # payment_relay must pay at least what we announce. Any refusal is a blinded failure.
        terms = HopPayload(amt_to_forward_msat=read.amount_msat, outgoing_cltv_value=read.cltv_expiry,
                           short_channel_id=scid)
        decision = decide_policy(htlc.amount_msat, htlc.cltv_expiry, terms, outgoing, height)
        if isinstance(decision, ForwardTo):
            out_cid = node._by_scid[decision.short_channel_id]
            try:
                add = node.channels[out_cid].add_htlc(decision.amount_msat, htlc.payment_hash, decision.cltv_expiry,
                                                      read.next_onion, path_key=read.next_path_key)
            except UsageError:
                pass
            else:
                node._dirty.setdefault(out_cid, []).append(add)
                node._record(IncomingHtlcRecord(key[0], key[1], htlc.payment_hash, read.shared_secret,
                                                out_channel_id=out_cid, out_htlc_id=add.id))
                return
        self._fail(key, htlc.payment_hash, blinded_failure(read.role, read.sha256_of_onion, read.shared_secret))

    def role_of(self, key: tuple[bytes, int], payment_hash: bytes) -> _Incoming | None:
        """The blinded role of an incoming HTLC (read again from its stored onion after a restart)."""
        known = self._roles.get(key)
        if known is not None or key in self._plain:
            return known
        node = self.node
        stored = node.store.onion(*key)
        channel = node.channels.get(key[0])
        if stored is None or channel is None:
            return None
        htlc = next((h for h in node._unresolved_htlcs(channel)
                     if h.offerer is Side.REMOTE and h.htlc_id == key[1] and h.payment_hash == payment_hash), None)
        onion, path_key = unpack_onion(stored)
        amount, cltv = (htlc.amount_msat, htlc.cltv_expiry) if htlc is not None else (0, 0)
        read = read_onion(onion, node.privkey, payment_hash, path_key, amount, cltv, node.node_id)
        if isinstance(read, (BlindedForward, BlindedFinal)):
            self._roles[key] = _Incoming(read.role, read.sha256_of_onion, read.shared_secret)
            return self._roles[key]
        if isinstance(read, BlindedFailure):  # it reads as failing now (amount or expiry unknown): keep the role
            role: Role = "inside" if read.malformed else (
                "intro" if read.failure.code == FailureCode.INVALID_ONION_BLINDING else "intro_final")
            self._roles[key] = _Incoming(role, hashlib.sha256(onion).digest(), read.shared_secret or b"")
            return self._roles[key]
        self._plain.add(key)  # not blinded: never read again
        return None

    def failure_record(self, key: tuple[bytes, int], payment_hash: bytes,
                       failure: FailureMessage | None) -> bytes | None:
        """The ``failure`` to record for a blinded incoming HTLC that failed downstream or at the
        receiver (``failure``: the receiver's own message, shown only where BOLT 4 allows); ``None``
        if the HTLC is not inside a blinded path."""
        found = self.role_of(key, payment_hash)
        if found is None:
            return None
        mapped = blinded_failure(found.role, found.sha256_of_onion, found.shared_secret, failure)
        return malformed_record_failure(mapped.failure) if mapped.malformed else failure_reason(mapped)

    def forget(self, key: tuple[bytes, int]) -> None:
        self._roles.pop(key, None)
        self._plain.discard(key)

    # -- paying to blinded paths -----------------------------------------------------------------

    async def pay(self, paths: Sequence[tuple[BlindedPath, BlindedPayInfo]], amount_msat: int, payment_hash: bytes,
                  timeout: float = 30, max_parts: int = 16, invoice: str = "",
                  separate_paths: bool = False, final_records: tuple[tuple[int, bytes], ...] = (),
                  extra_cltv: int = 0) -> bytes:
        """Pay ``amount_msat`` to whoever made ``paths``; returns the preimage. ``separate_paths``:
        in two parts or more, over two paths or more. ``final_records``: extra records of the
        recipient's payload (a static invoice's keysend preimage, node/async_draft.py); ``extra_cltv``:
        blocks added to the recipient's expiry (a payment held at an LSP must still be acceptable then)."""
        node = self.node
        if amount_msat <= 0:
            raise UsageError("amount_msat: must be positive")
        if len(payment_hash) != 32:
            raise UsageError("payment_hash: must be 32 bytes")
        # A path we introduce ourselves starts at the node after us (we never route to ourselves).
        usable = [(p, i) for p, i in skip_own_hops(node, paths)
                  if len(p.first_node_id) == 33 and p.first_node_id != node.node_id]
        if not usable:
            raise PaymentError("no usable blinded path (an introduction channel we do not know, or a path ending at us)")
        if separate_paths and (len(usable) < 2 or max_parts < 2 or amount_msat < 2):
            raise PaymentError("the payment must be split over separate blinded paths (MPP/compulsory), and "
                               f"{len(usable)} path(s) can be used for {amount_msat} msat in at most {max_parts} part(s)")
        node._guard(payment_hash)
        with node.store.transaction():
            node.store.put_payment(PaymentRecord(payment_hash, amount_msat, "pending", invoice=invoice))
        return await node._pay(payment_hash, usable[0][0].first_node_id, amount_msat, timeout, None, 0, (), max_parts,
                               runner=lambda fees: self._pay_parts(usable, amount_msat, payment_hash, timeout,
                                                                   max_parts, fees, separate_paths,
                                                                   final_records, extra_cltv))

    def _plan(self, paths: Sequence[tuple[BlindedPath, BlindedPayInfo]], amounts: list[int],
              graph: ChannelGraph) -> list[int] | None:
        """A path index per part (spread over the paths), or None if some part has no route."""
        plan = []
        for n, amount in enumerate(amounts):
            for k in range(len(paths)):
                index = (n + k) % len(paths)
                path, info = paths[index]
                if not info.htlc_minimum_msat <= amount <= info.htlc_maximum_msat:
                    continue
                try:
                    find_route(graph, self.node.node_id, path.first_node_id, amount_at_introduction(info, amount))
                except NoRouteError:
                    continue
                plan.append(index)
                break
            else:
                return None
        return plan

    async def _pay_parts(self, paths: Sequence[tuple[BlindedPath, BlindedPayInfo]], amount_msat: int,
                         payment_hash: bytes, timeout: float, max_parts: int, fees: list[int],
                         separate_paths: bool = False,
                         final_records: tuple[tuple[int, bytes], ...] = (), extra_cltv: int = 0) -> bytes:
        node = self.node
        deadline = time.monotonic() + timeout
        await node._wait_for_channels(b"", deadline)
        graph = node._graph_for(b"", ())
        parts = 2 if separate_paths else 1
        while True:  # MPP: the fewest parts for which every part has a path and a route to it
            amounts = _split(amount_msat, parts)
            plan = self._plan(paths, amounts, graph)
            if plan is not None and (not separate_paths or len(set(plan)) >= 2):
                break
            if parts * 2 > max_parts or amount_msat // (parts * 2) < 1:
                raise PaymentError(f"no route to any blinded path's introduction node for {amount_msat} msat")
            parts *= 2
        runs = [self._pay_part(paths, plan[i], amount, amount_msat, payment_hash, deadline, fees, final_records,
                               extra_cltv)
                for i, amount in enumerate(amounts)]
        return first_preimage(await asyncio.gather(*runs, return_exceptions=True))

    async def _pay_part(self, paths: Sequence[tuple[BlindedPath, BlindedPayInfo]], start: int, amount_msat: int,
                        total_msat: int, payment_hash: bytes, deadline: float, fees: list[int],
                        final_records: tuple[tuple[int, bytes], ...] = (), extra_cltv: int = 0) -> bytes:
        """One part: its path first, then every other path once, until one settles (its fee into ``fees``)."""
        node = self.node
        last = "no path could carry this part"
        for k in range(len(paths)):
            if time.monotonic() >= deadline:
                break
            path, info = paths[(start + k) % len(paths)]
            if not info.htlc_minimum_msat <= amount_msat <= info.htlc_maximum_msat:
                continue
            try:
                route = find_route(node._graph_for(b"", ()), node.node_id, path.first_node_id,
                                   amount_at_introduction(info, amount_msat))
            except NoRouteError as exc:
                last = str(exc)
                continue
            final_cltv = node.chain.tip()[0] + FINAL_CLTV_OFFSET + extra_cltv
            built = blinded_onion(route, path, info, amount_msat, total_msat, final_cltv, payment_hash, os.urandom(32),
                                  final_records)
            outcome, secrets = await node._offer_htlc(route.hops[0].short_channel_id, route.hops[0].pubkey,
                                                built.first_amount_msat, payment_hash, built.first_cltv_expiry,
                                                built.onion, built.shared_secrets, deadline)
            if outcome.preimage is not None:
                fees.append(built.first_amount_msat - amount_msat)
                return outcome.preimage
            report, _ = decode_outcome(outcome, secrets)
            last = f"{_code_name(report.code)} from " + (
                "our node" if report.erring_index == -1 else "an unknown hop" if report.erring_index is None
                else f"hop {report.erring_index}")
        raise PaymentError(f"every blinded path failed ({last})")


def _split(amount_msat: int, parts: int) -> list[int]:
    share = amount_msat // parts
    return [amount_msat - share * (parts - 1)] + [share] * (parts - 1)


def _code_name(code: int) -> str:
    try:
        return FailureCode(code).name.lower()
    except ValueError:
        return f"{code:#06x}"
