"""Scoped API credentials: HMAC-signed caveat strings, their store, and pay budgets.

A token is ``lsc1.<caveats>.<mac>``: ``caveats`` is base64url (no padding) of an ASCII string
``id=…&scope=…[&budget_msat=…][&expires_at=…][&label=…]`` and ``mac`` is base64url of
``HMAC-SHA256(root_key, caveats)``, with the 32-byte root key in ``DATADIR/credentials_key``
(mode 0600). The daemon checks a token in this order: it parses (any malformed token is a 401,
never a traceback), its MAC matches (constant-time), its id is in ``DATADIR/credentials.sqlite``
and not revoked, it has not expired; the route's scope is checked after that (403).

Why signed caveats *and* a store: the caveats (scope, budget, expiry) are bound to the token by
the MAC, so nothing in the store can widen what a token may do, and the store holds no secret:
a leaked or backed-up ``credentials.sqlite`` yields no usable token. The store keeps what must
change after issuing, which a bearer string cannot: revocation and the budget spent. See
docs/credentials.md.

Budgets are spent with one conditional ``UPDATE`` (``spent + amount <= budget``) committed
before the payment is sent, so concurrent payments can never overspend, and a crash mid-payment
leaves the amount counted as spent (never the other way round).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, unquote

from lightspeed.api.datadir import write_private
from lightspeed.errors import UsageError

Scope = Literal["readonly", "invoice", "pay", "admin"]
SCOPES: tuple[Scope, ...] = ("readonly", "invoice", "pay", "admin")  # each includes the ones before it
KEY_FILE = "credentials_key"
STORE_FILE = "credentials.sqlite"
PREFIX = "lsc1"
MAX_TOKEN_LENGTH = 1024  # a real token is < 400 characters; anything longer is not parsed at all
MAX_LABEL_BYTES = 64
MAX_BUDGET_MSAT = 21_000_000 * 100_000_000 * 1000  # every bitcoin there will ever be
_ID = re.compile(r"[0-9a-f]{16}")
_DIGITS = re.compile(r"[0-9]{1,20}")
_B64 = re.compile(r"[A-Za-z0-9_-]+")
_FIELDS = ("id", "scope", "budget_msat", "expires_at", "label")


class TokenRejected(Exception):
    """Why a bearer token does not authenticate (a 401); the reason is safe to show the client."""


def scope_allows(held: Scope, required: Scope) -> bool:
    """Scopes are levels: readonly < invoice < pay < admin (a higher one may do all a lower one may)."""
    return SCOPES.index(held) >= SCOPES.index(required)


@dataclass(frozen=True)
class Caveats:
    """What a token says about itself (signed by the root key)."""

    token_id: str
    scope: Scope
    budget_msat: int | None = None  # pay tokens: the most they may ever spend, fees included
    expires_at: int | None = None  # unix seconds
    label: str = ""

    def encode(self) -> str:
        parts = [f"id={self.token_id}", f"scope={self.scope}"]
        if self.budget_msat is not None:
            parts.append(f"budget_msat={self.budget_msat}")
        if self.expires_at is not None:
            parts.append(f"expires_at={self.expires_at}")
        if self.label:
            parts.append(f"label={quote(self.label, safe='')}")
        return "&".join(parts)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not _B64.fullmatch(text) or len(text) % 4 == 1:
        raise TokenRejected("the token is malformed (not base64url)")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenRejected("the token is malformed (not base64url)") from None


def parse_caveats(text: str) -> Caveats:
    """The caveat string's fields; TokenRejected for anything but the exact grammar."""
    fields: dict[str, str] = {}
    for part in text.split("&"):
        name, sep, value = part.partition("=")
        if not sep or name not in _FIELDS or name in fields:
            raise TokenRejected("the token's caveats are malformed")
        fields[name] = value
    token_id, scope = fields.get("id", ""), fields.get("scope", "")
    if not _ID.fullmatch(token_id) or scope not in SCOPES:
        raise TokenRejected("the token's caveats are malformed")
    numbers: dict[str, int | None] = {}
    for name in ("budget_msat", "expires_at"):
        digits = fields.get(name)
        if digits is not None and not _DIGITS.fullmatch(digits):
            raise TokenRejected("the token's caveats are malformed")
        numbers[name] = None if digits is None else int(digits)
    try:
        label = unquote(fields.get("label", ""), errors="strict")
    except UnicodeDecodeError:
        raise TokenRejected("the token's caveats are malformed") from None
    held: Scope = SCOPES[SCOPES.index(scope)]  # the literal the text names
    return Caveats(token_id, held, numbers["budget_msat"], numbers["expires_at"], label)


