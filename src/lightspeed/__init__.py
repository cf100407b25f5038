"""Lightspeed: a Lightning Network micropayment stack.

The protocol core (``codec``, ``crypto``, ``invoice``, ``bitcoin``, ``transport``,
``onion``, ``channel``, ...) is sans-IO; ``node`` is the asyncio runtime.
"""

__version__ = "0.1.0"
