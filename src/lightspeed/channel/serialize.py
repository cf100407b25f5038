"""A :class:`Channel` as bytes and back, exactly: what the store keeps so a node can resume.

The record is JSON (bytes in hex, wire messages in their wire encoding) so an
operator can read it and a PostgreSQL store can keep it as ``jsonb``. It holds
everything needed to continue the channel as if nothing happened: the agreed
config, our secrets (or only the index they are derived from, so the store holds
no private key), the HTLC log with its commitment numbers, the peer's
per-commitment points and revealed secrets (shachain), the peer's signatures
on our latest commitment (what a force close broadcasts) and the journal of
sent messages that ``channel_reestablish`` may need to retransmit.

What grows with the channel's age is kept apart so a state change writes a
bounded record: each remote commitment we sign (what punishing it once revoked
needs, with the peer's point for it) is one :func:`remote_commitment_record`
the store appends once; :func:`channel_to_record` leaves those out and
:func:`channel_from_record` takes them back. Caches are not stored: they are
rebuilt on demand.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from operator import itemgetter
from typing import Any

from lightspeed.channel.commitment import ChannelBasepoints, CommitmentKeys, CommitmentParams, Htlc
from lightspeed.channel.htlc_log import HtlcLog, Side
from lightspeed.channel.numbered import numbers_above
from lightspeed.channel.record_json import encode, encode_small, json_array, json_object
from lightspeed.channel.state import Channel, ChannelConfig, LocalSecrets
from lightspeed.codec.message_base import WireMessage
from lightspeed.codec.messages import decode_message, encode_message
from lightspeed.crypto.shachain import ShachainStore
from lightspeed.errors import DecodeError

FORMAT_VERSION = 1


def _hex_fields(obj: object, names: Iterable[str]) -> list[object]:
    return [v.hex() if isinstance(v, bytes) else v for v in (getattr(obj, n) for n in names)]


_CONFIG_FIELDS = [n for n in ChannelConfig.__dataclass_fields__ if n != "remote_basepoints"]
_BASEPOINT_FIELDS = list(ChannelBasepoints.__dataclass_fields__)
_KEY_FIELDS = list(CommitmentKeys.__dataclass_fields__)
_SECRET_FIELDS = list(LocalSecrets.__dataclass_fields__)
_BYTES_CONFIG = {"channel_id", "funding_txid"}


def _config_record(config: ChannelConfig) -> dict[str, object]:
    record = dict(zip(_CONFIG_FIELDS, _hex_fields(config, _CONFIG_FIELDS), strict=True))
    record["remote_basepoints"] = _hex_fields(config.remote_basepoints, _BASEPOINT_FIELDS)
    return record


def _config_from(record: Mapping[str, Any]) -> ChannelConfig:
    # A record written before a field existed lacks it: the field's default is what that channel
    # ran under (e.g. the negotiated limits, stored since issue 11, default to 0 / 1 / unlimited).
    values: dict[str, Any] = {n: bytes.fromhex(record[n]) if n in _BYTES_CONFIG else record[n]
                              for n in _CONFIG_FIELDS if n in record}
    basepoints = ChannelBasepoints(*(bytes.fromhex(p) for p in record["remote_basepoints"]))
    return ChannelConfig(remote_basepoints=basepoints, **values)


def _wire(message: WireMessage) -> str:
    return encode_message(message).hex()


def _journal_json(channel: Channel) -> str:
    """The journal's messages in wire encoding (hex), as JSON text, encoding only those not written before.

    Messages are frozen dataclasses, so one's encoding never changes; the cache keeps only
    what the journal still holds (and the message itself, so its id cannot be reused). The
    journal holds the onions of the HTLCs in flight (1366 bytes each): most of the record.
    """
    known = channel._journal_json
    kept: dict[int, tuple[WireMessage, str]] = {}
    for message in channel._journal:
        entry = known.get(id(message))
        if entry is None or entry[0] is not message:
            entry = (message, encode(_wire(message)))
        kept[id(message)] = entry
    channel._journal_json = kept
    return json_array(kept[id(message)][1] for message in channel._journal)


def _kept_json(channel: Channel, part: str, source: object, build: Callable[[], object]) -> str:
    """The JSON of ``build()``, encoded again only when ``source`` is no longer the same object.

    For parts of the record made from one immutable object (the frozen config, the tuple of
    the peer's HTLC signatures): a change replaces the object, so identity says it changed.
    """
    memo = channel._record_json.get(part)
    if memo is None or memo[0] is not source:
        memo = channel._record_json[part] = (source, encode(build()))
    return memo[1]


def _unwire(data: str) -> WireMessage:
    message = decode_message(bytes.fromhex(data))
    if not isinstance(message, WireMessage):
        raise DecodeError("channel record", f"journal holds a {type(message).__name__}, not a channel message")
    return message


def channel_record(channel: Channel, key_index: int | None = None) -> dict[str, object]:
    """The channel's state as plain JSON values, built whole: what :func:`channel_to_record` writes.

    Only the peer's points still needed to sign are kept here (older ones travel with
    their :func:`remote_commitment_record`), and the preimages of HTLCs still in the log.
    With ``key_index``, our secrets are not written, only that index: whoever loads the
    record derives them again (see :func:`channel_from_record`). This is the definition of
    the record; the store writes its JSON through the faster :func:`channel_to_record`, and
    the tests hold the two equal, so this stays the plain whole build.
    """
    log = channel.log
    live_ids = {h.htlc_id for owner in Side for h in log.commitment(owner, pending=True).htlcs
                if h.offerer is Side.LOCAL}
    signature = channel._remote_signature
    return {
        "version": FORMAT_VERSION,
        "key_index": key_index,
        "local_funding_pubkey": channel._basepoints.funding_pubkey.hex(),
        "local_msat": channel.local_msat,
        "remote_msat": channel.remote_msat,
        "feerate_per_kw": channel.feerate_per_kw,
        "remote_points": {str(n): p.hex() for n, p in channel.remote_points.items() if n > log.revoked[Side.REMOTE]},
        "remote_secrets": channel.remote_secrets.serialize().hex(),
        "preimages": {str(i): p.hex() for i, p in channel.preimages.items() if i in live_ids},
        "config": _config_record(channel.config),
        "secrets": _hex_fields(channel.secrets, _SECRET_FIELDS) if key_index is None else None,
        "remote_signature": None if signature is None else signature.hex(),
        "remote_htlc_signatures": [s.hex() for s in channel.remote_htlc_signatures],
        "journal": [_wire(m) for m in channel._journal],
        "log": channel.log.to_record(),
    }


def _hex_map_json(items: Iterable[tuple[int, bytes]]) -> str:
    """A ``{"number": "hex"}`` object's JSON text (hex needs no escaping)."""
    return json_object({str(n): f'"{value.hex()}"' for n, value in items})


