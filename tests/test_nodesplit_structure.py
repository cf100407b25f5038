"""node.py's split (issue 17, Structure): small modules, no import cycle, the same API.

The parts of :class:`~lightspeed.node.node.Node` are modules node.py imports; they may name
``Node`` only under ``TYPE_CHECKING``. The import graph is read with :mod:`ast` (so a lazy import
inside a function counts too), and each part is imported first in a fresh interpreter (the
package ``__init__`` loads node.py, which loads the part: a part importing node.py at runtime
fails there with a partially initialized module).
"""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import lightspeed.node
from lightspeed.node import node as node_module
from lightspeed.node.node import Node

NODE_DIR = Path(lightspeed.node.__file__).parent
PACKAGE = "lightspeed.node"
NODE_MODULE = "lightspeed.node.node"
MAX_LINES = 800
#: The parts this split made; the graph walk must find them (else it checks nothing).
SPLIT_PARTS = {"connections", "opening", "channel_steps", "sending", "receiving", "forwarding_runtime",
               "closing", "outcomes"}


def _tree(module: str) -> ast.Module:
    return ast.parse((NODE_DIR / f"{module}.py").read_text(), filename=f"{module}.py")


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST) -> set[str]:
    """Every module an import names, outside ``if TYPE_CHECKING:`` blocks (inside functions too)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            found.add(node.module)
            # ``from lightspeed.node import sending`` imports the submodule sending
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _local(modules: set[str]) -> set[str]:
    """The modules of this package among ``modules`` (by short name), node.py's own name included."""
    return {m.removeprefix(f"{PACKAGE}.") for m in modules
            if m.startswith(f"{PACKAGE}.") and (NODE_DIR / f"{m.removeprefix(f'{PACKAGE}.')}.py").exists()}


def node_parts() -> set[str]:
    """Every module of the package node.py imports at runtime, directly or through another part."""
    parts: set[str] = set()
    todo = _local(_runtime_imports(_tree("node"))) - {"node"}
    while todo:
        module = todo.pop()
        parts.add(module)
        todo |= _local(_runtime_imports(_tree(module))) - parts - {"node"}
    return parts


def test_the_graph_walk_sees_type_checking_imports_as_not_runtime() -> None:
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lightspeed.node.node import Node\n"
                     "def f():\n    from lightspeed.node import node\n")
    assert _runtime_imports(tree) >= {"lightspeed.node", "lightspeed.node.node"}  # the lazy one counts
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lightspeed.node.node import Node\n")
    assert NODE_MODULE not in _runtime_imports(tree)


def test_node_py_parts_never_import_node_py_at_runtime() -> None:
    parts = node_parts()
    assert parts >= SPLIT_PARTS, f"node.py no longer imports {sorted(SPLIT_PARTS - parts)}"
    cycles = sorted(part for part in parts if "node" in _local(_runtime_imports(_tree(part))))
    assert cycles == [], f"these parts of node.py import node.py at runtime (an import cycle): {cycles}"


def test_the_parts_import_first_in_a_fresh_interpreter() -> None:
    """The package ``__init__`` loads node.py, which loads every part while node.py is half done."""
    code = "; ".join(f"import {PACKAGE}.{part}" for part in sorted(SPLIT_PARTS))
    code += f"; import sys; assert sys.modules['{NODE_MODULE}'].Node"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(NODE_DIR.parents[1])})
    assert result.returncode == 0, result.stderr


def test_every_module_of_the_node_package_is_under_800_lines() -> None:
    sizes = {path.name: len(path.read_text().splitlines()) for path in NODE_DIR.glob("*.py")}
    assert sizes["node.py"] > 0
    too_big = {name: lines for name, lines in sizes.items() if lines >= MAX_LINES}
    assert too_big == {}, f"modules of {PACKAGE} at or over {MAX_LINES} lines: {too_big}"


def test_names_importers_take_from_node_py_still_import() -> None:
    from lightspeed.node.node import (  # noqa: F401 (the import is the test)
        CLOSING_WEIGHT,
        FINAL_CLTV_MARGIN,
        HtlcHeld,
        HtlcKey,
        NodeEvent,
        PaymentFailed,
        PaymentReceived,
        PaymentSent,
    )

    assert FINAL_CLTV_MARGIN == 12 and CLOSING_WEIGHT == 700
    assert PaymentReceived.__module__ == "lightspeed.node.outcomes"
    assert lightspeed.node.PaymentReceived is PaymentReceived


def test_every_function_a_part_writes_for_node_is_bound_on_node() -> None:
    """A part's function taking ``self: Node`` that Node does not bind would be dead (or an AttributeError)."""
    bound = 0
    for part in sorted(SPLIT_PARTS):
        for stmt in _tree(part).body:
            if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) or not stmt.args.args:
                continue
            first = stmt.args.args[0]
            if first.arg != "self" or not (isinstance(first.annotation, ast.Name) and first.annotation.id == "Node"):
                continue
            method = inspect.getattr_static(Node, stmt.name, None)
            assert method is not None, f"{part}.{stmt.name} is not bound on Node"
            assert method.__module__ == f"{PACKAGE}.{part}", f"Node.{stmt.name} is not {part}.{stmt.name}"
            bound += 1
    assert bound >= 90  # the methods node.py had (109) less the ones it kept


def test_methods_callers_use_are_still_methods_of_node() -> None:
    """Public commands and the private methods tests call are where they were: on Node."""
    for name in ("start", "stop", "connect", "open_channel", "pay", "keysend", "pay_amp", "pay_blinded",
                 "send_to_route", "create_invoice", "create_amp_invoice", "create_hold_invoice", "settle_hold",
                 "cancel_hold", "close_channel", "force_close_channel", "update_fee", "payment_status",
                 "short_channel_id", "blinded_payment_paths", "private_route_hints", "peer", "peer_ids",
                 "_save", "_run_step", "_pay_parts", "_offer_htlc", "_new_secrets", "_handle", "_usable", "_keep_connected"):
        assert callable(getattr(Node, name)), name
    assert isinstance(inspect.getattr_static(Node, "_unresolved_htlcs"), staticmethod)
    assert isinstance(inspect.getattr_static(Node, "_locked_incoming"), staticmethod)
    assert node_module.Node is Node
