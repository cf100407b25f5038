"""Encodings: bech32/bech32m, base58check, BigSize, TLV streams, and Lightning wire messages."""

from lightspeed.codec.bech32 import Encoding, bech32_decode, bech32_encode
from lightspeed.codec.bigsize import decode_bigsize, encode_bigsize
from lightspeed.codec.features import FEATURES, Features, negotiate
from lightspeed.codec.messages import (
    Error,
    Init,
    Message,
    Ping,
    Pong,
    UnknownMessage,
    Warning,
    WireMessage,
    decode_message,
    encode_message,
    make_message,
)
from lightspeed.codec.tlv import decode_tlv_stream, decode_tu, encode_tlv_stream, encode_tu

__all__ = [
    "FEATURES",
    "Encoding",
    "Error",
    "Features",
    "Init",
    "Message",
    "Ping",
    "Pong",
    "UnknownMessage",
    "Warning",
    "WireMessage",
    "bech32_decode",
    "bech32_encode",
    "decode_bigsize",
    "decode_message",
    "decode_tlv_stream",
    "decode_tu",
    "encode_bigsize",
    "encode_message",
    "encode_tlv_stream",
    "encode_tu",
    "make_message",
    "negotiate",
]