def _small_parts_json(channel: Channel, key_index: int | None) -> dict[str, str]:
    """The JSON texts of the parts of :func:`channel_record` that are small or change at every step.

    Each is found without scanning what grows with the channel's age: the peer's points above
    the revoked commitment by number (:class:`NumberedBook`), the preimages by the live HTLC ids.
    """
    log, points = channel.log, channel.remote_points
    revoked = log.revoked[Side.REMOTE]
    needed = numbers_above(points, revoked)
    return {
        "version": encode_small(FORMAT_VERSION),
        "key_index": encode_small(key_index),
        "local_funding_pubkey": f'"{channel._basepoints.funding_pubkey.hex()}"',
        "local_msat": encode_small(channel.local_msat),
        "remote_msat": encode_small(channel.remote_msat),
        "feerate_per_kw": encode_small(channel.feerate_per_kw),
        "remote_points": _hex_map_json((n, points[n]) for n in needed),
        "remote_secrets": f'"{channel.remote_secrets.serialize().hex()}"',
        "preimages": _preimages_json(channel, log.live_offered_ids()),
    }


def _preimages_json(channel: Channel, live_ids: set[int]) -> str:
    """The preimages of the live HTLCs as the ``{"id": "hex"}`` object's JSON text, each member kept.

    A preimage stays in the record from its fulfill until its HTLC leaves the log, over several
    saves; the kept text holds the preimage itself, so a replaced one is written anew. Members
    go in the order of their keys as strings, as ``sort_keys`` orders them.
    """
    known, preimages = channel._preimage_json, channel.preimages
    kept: dict[int, tuple[bytes, str, str]] = {}
    for htlc_id in live_ids:
        preimage = preimages.get(htlc_id)
        if preimage is None:
            continue
        entry = known.get(htlc_id)
        if entry is None or entry[0] is not preimage:
            key = str(htlc_id)
            entry = (preimage, key, f'"{key}":"{preimage.hex()}"')
        kept[htlc_id] = entry
    channel._preimage_json = kept
    return "{" + ",".join(entry[2] for entry in sorted(kept.values(), key=itemgetter(1))) + "}"


