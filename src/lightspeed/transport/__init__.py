"""BOLT 8 transport: the Noise_XK handshake and the encrypted message framing (sans-IO)."""

from lightspeed.transport.cipher import MAX_MESSAGE_SIZE, CipherState, NoiseTransport
from lightspeed.transport.noise import Handshake, Role

__all__ = ["MAX_MESSAGE_SIZE", "CipherState", "Handshake", "NoiseTransport", "Role"]
