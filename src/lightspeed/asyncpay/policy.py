"""The LSP's hold policy: what it agrees to hold, until when, and who may release it (sans-IO).

Theory of operation. An LSP holding an HTLC for an offline payee locks its own outgoing
liquidity and, worse, risks a force close: if the incoming HTLC is still pending when its
``cltv_expiry`` nears, the upstream peer must go on chain. So:

* :class:`HoldLimits` are the LSP's announced bounds: the longest hold, the most HTLCs and
  the most msat held per client, and the safety margin in blocks.
* :meth:`HoldBook.admit` refuses an HTLC beyond any bound (N ok, N+1 refused) and one whose
  deadline has already come; nothing changes on refusal.
* :meth:`HoldBook.due` lists the held HTLCs to fail back now: held longer than
  ``max_hold_seconds``, or ``block_height >= cltv_expiry - safety_margin_blocks`` (failing
  back then settles the HTLC off chain, before it could force a close).
* Releases are authenticated. LightningRod: the payer registers a secret ``pid``; the book
  keeps only ``HMAC(key, pid)`` and a release must present the pid itself. Draft spec: the
  LSP gives the payee a reply path whose ``path_id`` is a :class:`ReleaseToken` MAC'd with
  the LSP's key. Either is single use: a replayed, forged or unknown release raises
  :class:`ReleaseRefused` and changes nothing.

Time (unix seconds) and block height are inputs; the book returns values and the runtime
persists them (:mod:`lightspeed.asyncpay.store` in the node) before acting on them.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum

from lightspeed.errors import DecodeError, LightspeedError, UsageError


class HoldRefused(LightspeedError):
    """An HTLC the LSP will not hold; ``reason`` names the limit."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ReleaseRefused(LightspeedError):
    """A release that does nothing: forged, replayed, or naming nothing held."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class HoldLimits:
    """Bounds an LSP sets and announces to its clients (e.g. in its registration reply)."""

    max_hold_seconds: int = 24 * 3600
    max_htlcs_per_client: int = 16
    max_held_msat_per_client: int = 10_000_000_000
    safety_margin_blocks: int = 12

    def __post_init__(self) -> None:
        for name in ("max_hold_seconds", "max_htlcs_per_client", "max_held_msat_per_client",
                     "safety_margin_blocks"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name} must be positive")

    def announce(self) -> dict[str, int]:
        """The JSON a client is shown (REST/CLI and the registration reply)."""
        return {"max_hold_seconds": self.max_hold_seconds, "max_htlcs_per_client": self.max_htlcs_per_client,
                "max_held_msat_per_client": self.max_held_msat_per_client,
                "safety_margin_blocks": self.safety_margin_blocks}


class HoldState(Enum):
    HELD = "held"
    RELEASED = "released"
    FAILED = "failed"


@dataclass(frozen=True)
class HeldHtlc:
    """One incoming HTLC the LSP holds. ``htlc_key`` identifies it to the runtime (channel, id)."""

    htlc_key: str
    client_id: bytes
    payment_hash: bytes
    amount_msat: int
    cltv_expiry: int
    held_at: int
    release_tag: bytes
    state: HoldState = HoldState.HELD

    def fail_height(self, limits: HoldLimits) -> int:
        """The block height at which the HTLC must be failed back."""
        return self.cltv_expiry - limits.safety_margin_blocks

    def fail_time(self, limits: HoldLimits) -> int:
        return self.held_at + limits.max_hold_seconds


@dataclass(frozen=True)
class HoldRegistration:
    """LightningRod step 2: a client asked its LSP to hold HTLCs with these hashes under a pid
    (kept only as its tag). An HTLC arriving from that client with one of the hashes is held."""

    client_id: bytes
    payment_hashes: tuple[bytes, ...]
    release_tag: bytes
    amount_msat: int
    registered_at: int


class ReleaseKey:
    """The LSP's secret for release tags. ``tag(pid)`` is what the book stores and compares."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise UsageError("the release key is 32 bytes")
        self._key = key

    def tag(self, secret: bytes) -> bytes:
        return hmac.new(self._key, b"lightspeed async release" + secret, hashlib.sha256).digest()

    def issue_token(self, hold_id: bytes, nonce: bytes) -> bytes:
        """A draft-spec reply-path ``path_id``: ``hold_id(32) || nonce(16) || mac(32)``."""
        if len(hold_id) != 32 or len(nonce) != 16:
            raise UsageError("hold_id is 32 bytes and nonce 16")
        return hold_id + nonce + self.tag(hold_id + nonce)

    def open_token(self, path_id: bytes) -> bytes:
        """The secret a token authorises (``hold_id || nonce``); DecodeError if forged."""
        if len(path_id) != 80:
            raise DecodeError("path_id", f"{len(path_id)} bytes, a release token is 80")
        body, mac = path_id[:48], path_id[48:]
        if not hmac.compare_digest(self.tag(body), mac):
            raise DecodeError("path_id", "release token MAC does not verify")
        return body