def channel_to_record(channel: Channel, key_index: int | None = None) -> bytes:
    """The JSON of :func:`channel_record` (compact, keys sorted), byte for byte, built from kept parts.

    A channel is saved at every commitment step and most of its record did not change since
    the last save: the config, our secrets, the journal messages and most HTLC log entries
    are encoded once and their JSON text kept (see ``record_json``); the rest is encoded anew.
    """
    members = _small_parts_json(channel, key_index)
    members["config"] = _kept_json(channel, "config", channel.config, lambda: _config_record(channel.config))
    members["secrets"] = "null" if key_index is not None else _kept_json(
        channel, "secrets", channel.secrets, lambda: _hex_fields(channel.secrets, _SECRET_FIELDS))
    signature = channel._remote_signature
    members["remote_signature"] = "null" if signature is None else encode(signature.hex())
    members["remote_htlc_signatures"] = _kept_json(
        channel, "remote_htlc_signatures", channel.remote_htlc_signatures,
        lambda: [s.hex() for s in channel.remote_htlc_signatures])
    members["journal"] = _journal_json(channel)
    members["log"] = channel.log.to_record_json()
    return json_object(members).encode()


def remote_commitment_record(channel: Channel, ctn: int) -> bytes:
    """Remote commitment ``ctn`` as we signed it, with the peer's point for it (for punishment)."""
    params = channel.signed_remote[ctn]
    htlcs = [[h.offered, h.amount_msat, h.payment_hash.hex(), h.cltv_expiry] for h in params.htlcs]
    fields = [n for n in CommitmentParams.__dataclass_fields__ if n not in ("keys", "htlcs")]
    record = {
        "point": channel.remote_points[ctn].hex(),
        "params": dict(zip(fields, _hex_fields(params, fields), strict=True)),
        "keys": _hex_fields(params.keys, _KEY_FIELDS),
        "htlcs": htlcs,
    }
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def _params_from(record: Mapping[str, Any]) -> tuple[bytes, CommitmentParams]:
    values = dict(record["params"])
    values["funding_txid"] = bytes.fromhex(values["funding_txid"])
    keys = CommitmentKeys(*(bytes.fromhex(k) for k in record["keys"]))
    htlcs = tuple(Htlc(bool(o), int(a), bytes.fromhex(h), int(c)) for o, a, h, c in record["htlcs"])
    return bytes.fromhex(record["point"]), CommitmentParams(keys=keys, htlcs=htlcs, **values)


def channel_from_record(data: bytes, remote_commitments: Mapping[int, bytes] | None = None,
                        derive_secrets: Callable[[int], LocalSecrets] | None = None) -> Channel:
    """Rebuild the channel from :func:`channel_to_record` and its remote commitment records.

    ``derive_secrets`` gives our secrets for a record that holds only their key index; the
    secrets must match the basepoints the peer knows, which the rebuilt channel checks.
    """
    try:
        record = json.loads(data)
        if record.get("version") != FORMAT_VERSION:
            raise DecodeError("channel record", f"unknown format version {record.get('version')!r}")
        if record["secrets"] is not None:
            secrets = LocalSecrets(*(bytes.fromhex(s) for s in record["secrets"]))
        elif derive_secrets is None:
            raise DecodeError("channel record", "holds only a key index and no way to derive the secrets was given")
        else:
            secrets = derive_secrets(int(record["key_index"]))
        channel = Channel(_config_from(record["config"]), secrets, int(record["local_msat"]),
                          int(record["remote_msat"]), int(record["feerate_per_kw"]), {})
        if channel._basepoints.funding_pubkey.hex() != record["local_funding_pubkey"]:
            raise DecodeError("channel record", "our secrets do not match the channel's funding key")
        channel.log = HtlcLog.from_record(record["log"])
        for ctn, raw in sorted((remote_commitments or {}).items()):
            point, params = _params_from(json.loads(raw))
            channel.signed_remote[ctn] = params
            channel.remote_points[ctn] = point
        channel.remote_points.update({int(n): bytes.fromhex(p) for n, p in record["remote_points"].items()})
        channel.remote_secrets = ShachainStore.parse(bytes.fromhex(record["remote_secrets"]))
        channel.preimages = {int(i): bytes.fromhex(p) for i, p in record["preimages"].items()}
        signature = record["remote_signature"]
        channel._remote_signature = None if signature is None else bytes.fromhex(signature)
        channel.remote_htlc_signatures = tuple(bytes.fromhex(s) for s in record["remote_htlc_signatures"])
        channel._journal = [_unwire(m) for m in record["journal"]]
    except DecodeError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DecodeError("channel record", f"malformed: {exc!r}") from None
    return channel
