"""CLI ergonomics (issue 17): units, one JSON style, --datadir after the subcommand, Ctrl-C, help
with examples, fast start, tables at 80 columns, `chain` on the daemon's own chain.

Every command runs as a person types it (a subprocess); the daemons are real `node start`
processes and the "hung daemon" is a real socket that accepts and never answers.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from lightspeed.cli.common import parse_amount
from lightspeed.cli.main import cli
from lightspeed.cli.tables import render_table

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
INVOICE = ("lnbc2500u1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5"
           "rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu9qrsgquk0rl77nj30yxdy8j9vdx85fkpmdla2087ne0xh8nhe"
           "dh8w27kyke0lp53ut353s06fv3qfegext0eh0ymjpf39tuven09sam30g4vgpfna3rh")
KEY = "e126f68f7eafcc8b74f54d269fe206be715000f94dac067d1c04a8ca3b2db734"


def lightspeed(*args: str, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lightspeed", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or ENV)


def make_chain(path: Path) -> str:
    """A regtest chain file (as a daemon or `serve-electrum` creates it)."""
    from lightspeed.chain import RegtestChain

    RegtestChain(str(path)).close()
    return str(path)


def ok_json(*args: str) -> Any:
    result = lightspeed(*args)
    assert result.returncode == 0, f"lightspeed {' '.join(args)}: {result.stderr}"
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)


# -- amounts ------------------------------------------------------------------------------------

def test_amounts_take_a_unit_suffix_and_bare_numbers_keep_the_named_unit() -> None:
    assert parse_amount("250000", "msat") == 250_000
    assert parse_amount("250sat", "msat") == 250_000
    assert parse_amount("250SAT", "msat") == 250_000
    assert parse_amount("250000msat", "sat") == 250
    assert parse_amount("1_000_000", "sat") == 1_000_000
    assert parse_amount(" 7msat ", "msat") == 7
    with pytest.raises(ValueError, match="not a whole number of sat"):
        parse_amount("250001msat", "sat")
    for bad in ("", "-1", "1.5", "1e3", "0x10", "_1", "1__0", "10 sat", "10btc", "1msatsat", "sat"):
        with pytest.raises(ValueError, match="not an amount"):
            parse_amount(bad, "msat")


def test_invoice_create_accepts_a_sat_suffix_for_its_msat_amount() -> None:
    made = ok_json("invoice", "create", "--privkey", KEY, "--amount-msat", "250sat", "--description", "coffee")
    assert ok_json("invoice", "decode", made["invoice"])["amount_msat"] == 250_000
    made = ok_json("invoice", "create", "--privkey", KEY, "--amount-msat", "250000", "--description", "coffee")
    assert ok_json("invoice", "decode", made["invoice"])["amount_msat"] == 250_000  # the old spelling
    refused = lightspeed("invoice", "create", "--privkey", KEY, "--amount-msat", "0sat", "--description", "x")
    assert refused.returncode == 2 and "--amount-msat" in refused.stderr and "below the minimum of 1 msat" \
        in refused.stderr and "Traceback" not in refused.stderr


def test_chain_send_minimum_is_294_sat_in_either_spelling(tmp_path: Path) -> None:
    from lightspeed.bitcoin.address import segwit_address
    from lightspeed.bitcoin.network import REGTEST

    chain = make_chain(tmp_path / "chain.sqlite")
    address = segwit_address(0, bytes(20), REGTEST)
    ok_json("chain", "mine", "1", "--chain", chain)
    assert ok_json("chain", "send", address, "294000msat", "--chain", chain)["amount_sat"] == 294
    assert ok_json("chain", "send", address, "294", "--chain", chain)["amount_sat"] == 294
    for below in ("293", "293sat", "293000msat"):
        refused = lightspeed("chain", "send", address, below, "--chain", chain)
        assert refused.returncode == 2 and "AMOUNT_SAT" in refused.stderr and "minimum of 294 sat" in refused.stderr
    assert "not a whole number of sat" in lightspeed("chain", "send", address, "294500msat", "--chain", chain).stderr


# -- one JSON style --------------------------------------------------------------------------------

def test_every_command_prints_indented_json(tmp_path: Path) -> None:
    chain = make_chain(tmp_path / "chain.sqlite")
    runs = [("invoice", "decode", INVOICE), ("invoice", "create", "--privkey", KEY, "--description", "x"),
            ("offer", "decode", "lno1pqps7sjqpgtyzm3qv4uxzmtsd3jjqer9wd3hy6tsw35k7msjzfpy7nz5yqcnygrfdej82um5wf5k2"
                                "uckyypwa3eyt44h6txtxquqh7lz5djge4afgfjn7k4rgrkuag0jsd5xvxg"),
            ("chain", "mine", "1", "--chain", chain), ("chain", "info", "--chain", chain)]
    for args in runs:
        result = lightspeed(*args)
        assert result.returncode == 0, result.stderr
        assert result.stdout == json.dumps(json.loads(result.stdout), indent=2) + "\n", args


# -- --datadir after the subcommand -------------------------------------------------------------

def test_datadir_is_accepted_after_the_subcommand(tmp_path: Path) -> None:
    ok_json("chain", "mine", "3", "--chain", make_chain(tmp_path / "chain.sqlite"))
    node = tmp_path / "node"
    node.mkdir()
    assert ok_json("chain", "info", "--datadir", str(node))["height"] == 3  # DATADIR/../chain.sqlite
    assert ok_json("--datadir", "/nonexistent/x", "chain", "info", "--datadir", str(node))["height"] == 3
    assert ok_json("chain", "--datadir", str(node), "info")["height"] == 3
    missing = lightspeed("getinfo", "--datadir", str(node))
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and str(node) in missing.stderr
    missing = lightspeed("invoice", "new", "1000", "--datadir", str(node))
    assert missing.returncode == 1 and str(node) in missing.stderr


# -- help: examples, fast start -------------------------------------------------------------------

def every_command(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[list[str]]:
    yield list(path)
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))
        else:
            yield [*path, name]


@pytest.mark.parametrize("command", list(every_command()), ids=lambda c: " ".join(c) or "lightspeed")
def test_every_command_s_help_ends_with_an_example(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    example = result.output.split("Example:\n", 1)
    assert len(example) == 2, result.output
    assert example[1].lstrip().startswith("lightspeed "), result.output


def test_help_does_not_import_the_node_httpx_rich_or_the_codecs() -> None:
    """What makes a command start slowly is importing what it does not use (0.35 s -> 0.12 s)."""
    code = ("import sys\nfrom lightspeed.cli.main import cli\n"
            "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print(' '.join(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=ENV)
    loaded = set(result.stdout.split())
    heavy = {"httpx", "rich", "asyncio", "uvicorn", "starlette", "coincurve", "lightspeed.codec",
             "lightspeed.invoice", "lightspeed.offers", "lightspeed.routing", "lightspeed.node", "lightspeed.bitcoin"}
    assert "lightspeed.cli.main" in loaded and "click" in loaded
    assert heavy & loaded == set()


def test_the_cli_network_names_are_the_library_s() -> None:
    from lightspeed.bitcoin.network import NETWORKS
    from lightspeed.cli.invoice import NETWORK_NAMES

    assert tuple(n.name for n in NETWORKS) == NETWORK_NAMES


# -- Ctrl-C -----------------------------------------------------------------------------------------

@pytest.fixture
def hung_daemon(tmp_path: Path) -> Iterator[tuple[Path, socket.socket]]:
    """A datadir whose API address is a socket that accepts and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(30)
    datadir = tmp_path / "node"
    datadir.mkdir()
    (datadir / "api_address").write_text(f"127.0.0.1:{server.getsockname()[1]}")
    (datadir / "api_token").write_text("ab" * 16)
    try:
        yield datadir, server
    finally:
        server.close()


