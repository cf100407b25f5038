"""The asyncio runtime: peers over TCP, durable channels (through a Store), payments and their events."""

from lightspeed.node.node import Node, PaymentFailed, PaymentReceived, PaymentSent
from lightspeed.node.peer import DEFAULT_FEATURES, Peer, PeerListener, connect

__all__ = ["DEFAULT_FEATURES", "Node", "PaymentFailed", "PaymentReceived", "PaymentSent", "Peer", "PeerListener",
           "connect"]
