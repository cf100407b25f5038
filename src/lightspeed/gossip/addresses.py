"""``node_announcement`` address descriptors: IPv4, IPv6, Tor v3 onion services, DNS hostnames.

BOLT 7 packs a node's reachable addresses as a type byte followed by a type-specific
body, in ascending type order. The encoder refuses what an origin node "MUST NOT"
create (port 0, two hostnames, non-ASCII hostnames, a wrong onion checksum); the
decoder follows the reader rules: it stops at the first unknown type (its length is
unknowable), skips deprecated Tor v2 entries and port-0 addresses, and fails only
when ``addrlen`` cannot hold a descriptor of a known type.
"""

from __future__ import annotations

import hashlib
import ipaddress
from base64 import b32decode, b32encode
from collections.abc import Iterable
from dataclasses import dataclass

from lightspeed.errors import DecodeError, UsageError

IPV4, IPV6, TORV2, TORV3, DNS = 1, 2, 3, 4, 5
_BODY_LENGTH = {IPV4: 6, IPV6: 18, TORV2: 12, TORV3: 37}
_KIND_NAMES = {IPV4: "ipv4", IPV6: "ipv6", TORV3: "torv3", DNS: "dns"}
_ONION_VERSION = 3


@dataclass(frozen=True)
class Address:
    """One reachable address: ``kind`` is IPV4, IPV6, TORV3 or DNS; ``host`` in text form."""

    kind: int
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if self.kind == IPV6 else f"{self.host}:{self.port}"

    @property
    def kind_name(self) -> str:
        return _KIND_NAMES[self.kind]


@dataclass(frozen=True)
class DecodedAddresses:
    """What a reader takes from ``addresses``, and whether the announcement may be relayed."""

    addresses: tuple[Address, ...]
    forwardable: bool  # False when more than one DNS hostname was announced
    ignored: int  # descriptors dropped: Tor v2, port 0, and an unknown type with what follows


def _onion_checksum(pubkey: bytes) -> bytes:
    return hashlib.sha3_256(b".onion checksum" + pubkey + bytes([_ONION_VERSION])).digest()[:2]


def onion_v3_host(pubkey: bytes) -> str:
    """The ``<56 base32 chars>.onion`` name of a Tor v3 service's ed25519 public key."""
    if len(pubkey) != 32:
        raise UsageError(f"a Tor v3 public key has 32 bytes, got {len(pubkey)}")
    raw = pubkey + _onion_checksum(pubkey) + bytes([_ONION_VERSION])
    return b32encode(raw).decode().lower() + ".onion"


def _onion_v3_bytes(host: str) -> bytes:
    label = host.lower().removesuffix(".onion")
    try:
        raw = b32decode(label.upper())
    except ValueError:
        raise UsageError(f"{host!r} is not a Tor v3 onion address") from None
    if len(raw) != 35 or raw[34] != _ONION_VERSION or raw[32:34] != _onion_checksum(raw[:32]):
        raise UsageError(f"{host!r} is not a Tor v3 onion address (length, version or checksum)")
    return raw


def _check_port(address: Address) -> bytes:
    if not 0 <= address.port <= 0xFFFF:
        raise UsageError(f"port {address.port} of {address.host} is out of range")
    # BOLT #7: MUST NOT create a type 1, type 2 or type 5 address descriptor with port 0.
    if address.port == 0 and address.kind in (IPV4, IPV6, DNS):
        raise UsageError(f"address {address.host} has port 0")
    return address.port.to_bytes(2, "big")


def _encode_one(address: Address) -> bytes:
    port = _check_port(address)
    if address.kind == IPV4:
        return bytes([IPV4]) + ipaddress.IPv4Address(address.host).packed + port
    if address.kind == IPV6:
        return bytes([IPV6]) + ipaddress.IPv6Address(address.host).packed + port
    if address.kind == TORV3:
        return bytes([TORV3]) + _onion_v3_bytes(address.host) + port
    if address.kind == DNS:
        # BOLT #7: hostname bytes MUST be ASCII characters (non-ASCII: Punycode).
        if not address.host.isascii():
            raise UsageError(f"hostname {address.host!r} is not ASCII (encode it with Punycode)")
        name = address.host.encode()
        if not 0 < len(name) <= 255:
            raise UsageError(f"hostname {address.host!r} must have 1 to 255 bytes")
        return bytes([DNS, len(name)]) + name + port
    raise UsageError(f"unknown address kind {address.kind}")


def encode_addresses(addresses: Iterable[Address]) -> bytes:
    """The ``addresses`` field: descriptors sorted by type (BOLT #7: MUST be ascending)."""
    items = sorted(addresses, key=lambda a: a.kind)
    # BOLT #7: MUST NOT announce more than one type 5 DNS hostname.
    if sum(1 for a in items if a.kind == DNS) > 1:
        raise UsageError("at most one DNS hostname may be announced")
    try:
        return b"".join(_encode_one(a) for a in items)
    except ipaddress.AddressValueError as exc:
        raise UsageError(f"bad IP address: {exc}") from None


def decode_addresses(data: bytes) -> DecodedAddresses:
    """Read the ``addresses`` field by the BOLT 7 reader rules (see the module docstring)."""
    out: list[Address] = []
    pos, ignored, hostnames, previous = 0, 0, 0, 0
    while pos < len(data):
        kind = data[pos]
        field = f"addresses[{len(out) + ignored}]"
        if kind < previous:
            raise DecodeError(field, f"type {kind} after type {previous}: descriptors must ascend")
        previous = kind
        if kind == DNS:
            if pos + 2 > len(data):
                raise DecodeError(field, "addrlen cannot hold the hostname length")
            length = data[pos + 1]
            body_len = 1 + length + 2
        elif kind in _BODY_LENGTH:
            body_len = _BODY_LENGTH[kind]
        else:
            # BOLT #7: SHOULD ignore the first address descriptor that does NOT match the
            # types defined above (and, its length being unknown, everything after it).
            ignored += 1
            break
        body = data[pos + 1 : pos + 1 + body_len]
        if len(body) < body_len:
            raise DecodeError(field, f"addrlen is too short for a type {kind} descriptor")
        pos += 1 + body_len
        port = int.from_bytes(body[-2:], "big")
        # BOLT #7: SHOULD ignore Tor v2 onion services; if port is 0: SHOULD ignore the address.
        if kind == TORV2 or (port == 0 and kind != TORV3):
            ignored += 1
            continue
        if kind == IPV4:
            out.append(Address(IPV4, str(ipaddress.IPv4Address(body[:4])), port))
        elif kind == IPV6:
            out.append(Address(IPV6, str(ipaddress.IPv6Address(body[:16])), port))
        elif kind == TORV3:
            raw = body[:35]
            if raw[34] != _ONION_VERSION or raw[32:34] != _onion_checksum(raw[:32]):
                ignored += 1
                continue
            out.append(Address(TORV3, b32encode(raw).decode().lower() + ".onion", port))
        else:
            name = body[1 : 1 + length]
            hostnames += 1
            # BOLT #7: if more than one type 5 address is announced: SHOULD ignore the
            # additional data; MUST not forward the node_announcement.
            if hostnames > 1 or not name.isascii():
                ignored += 1
                continue
            out.append(Address(DNS, name.decode("ascii"), port))
    return DecodedAddresses(tuple(out), hostnames <= 1, ignored)