class HoldBook:
    """The held HTLCs of one LSP, with its limits and release key. Mutations return the records
    that changed, for the runtime to persist before it forwards or fails anything."""

    def __init__(self, limits: HoldLimits, key: ReleaseKey, held: Iterable[HeldHtlc] = (),
                 registrations: Iterable[HoldRegistration] = ()) -> None:
        self.limits = limits
        self.key = key
        self._htlcs: dict[str, HeldHtlc] = {h.htlc_key: h for h in held}
        self._registrations: list[HoldRegistration] = list(registrations)

    def register(self, client_id: bytes, payment_hashes: tuple[bytes, ...], pid: bytes, amount_msat: int,
                 *, now: int) -> HoldRegistration:
        """Accept a hold request from ``client_id`` (the peer it arrived from), or raise HoldRefused.

        Bounded like the HTLCs it announces: at most ``max_htlcs_per_client`` live registrations
        and ``max_held_msat_per_client`` per client; a hash already registered is refused (a
        second pid for the same hash would let either release it).
        """
        self.expire_registrations(now=now)
        mine = [r for r in self._registrations if r.client_id == client_id]
        if len(mine) + 1 > self.limits.max_htlcs_per_client:
            raise HoldRefused(f"client already has {len(mine)} hold requests, the limit is "
                              f"{self.limits.max_htlcs_per_client}")
        if amount_msat > self.limits.max_held_msat_per_client:
            raise HoldRefused(f"{amount_msat} msat exceeds the limit of {self.limits.max_held_msat_per_client} msat")
        taken = {h for r in self._registrations for h in r.payment_hashes}
        if taken.intersection(payment_hashes):
            raise HoldRefused("a payment hash is already registered for holding")
        registration = HoldRegistration(client_id, payment_hashes, self.key.tag(pid), amount_msat, now)
        self._registrations.append(registration)
        return registration

    def registration_for(self, client_id: bytes, payment_hash: bytes, *, now: int) -> HoldRegistration | None:
        """The live registration an incoming HTLC from ``client_id`` with ``payment_hash`` falls under."""
        for r in self._registrations:
            if (r.client_id == client_id and payment_hash in r.payment_hashes
                    and now < r.registered_at + self.limits.max_hold_seconds):
                return r
        return None

    def expire_registrations(self, *, now: int) -> list[HoldRegistration]:
        """Drop registrations older than ``max_hold_seconds`` (returned, for the store to delete)."""
        old = [r for r in self._registrations if now >= r.registered_at + self.limits.max_hold_seconds]
        self._registrations = [r for r in self._registrations if r not in old]
        return old

    def held(self, client_id: bytes | None = None) -> list[HeldHtlc]:
        return [h for h in self._htlcs.values()
                if h.state is HoldState.HELD and (client_id is None or h.client_id == client_id)]

    def record(self, htlc_key: str) -> HeldHtlc | None:
        """The record of an HTLC in any state (held, released, failed), or None if never held."""
        return self._htlcs.get(htlc_key)

    def released_under(self, release_tag: bytes) -> bool:
        """True once an HTLC held under this tag was released (a late MPP part follows it at once)."""
        return any(h.state is HoldState.RELEASED and hmac.compare_digest(h.release_tag, release_tag)
                   for h in self._htlcs.values())

    def admit(self, htlc_key: str, client_id: bytes, payment_hash: bytes, amount_msat: int,
              cltv_expiry: int, release_tag: bytes, *, now: int, block_height: int) -> HeldHtlc:
        """Hold an incoming HTLC, or raise :class:`HoldRefused` (then fail it back at once).

        ``release_tag`` is a registration's tag (LightningRod) or ``key.tag(hold_id || nonce)``
        of the release token the LSP issues (draft spec)."""
        if htlc_key in self._htlcs:
            raise HoldRefused(f"HTLC {htlc_key} is already known")
        if amount_msat <= 0:
            raise HoldRefused("amount_msat must be positive")
        limits = self.limits
        if block_height >= cltv_expiry - limits.safety_margin_blocks:
            raise HoldRefused(f"cltv_expiry {cltv_expiry} is within the safety margin of "
                              f"{limits.safety_margin_blocks} blocks at height {block_height}")
        mine = self.held(client_id)
        if len(mine) + 1 > limits.max_htlcs_per_client:
            raise HoldRefused(f"client already has {len(mine)} held HTLCs, the limit is "
                              f"{limits.max_htlcs_per_client}")
        total = sum(h.amount_msat for h in mine) + amount_msat
        if total > limits.max_held_msat_per_client:
            raise HoldRefused(f"holding {total} msat for the client exceeds the limit of "
                              f"{limits.max_held_msat_per_client} msat")
        record = HeldHtlc(htlc_key, client_id, payment_hash, amount_msat, cltv_expiry, now, release_tag)
        self._htlcs[htlc_key] = record
        return record

    def due(self, *, now: int, block_height: int) -> list[HeldHtlc]:
        """Held HTLCs whose time is up (hold time or CLTV safety margin); marked FAILED."""
        out = []
        for record in self.held():
            # The LSP fails back before the upstream node would have to go on chain: at
            # cltv_expiry - safety_margin (BOLT #2: an offering node fails the channel once an
            # HTLC it offered is past its timeout; we never let ours get there).
            if block_height >= record.fail_height(self.limits) or now >= record.fail_time(self.limits):
                failed = replace(record, state=HoldState.FAILED)
                self._htlcs[record.htlc_key] = failed
                out.append(failed)
        return out

    def next_deadline(self) -> tuple[int, int] | None:
        """(earliest fail time, earliest fail height) over held HTLCs, for the runtime's timer."""
        held = self.held()
        if not held:
            return None
        return (min(h.fail_time(self.limits) for h in held), min(h.fail_height(self.limits) for h in held))

    def release(self, release_secret: bytes, *, now: int, block_height: int) -> list[HeldHtlc]:
        """Release every HTLC held under this secret (all MPP parts together); marked RELEASED.

        Raises :class:`ReleaseRefused` if nothing is held under it: a forged secret, a replay
        (already released or failed) or a release for a hash never held.
        """
        tag = self.key.tag(release_secret)
        matching = [h for h in self._htlcs.values() if hmac.compare_digest(h.release_tag, tag)]
        if not matching:
            raise ReleaseRefused("no HTLC is held under this release secret (forged, or never held)")
        held = [h for h in matching if h.state is HoldState.HELD]
        if not held:
            raise ReleaseRefused("already " + matching[0].state.value + ": a replayed release does nothing")
        out = []
        for record in held:
            # An HTLC past its deadline is failed, not released: forwarding it now could leave
            # the downstream HTLC pending past our own margin.
            if block_height >= record.fail_height(self.limits) or now >= record.fail_time(self.limits):
                continue
            released = replace(record, state=HoldState.RELEASED)
            self._htlcs[record.htlc_key] = released
            out.append(released)
        if not out:
            raise ReleaseRefused("the held HTLCs are past their deadline and are failed back instead")
        return out

    def forget(self, htlc_key: str) -> None:
        """Drop a settled record (the runtime calls this once it is resolved upstream)."""
        self._htlcs.pop(htlc_key, None)