def split_token(token: str) -> tuple[str, bytes]:
    """``(caveat string, mac)`` of a token; TokenRejected if it is not one."""
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise TokenRejected("the token is malformed")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise TokenRejected(f"the token is malformed (expected {PREFIX}.<caveats>.<mac>)")
    caveats, mac = _unb64(parts[1]), _unb64(parts[2])
    if len(mac) != 32:
        raise TokenRejected("the token is malformed (its MAC is not 32 bytes)")
    try:
        return caveats.decode("ascii"), mac
    except UnicodeDecodeError:
        raise TokenRejected("the token's caveats are malformed") from None


@dataclass(frozen=True)
class TokenRecord:
    """A token as the store keeps it (never the token string itself)."""

    token_id: str
    scope: Scope
    label: str
    budget_msat: int | None
    spent_msat: int
    expires_at: int | None
    created_at: int
    revoked_at: int | None

    def json(self) -> dict[str, object]:
        return {"id": self.token_id, "scope": self.scope, "label": self.label, "budget_msat": self.budget_msat,
                "spent_msat": self.spent_msat,
                "remaining_msat": None if self.budget_msat is None else self.budget_msat - self.spent_msat,
                "expires_at": self.expires_at, "created_at": self.created_at, "revoked_at": self.revoked_at}


@dataclass(frozen=True)
class Credential:
    """Who a request is: the legacy admin token (``token_id`` None) or a scoped token."""

    scope: Scope
    token_id: str | None = None
    budget_msat: int | None = None


ADMIN = Credential("admin")