def interrupt(args: list[str], wait_for: socket.socket | None, delay_s: float = 0.3) -> tuple[int, str, str]:
    process = subprocess.Popen([sys.executable, "-m", "lightspeed", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=ENV)
    connections = []
    try:
        if wait_for is not None:
            connections.append(wait_for.accept()[0])  # the command is now inside its request
        time.sleep(delay_s)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        for connection in connections:
            connection.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, out, err


def test_ctrl_c_while_waiting_for_the_daemon_is_one_line_and_exit_130(
        hung_daemon: tuple[Path, socket.socket]) -> None:
    datadir, server = hung_daemon
    code, out, err = interrupt(["--datadir", str(datadir), "getinfo"], server)
    assert (code, out, err) == (130, "", "interrupted\n")
    code, out, err = interrupt(["pay", "lnbcrt1", "--datadir", str(datadir)], server)
    assert code == 130 and out == ""
    assert err == "interrupted: the daemon goes on with the payment; `lightspeed payments` shows how it ends\n"


def test_ctrl_c_in_a_command_running_its_own_node_and_event_loop(
        hung_daemon: tuple[Path, socket.socket], tmp_path: Path) -> None:
    _datadir, server = hung_daemon
    url = f"http://127.0.0.1:{server.getsockname()[1]}/weather/x"
    code, out, err = interrupt(["call", url, "--chain", str(tmp_path / "chain.sqlite")], server)
    assert (code, out, err) == (130, "", "interrupted\n")


@pytest.mark.slow
def test_ctrl_c_in_the_demo_stops_it_without_a_traceback() -> None:
    # 0.04 s: still importing the CLI (a loaded CI machine was still there at 1.0 s and printed a
    # KeyboardInterrupt traceback through lightspeed/cli/main.py); then in the TCP scenarios, then in
    # the paid API one.
    code, out, err = interrupt(["demo", "--json", "-q"], None, 0.04)
    assert "lightspeed" not in err, err  # no traceback through our code
    assert code != 130 or (out, err) == ("", "interrupted\n")  # (a signal in Python's own start-up may differ)
    for delay_s in (1.0, 2.5):
        code, out, err = interrupt(["demo", "--json", "-q"], None, delay_s)
        assert (code, out, err) == (130, "", "interrupted\n")


def test_a_daemon_command_still_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-m", "lightspeed", "chain", "serve-electrum", "--listen",
                                "127.0.0.1:0", "--chain", str(tmp_path / "chain.sqlite")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        assert process.stdout is not None
        assert "electrum_server" in json.loads(process.stdout.readline())
        time.sleep(0.5)  # the server installs its stop handler just after printing its ready line
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (process.returncode, err) == (0, "")  # it was "Aborted!", exit 1


# -- tables -----------------------------------------------------------------------------------------

CHANNEL_COLUMNS = ["channel_id", "peer_id", "state", "capacity_sat", "local_balance_msat", "remote_balance_msat",
                   "pending_htlcs", "close_type", "limbo_sat"]


def whole(number: int, text: str) -> bool:
    return re.search(rf"(?<![0-9,]){re.escape(f'{number:,}')}(?![0-9,…])", text) is not None


def test_a_table_too_wide_for_80_columns_becomes_records_with_whole_numbers() -> None:
    row = {"channel_id": "ab" * 32, "peer_id": "02" + "cd" * 32, "state": "awaiting_funding_locked",
           "capacity_sat": 16_777_215, "local_balance_msat": 16_777_215_000, "remote_balance_msat": 1_234_567_890,
           "pending_htlcs": 483, "close_type": None, "limbo_sat": 1_000_000}
    narrow = render_table("channels", [row], CHANNEL_COLUMNS, 80)
    assert all(len(line) <= 80 for line in narrow.splitlines())
    for column in ("capacity_sat", "local_balance_msat", "remote_balance_msat", "pending_htlcs", "limbo_sat"):
        assert whole(row[column], narrow), (column, narrow)
    wide = render_table("channels", [row], CHANNEL_COLUMNS, 200)
    assert "┃ capacity_sat" in wide and whole(16_777_215_000, wide)  # a real table when it fits


# -- against real daemons -------------------------------------------------------------------------

class Daemon:
    def __init__(self, datadir: Path, chain: Path) -> None:
        self.datadir = datadir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lightspeed", "node", "start", "--datadir", str(datadir), "--listen",
             "127.0.0.1:0", "--api", "127.0.0.1:0", "--chain", str(chain)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.stop()
            raise AssertionError("daemon did not start")
        self.ready: dict[str, str] = json.loads(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(scope="module")
def paid_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """Alice and Bob on a chain file of their own (--chain, not DATADIR/../chain.sqlite), a channel
    of 1,000,000 sat opened with amounts given with suffixes, and one paid invoice."""
    root = tmp_path_factory.mktemp("pair")
    chain = root / "elsewhere" / "chain.sqlite"
    chain.parent.mkdir()
    daemons = [Daemon(root / "alice", chain), Daemon(root / "bob", chain)]
    try:
        alice, bob = daemons
        a, b = str(alice.datadir), str(bob.datadir)
        ok_json("fund", "2000000sat", "--datadir", a)
        ok_json("connect", f"{bob.ready['node_id']}@{bob.ready['listen']}", "--datadir", a)
        opened = ok_json("open-channel", bob.ready["node_id"], "1000000000msat", "--push-msat", "1sat",
                         "--datadir", a)
        assert opened
        ok_json("chain", "mine", "3", "--datadir", a)  # on the daemons' chain: the channel confirms
        deadline = time.monotonic() + 45
        while ok_json("channels", "--datadir", a)["channels"][0]["state"] != "normal":
            assert time.monotonic() < deadline, "the channel never became normal"
            time.sleep(0.1)
        invoice = ok_json("invoice", "new", "250000sat", "a book", "--datadir", b)["invoice"]
        ok_json("pay", invoice, "--datadir", a)
        yield alice.datadir, bob.datadir, chain
    finally:
        for daemon in daemons:
            daemon.stop()


@pytest.mark.slow
def test_chain_commands_follow_the_daemon_s_own_chain_file(paid_pair: tuple[Path, Path, Path]) -> None:
    alice, _bob, chain = paid_pair
    before = ok_json("getinfo", "--datadir", str(alice))["block_height"]
    mined = ok_json("--datadir", str(alice), "chain", "mine", "2")
    assert mined["height"] == before + 2
    assert ok_json("chain", "info", "--chain", str(chain))["height"] == before + 2
    assert not (alice.parent / "chain.sqlite").exists()  # the default file was never made


@pytest.mark.slow
def test_amounts_given_with_suffixes_reach_the_daemon_converted(paid_pair: tuple[Path, Path, Path]) -> None:
    alice, bob, _chain = paid_pair
    channel = ok_json("channels", "--datadir", str(alice))["channels"][0]
    assert channel["capacity_sat"] == 1_000_000  # 1000000000msat
    assert channel["remote_balance_msat"] == 1_000 + 250_000_000  # --push-msat 1sat, then the 250000sat invoice
    received = ok_json("payments", "--direction", "received", "--datadir", str(bob))["payments"]
    assert [p["amount_msat"] for p in received] == [250_000_000]


def run_in_terminal(args: list[str], columns: int) -> str:
    """Run a command on a pseudo-terminal COLUMNS wide (rich then lays out for a terminal)."""
    primary, secondary = pty.openpty()
    env = {**ENV, "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"}
    process = subprocess.Popen([sys.executable, "-m", "lightspeed", *args], stdout=secondary,
                               stderr=subprocess.PIPE, env=env)
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the command closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    assert process.wait(60) == 0
    text = b"".join(chunks).decode().replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


@pytest.mark.slow
def test_tables_at_80_columns_never_cut_a_number(paid_pair: tuple[Path, Path, Path]) -> None:
    alice, _bob, _chain = paid_pair
    channel = ok_json("channels", "--datadir", str(alice))["channels"][0]
    shown = run_in_terminal(["channels", "--table", "--datadir", str(alice)], 80)
    assert all(len(line) <= 80 for line in shown.splitlines()), shown
    for column in ("capacity_sat", "local_balance_msat", "remote_balance_msat"):
        assert whole(channel[column], shown), (column, shown)
    payment = ok_json("payments", "--datadir", str(alice))["payments"][0]
    shown = run_in_terminal(["payments", "--table", "--datadir", str(alice)], 80)
    assert whole(payment["amount_msat"], shown) and payment["status"] in shown, shown


def test_the_demo_table_at_80_columns_keeps_every_number_whole() -> None:
    import io

    from rich.console import Console

    from lightspeed.cli.demo import ScenarioResult, results_table

    results = [  # details as the scenarios return them (see `lightspeed demo --json`)
        ScenarioResult("Two nodes over TCP: open a channel, pay both ways, close cooperatively", True, 25_473.125,
                       {"channel_open_ms": 74.7, "payments_both_ways": 3, "ms_per_payment_over_tcp": 14.35,
                        "mutual_close_txid": "cd" * 32, "closing_outputs_sat": [75_001, 924_554],
                        "close_confirmations": 1}),
        ScenarioResult("Pay-per-call: 10,000 HTTP calls through one allowance", True, 3_261.5,
                       {"calls_served": 10_000, "lightning_payments": 1, "paid_msat": 1_000, "calls_per_s": 3_925}),
    ]
    console = Console(width=80, file=io.StringIO(), color_system=None)
    with console.capture() as capture:
        console.print(results_table(results))
    shown = capture.get()
    assert all(len(line) <= 80 for line in shown.splitlines()), shown
    for number in ("14.35", "75001", "924554", "74.7", "25,473.1", "3,261.5", "10000", "3925"):
        assert re.search(rf"(?<![0-9.,]){re.escape(number)}(?![0-9.,]*[0-9…])", shown), (number, shown)


def test_ctrl_c_in_process_is_exit_130_and_leaves_the_caller_running() -> None:
    """Under CliRunner (in a test's process) an interrupted command must not end the process."""
    from lightspeed.cli.common import INTERRUPT_HINT, LightspeedGroup

    @click.group(cls=LightspeedGroup)
    def group() -> None:
        pass

    @group.command()
    @click.pass_context
    def wait(ctx: click.Context) -> None:
        ctx.meta[INTERRUPT_HINT] = "it goes on"
        raise KeyboardInterrupt

    result = CliRunner().invoke(group, ["wait"])
    assert result.exit_code == 130 and "interrupted: it goes on" in result.output
    assert "Aborted" not in result.output
