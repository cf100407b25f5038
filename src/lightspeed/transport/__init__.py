"""BOLT 8 transport: the Noise_XK handshake and the encrypted message framing (sans-IO)."""

from lightspeed.transport.cipher import MAX_MESSAGE_SIZE, CipherState, FrameError, NoiseTransport
from lightspeed.transport.noise import Handshake, Role
from lightspeed.transport.session import (
    Connected,
    Disconnected,
    MessageReceived,
    PeerSession,
    SessionLimits,
)

__all__ = [
    "MAX_MESSAGE_SIZE",
    "CipherState",
    "Connected",
    "Disconnected",
    "FrameError",
    "Handshake",
    "MessageReceived",
    "NoiseTransport",
    "PeerSession",
    "Role",
    "SessionLimits",
]
