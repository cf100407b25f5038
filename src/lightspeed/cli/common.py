"""What every ``lightspeed`` command shares: its JSON style, amounts with units, ``--datadir`` after
the subcommand, Ctrl-C.

* **JSON**: a command prints one JSON document, indented by two spaces (:func:`print_json`), as
  ``lncli`` and ``lightning-cli`` do: people read it in a terminal, and ``json.load``/``jq`` read
  it the same. Only streams of results (``route --pairs``, a daemon's ready line) print one compact
  object per line (JSON Lines), so a reader can split them.
* **Amounts** (:class:`Amount`): a bare number is in the unit the name says (``AMOUNT_MSAT``,
  ``--push-msat``, ``AMOUNT_SAT``); a suffix says it instead: ``250000msat``, ``250sat``.
  ``_`` may group digits (``1_000_000``). Sat given where msat is wanted is multiplied by 1000;
  msat given where sat is wanted must be a whole number of sat.
* **Ctrl-C** (:class:`LightspeedGroup`): one line on stderr and exit 130 (128 + SIGINT), never
  click's ``Aborted!`` or a traceback.
* **Imports**: only click here. Commands import what they need when they run, so ``--help`` and a
  REST call start fast.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import click

EXIT_INTERRUPTED = 130
INTERRUPT_HINT = "lightspeed.interrupt_hint"  # ctx.meta key: a command's word on what goes on after Ctrl-C

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit: the CLI's way to report what the user can fix."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def json_text(data: Any) -> str:
    import json

    return json.dumps(data, indent=2)


def print_json(data: Any) -> None:
    """The one output style of a command's result (see the module docstring)."""
    click.echo(json_text(data))


# -- amounts -------------------------------------------------------------------------------------

_AMOUNT = re.compile(r"([0-9](?:_?[0-9])*)(msat|sat)?")


def parse_amount(text: str, unit: Literal["msat", "sat"]) -> int:
    """``text`` (``"1500"``, ``"1500sat"``, ``"1_500_000msat"``) as an int in ``unit``; ValueError says why."""
    match = _AMOUNT.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not an amount: give a whole number, optionally with msat or sat "
                         f"(a bare number is {unit})")
    number, suffix = int(match[1].replace("_", "")), match[2] or unit
    if suffix == unit:
        return number
    if unit == "msat":  # sat given
        return number * 1000
    if number % 1000:
        raise ValueError(f"{text!r} is not a whole number of sat")
    return number // 1000


class Amount(click.ParamType[int]):
    """An amount in ``unit``, given bare or with a ``msat``/``sat`` suffix, at least ``minimum``."""

    name = "amount"

    def __init__(self, unit: Literal["msat", "sat"], minimum: int = 0) -> None:
        self.unit, self.minimum = unit, minimum

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return param.name.upper() if param.name and isinstance(param, click.Argument) else self.unit.upper()

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            amount = value
        else:
            try:
                amount = parse_amount(str(value), self.unit)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if amount < self.minimum:
            self.fail(f"{value!r} is below the minimum of {self.minimum} {self.unit}", param, ctx)
        return amount


def segment(value: str, name: str) -> str:
    """VALUE, the argument NAME as typed, as one path segment of a REST URL.

    A `/` is refused here, and the rest percent-encoded (dots too): a `?`, `#` or `..` in it must
    not lead the request to another route (``disconnect '../stop#'`` reached ``POST /v1/stop``);
    the daemon then refuses a malformed value naming its field.
    """
    from urllib.parse import quote

    if "/" in value:
        fail(f"{name}: {value!r} is not one (it has a '/')")
    return quote(value, safe="").replace(".", "%2E")


# -- --datadir anywhere --------------------------------------------------------------------------

def _set_datadir(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.find_root().ensure_object(dict)["datadir"] = value


def datadir_option(fn: F) -> F:
    """``--datadir`` accepted after the subcommand too (it overrides the one given before it)."""
    return click.option("--datadir", type=click.Path(file_okay=False, path_type=Path), expose_value=False,
                        callback=_set_datadir, help="The node's data directory (as the global --datadir).")(fn)


def example(*lines: str) -> str:
    """An ``Example:`` paragraph for a command's help (click keeps its lines as they are)."""
    return "\n\n\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


def with_example(*lines: str) -> Callable[[F], F]:
    """Append an example to the docstring click shows as the command's help."""

    def decorate(fn: F) -> F:
        fn.__doc__ = (fn.__doc__ or "").rstrip() + example(*lines)
        return fn

    return decorate


# -- Ctrl-C --------------------------------------------------------------------------------------

class LightspeedGroup(click.Group):
    """The root group: Ctrl-C anywhere in a command is one line on stderr and exit 130.

    Why a SIGINT handler that exits at once rather than unwinding KeyboardInterrupt: an event loop
    interrupted mid-way logs its pending tasks ("Task was destroyed", CancelledError tracebacks)
    while it unwinds; a command has nothing to lose by stopping now (the daemon keeps its own
    state; SQLite files are atomic). The daemons (``node start``, ``serve-example``, ``chain
    serve-electrum``) install their own handler while they serve: Ctrl-C stops them cleanly.

    Only the ``lightspeed`` program itself (:func:`run_as_program`) exits at once; called in
    a process of its own (a test's CliRunner) it raises ``SystemExit(130)`` instead.
    """

    def invoke(self, ctx: click.Context) -> Any:
        in_main = _as_program and threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, _on_sigint) if in_main else None
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # raised before the handler was in place, or by the command itself
            _interrupted(ctx.meta.get(INTERRUPT_HINT))
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)


_as_program = False


def run_as_program(group: click.Group) -> None:
    """Run ``group`` as the process's program: Ctrl-C ends the process at once (see LightspeedGroup)."""
    global _as_program
    _as_program = True
    group()


def graceful_interrupt() -> None:
    """For a daemon command: Ctrl-C is KeyboardInterrupt again (asyncio.run cancels the main task and
    the daemon's own cleanup runs) until the daemon installs its own stop handler."""
    if _as_program and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _on_sigint(_signum: int, _frame: Any) -> None:
    ctx = click.get_current_context(silent=True)
    _interrupted(ctx.meta.get(INTERRUPT_HINT) if ctx is not None else None)


def _interrupted(hint: str | None) -> NoReturn:
    with contextlib.suppress(Exception):  # the interrupted code may hold stdout's lock
        sys.stdout.flush()
    message = "interrupted" + (f": {hint}" if hint else "")
    if not _as_program:
        click.echo(message, err=True)
        sys.exit(EXIT_INTERRUPTED)
    os.write(2, (message + "\n").encode())
    os._exit(EXIT_INTERRUPTED)
