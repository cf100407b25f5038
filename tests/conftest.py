"""Test ordering for a short wall time under ``pytest -n 2`` (CI's command; see ``--dist`` in pyproject.toml).

The modules with end-to-end (``slow``) tests run first, every module's tests kept together and in
their own order; the unit-test modules follow. With ``--dist worksteal`` a worker that runs out of
tests takes half of the other's queue, so what matters is the end: when the last tests are short,
both workers finish within a second of each other. In collection order the suite ended on daemon
scenarios of 20-30 s (tests/test_wire14_daemons.py), which one worker ran while the other had
nothing left.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    slow_modules = {item.path for item in items if item.get_closest_marker("slow") is not None}
    items.sort(key=lambda item: item.path not in slow_modules)  # stable: each module's order is kept
