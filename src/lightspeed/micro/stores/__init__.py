"""Implementations of :class:`lightspeed.micro.store.AllowanceStore`."""
