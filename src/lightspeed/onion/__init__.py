"""BOLT 4 onion routing, sans-IO: Sphinx packets, hop payloads, failures, route blinding, onion messages.

Pure functions and frozen dataclasses: keys, block heights and randomness are
inputs (session keys are injectable so the spec vectors can be reproduced).
"""

from lightspeed.onion.blinding import (
    BlindedHop,
    BlindedHopSecrets,
    BlindedPath,
    EncryptedDataTlv,
    PaymentConstraints,
    PaymentRelay,
    UnblindedHop,
    blind_hop,
    check_allowed_features,
    create_blinded_path,
    next_path_key,
    unblind_hop,
)
from lightspeed.onion.failure import (
    BADONION,
    NODE,
    PERM,
    UPDATE,
    AttributedFailure,
    FailureCode,
    FailureMessage,
    create_failure_packet,
    decode_failure_packet,
    wrap_failure_packet,
)
from lightspeed.onion.message import (
    ForwardOnionMessage,
    OnionMessage,
    OnionMessagePayload,
    ReceivedOnionMessage,
    blinded_path_to,
    build_onion_message,
    create_reply_path,
    peel_onion_message,
)
from lightspeed.onion.payload import (
    HopPayload,
    InvalidHopPayload,
    check_hop_payload,
    final_total_msat,
)
from lightspeed.onion.sphinx import (
    PAYMENT_PACKET_SIZE,
    ROUTING_INFO_SIZE,
    BuiltOnion,
    HopKeys,
    OnionPacket,
    PeeledOnion,
    blinded_node_privkey,
    build_onion,
    derive_hop_keys,
    generate_key,
    generate_stream,
    peel_onion,
)

__all__ = [
    "BADONION", "NODE", "PAYMENT_PACKET_SIZE", "PERM", "ROUTING_INFO_SIZE", "UPDATE",
    "AttributedFailure", "BlindedHop", "BlindedHopSecrets", "BlindedPath", "BuiltOnion", "EncryptedDataTlv",
    "FailureCode", "FailureMessage", "ForwardOnionMessage", "HopKeys", "HopPayload", "InvalidHopPayload",
    "OnionMessage", "OnionMessagePayload", "OnionPacket", "PaymentConstraints", "PaymentRelay", "PeeledOnion",
    "ReceivedOnionMessage", "UnblindedHop",
    "blind_hop", "blinded_node_privkey", "blinded_path_to", "build_onion", "build_onion_message",
    "check_allowed_features", "check_hop_payload", "create_blinded_path", "create_failure_packet",
    "create_reply_path", "decode_failure_packet", "derive_hop_keys", "final_total_msat", "generate_key",
    "generate_stream", "next_path_key", "peel_onion", "peel_onion_message", "unblind_hop", "wrap_failure_packet",
]
