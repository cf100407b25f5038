"""The asyncio runtime: peers over TCP, durable channels (through a Store), payments and their events."""

from lightspeed.node.node import HtlcHeld, Node, PaymentFailed, PaymentReceived, PaymentSent
from lightspeed.node.paying import RouteFailed
from lightspeed.node.peer import DEFAULT_FEATURES, Peer, PeerListener, connect

__all__ = ["DEFAULT_FEATURES", "HtlcHeld", "Node", "PaymentFailed", "PaymentReceived", "PaymentSent", "Peer",
           "PeerListener", "RouteFailed", "connect"]