class Credentials:
    """The root key and the token store of one datadir (or of a test's directory)."""

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory)
        key_path = self.path / KEY_FILE
        if not key_path.exists():
            write_private(key_path, secrets.token_bytes(32))
        self._key = key_path.read_bytes()
        if len(self._key) != 32:
            raise UsageError(f"{key_path}: the credentials root key must be 32 bytes, found {len(self._key)}")
        store = self.path / STORE_FILE
        fd = os.open(store, os.O_RDWR | os.O_CREAT, 0o600)  # created private, before sqlite opens it
        os.close(fd)
        self._db = sqlite3.connect(store, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a spent budget or a revocation survives power loss
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, scope TEXT NOT NULL, label TEXT NOT NULL,"
            " budget_msat INTEGER, spent_msat INTEGER NOT NULL DEFAULT 0, expires_at INTEGER,"
            " created_at INTEGER NOT NULL, revoked_at INTEGER)")
        # Reservations of payments still pending when their request ended (504): settled by the
        # payment's outcome when the node reports it (see api/scopes.py settle_held).
        self._db.execute("CREATE TABLE IF NOT EXISTS holds (payment_hash TEXT PRIMARY KEY, token_id TEXT NOT NULL,"
                         " reserved_msat INTEGER NOT NULL)")

    def close(self) -> None:
        self._db.close()

    def _mac(self, caveats: str) -> bytes:
        return hmac.digest(self._key, caveats.encode("ascii"), hashlib.sha256)

    def create(self, scope: Scope, now: int, budget_msat: int | None = None, expires_in_s: int | None = None,
               label: str = "") -> tuple[str, TokenRecord]:
        """Mint a token; ``(token, its record)``. The token string is shown once and never stored."""
        if scope not in SCOPES:
            raise UsageError(f"scope: must be one of {', '.join(SCOPES)}")
        if scope == "pay" and budget_msat is None:
            raise UsageError("budget_msat: a pay token needs a budget (an unlimited spender is an admin token)")
        if scope != "pay" and budget_msat is not None:
            raise UsageError("budget_msat: only pay tokens have a budget")
        if len(label.encode()) > MAX_LABEL_BYTES:
            raise UsageError(f"label: at most {MAX_LABEL_BYTES} bytes")
        expires_at = None if expires_in_s is None else now + expires_in_s
        caveats = Caveats(secrets.token_hex(8), scope, budget_msat, expires_at, label)
        text = caveats.encode()
        self._db.execute("INSERT INTO tokens (id, scope, label, budget_msat, expires_at, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?)",
                         (caveats.token_id, scope, label, budget_msat, expires_at, now))
        record = self.record(caveats.token_id)
        assert record is not None
        return f"{PREFIX}.{_b64(text.encode())}.{_b64(self._mac(text))}", record

    def verify(self, token: str, now: int) -> Credential:
        """The credential ``token`` carries; TokenRejected (a 401) saying why not."""
        text, mac = split_token(token)
        if not hmac.compare_digest(mac, self._mac(text)):
            raise TokenRejected("the token's signature does not match (not issued by this node)")
        caveats = parse_caveats(text)
        record = self.record(caveats.token_id)
        if record is None:
            raise TokenRejected("the token is unknown to this node's credential store")
        if record.revoked_at is not None:
            raise TokenRejected(f"the token {caveats.token_id} was revoked")
        if caveats.expires_at is not None and now >= caveats.expires_at:
            raise TokenRejected(f"the token {caveats.token_id} expired at {caveats.expires_at}")
        return Credential(caveats.scope, caveats.token_id, caveats.budget_msat)

    def record(self, token_id: str) -> TokenRecord | None:
        row = self._db.execute("SELECT id, scope, label, budget_msat, spent_msat, expires_at, created_at,"
                               " revoked_at FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return None if row is None else TokenRecord(*row)

    def records(self) -> list[TokenRecord]:
        rows = self._db.execute("SELECT id, scope, label, budget_msat, spent_msat, expires_at, created_at,"
                                " revoked_at FROM tokens ORDER BY created_at, rowid").fetchall()
        return [TokenRecord(*row) for row in rows]

    def revoke(self, token_id: str, now: int) -> TokenRecord | None:
        """Revoke for good (committed before this returns); None if there is no such token."""
        self._db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, token_id))
        return self.record(token_id)

    def reserve(self, credential: Credential, amount_msat: int) -> bool:
        """Count ``amount_msat`` as spent if the budget allows it (one atomic, durable UPDATE)."""
        if credential.budget_msat is None or credential.token_id is None:
            return True
        cursor = self._db.execute(
            "UPDATE tokens SET spent_msat = spent_msat + ? WHERE id = ? AND revoked_at IS NULL"
            " AND spent_msat + ? <= ?", (amount_msat, credential.token_id, amount_msat, credential.budget_msat))
        return cursor.rowcount == 1

    def refund(self, credential: Credential, amount_msat: int) -> None:
        """Give back what a reservation held beyond what the payment really cost (or all, if it failed)."""
        if credential.budget_msat is None or credential.token_id is None or amount_msat <= 0:
            return
        self._db.execute("UPDATE tokens SET spent_msat = MAX(spent_msat - ?, 0) WHERE id = ?",
                         (amount_msat, credential.token_id))

    def hold(self, payment_hash: bytes, credential: Credential, reserved_msat: int) -> None:
        """Keep a pending payment's reservation until its outcome is known (it stays spent till then)."""
        if credential.token_id is None or reserved_msat <= 0:
            return
        self._db.execute("INSERT OR REPLACE INTO holds (payment_hash, token_id, reserved_msat) VALUES (?, ?, ?)",
                         (payment_hash.hex(), credential.token_id, reserved_msat))

    def release(self, payment_hash: bytes, spent_msat: int | None) -> None:
        """A held payment ended: give back what it did not spend (``spent_msat`` None: keep it all)."""
        self._db.execute("BEGIN IMMEDIATE")  # one transaction: the hold goes with its refund
        try:
            row = self._db.execute("SELECT token_id, reserved_msat FROM holds WHERE payment_hash = ?",
                                   (payment_hash.hex(),)).fetchone()
            if row is not None:
                token_id, reserved = row
                back = reserved - spent_msat if spent_msat is not None else 0
                if back > 0:
                    self._db.execute("UPDATE tokens SET spent_msat = MAX(spent_msat - ?, 0) WHERE id = ?",
                                     (back, token_id))
                self._db.execute("DELETE FROM holds WHERE payment_hash = ?", (payment_hash.hex(),))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def held(self) -> dict[bytes, int]:
        rows = self._db.execute("SELECT payment_hash, reserved_msat FROM holds").fetchall()
        return {bytes.fromhex(h): r for h, r in rows}

    def remaining(self, credential: Credential) -> int | None:
        if credential.budget_msat is None or credential.token_id is None:
            return None
        record = self.record(credential.token_id)
        return 0 if record is None else credential.budget_msat - record.spent_msat
