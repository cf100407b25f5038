"""The asyncio runtime: peers over TCP now; channels, chain and payments as they land."""

from lightspeed.node.node import Node, PaymentReceived, PaymentSent
from lightspeed.node.peer import DEFAULT_FEATURES, Peer, PeerListener, connect

__all__ = ["DEFAULT_FEATURES", "Node", "PaymentReceived", "PaymentSent", "Peer", "PeerListener", "connect"]
