"""Harnesses that drive a real node from test tools outside the project.

:mod:`lightspeed.testing.harness` runs a :class:`~lightspeed.node.Node` on an event loop of
its own thread, behind a synchronous handle; :mod:`lightspeed.testing.lnprototest` adapts it
to lnprototest, the BOLT authors' conformance suite. Nothing here is imported by the package
itself: ``import lightspeed`` works without lnprototest, which only the adapter needs.
"""
