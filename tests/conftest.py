"""Test order for a short wall time under ``pytest -n 2`` (CI's command; ``--dist worksteal`` is in pyproject.toml).

Worksteal hands each worker an equal share of the collection in order (the first half to one, the
second to the other), each runs its share from the front, and a worker that runs out takes the
back half of the other's queue. The end is what costs: a worker busy with a 20 s daemon scenario
while the other has nothing left. So the collection is laid out as one lane per worker, each its
share of the end-to-end modules (``slow`` tests: daemons, Electrum, browsers) first and unit-test
modules after: the scenarios run early on both workers, and what is left to steal, and to finish
on, are short tests. Every module stays whole and in its own order (module-scoped fixtures such
as the Electrum network are set up once); without xdist there is one lane (slow modules first).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Rough weights to deal the slow modules out evenly: what matters is their order of size.
INTEROP_TEST_S = 15.0
SLOW_TEST_S = 6.0
OTHER_TEST_S = 0.2


def _weight(items: list[pytest.Item]) -> float:
    return sum(INTEROP_TEST_S if item.get_closest_marker("interop") and item.get_closest_marker("slow")
               else SLOW_TEST_S if item.get_closest_marker("slow") else OTHER_TEST_S for item in items)


def _lane_sizes(total: int, lanes: int) -> list[int]:
    """How worksteal splits ``total`` tests between ``lanes`` idle workers at the start."""
    sizes = []
    for i in range(lanes):
        sizes.append(total // (lanes - i))
        total -= sizes[-1]
    return sizes


@pytest.hookimpl(trylast=True)  # after pytest groups the items of parametrized module fixtures
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("failedfirst", False) or config.getoption("newfirst", False):
        return  # --ff / --nf: the order asked for on the command line wins
    modules: dict[Path, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.path, []).append(item)
    is_slow = {path: any(t.get_closest_marker("slow") for t in tests) for path, tests in modules.items()}
    slow = [tests for path, tests in modules.items() if is_slow[path]]
    fast = [test for path, tests in modules.items() if not is_slow[path] for test in tests]
    lanes = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    dealt: list[list[pytest.Item]] = [[] for _ in range(lanes)]
    loads = [0.0] * lanes
    for tests in sorted(slow, key=_weight, reverse=True):  # heaviest first, to the lightest lane
        lane = loads.index(min(loads))
        dealt[lane] += tests
        loads[lane] += _weight(tests)
    ordered: list[pytest.Item] = []
    for lane, size in zip(dealt, _lane_sizes(len(items), lanes), strict=True):
        room = max(0, size - len(lane))
        ordered += lane + fast[:room]
        del fast[:room]
    ordered += fast
    assert len(ordered) == len(items)
    items[:] = ordered
