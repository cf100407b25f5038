"""Electrum as a live Lightning peer of a Lightspeed daemon: every party is its own process.

One network per Electrum release: the embedded regtest chain in a file, an Electrum server over
it (``lightspeed chain serve-electrum``), a Lightspeed daemon (``lightspeed node start``) and two
Electrum wallet daemons, ``alice`` (opens channels) and ``bob`` (``lightning_listen``: accepts
them). Electrum is configured as its own regtest script does (``create --offline``, then
``setconfig --offline`` for ``use_gossip``, ``auto_connect``, ``oneserver``, ``server``,
``lightning_to_self_delay``) and driven through its JSON-RPC interface, the same commands its
command line sends (one HTTP request instead of one Python start per command). Lightspeed is
driven through its command line. Blocks are mined with ``lightspeed chain mine``; on-chain
outcomes are read from the chain file itself.

Where Electrum comes from: Debian's 4.3.4 (``/usr/bin/electrum``) and the 4.8.1 release that
``tools/install_electrum_peers.sh`` unpacks under ``.cache/``; ``LIGHTSPEED_ELECTRUM_434`` /
``LIGHTSPEED_ELECTRUM_481`` override the command. A missing Electrum skips locally and fails in CI.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest

from lightspeed.chain import RegtestChain

REPO = Path(__file__).resolve().parents[2]
VERSIONS = ("4.3.4", "4.8.1")
CACHE = REPO / ".cache"
PYTHON = sys.executable
COIN = 100_000_000
# What Electrum asks Lightspeed to wait before sweeping its own to_local (BOLT 2 to_self_delay in
# Electrum's open/accept): small, so Lightspeed's sweeps after a force close need few blocks.
ELECTRUM_TO_SELF_DELAY = 10
# Lightspeed's to_self_delay for Electrum's outputs (node.TO_SELF_DELAY): Electrum sweeps after it.
LIGHTSPEED_TO_SELF_DELAY = 144
# The block targets Electrum keeps a fee estimate for (4.8.1's fee_policy.FEE_ETA_TARGETS).
ELECTRUM_FEE_TARGETS = (1, 2, 5, 10, 25, 144, 1008)
PR_SET_PDEATHSIG = 1


class ElectrumError(AssertionError):
    """An Electrum command answered with an error (the message is Electrum's)."""


@dataclass(frozen=True)
class ElectrumRelease:
    version: str
    argv: tuple[str, ...]  # the command that runs run_electrum

    @property
    def anchors(self) -> bool:
        """4.3.4 opens static_remotekey channels; 4.8.1 requires option_anchors."""
        return self.version != "4.3.4"


def _default_argv(version: str) -> tuple[str, ...]:
    if version == "4.3.4":
        return ("/usr/bin/python3", "/usr/bin/electrum")
    home = CACHE / f"electrum-{version}"
    return (str(home / "venv" / "bin" / "python"), str(home / f"electrum-{version}" / "run_electrum"))


@cache
def find_release(version: str) -> ElectrumRelease | str:
    """The release, or why it cannot run here (checked by asking it its version)."""
    variable = "LIGHTSPEED_ELECTRUM_" + version.replace(".", "")
    argv = tuple(shlex.split(os.environ[variable])) if os.environ.get(variable) else _default_argv(version)
    missing = [part for part in argv[:2] if part.startswith("/") and not Path(part).exists()]
    if missing:
        return (f"Electrum {version} is not installed ({missing[0]} is missing): run "
                f"tools/install_electrum_peers.sh or set {variable}")
    try:
        done = subprocess.run([*argv, "version", "--offline"], capture_output=True, text=True, timeout=60,
                              env=electrum_env())
    except OSError as exc:
        return f"Electrum {version} does not start ({' '.join(argv)}): {exc}"
    if done.stdout.strip() != version:
        return f"{' '.join(argv)} is not Electrum {version}: {(done.stdout + done.stderr).strip()[-300:]}"
    return ElectrumRelease(version, argv)


def release_or_skip(version: str) -> ElectrumRelease:
    """Skip when this Electrum is missing locally; in CI (CI=true) a missing Electrum fails."""
    found = find_release(version)
    if isinstance(found, str):
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{found} (CI must run the Electrum interop suite: .ci/run installs it)")
        pytest.skip(found)
    return found


def electrum_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """preexec_fn: Linux kills the child when the test process dies (no stray daemons)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _spawn(argv: list[str], log: Path, env: dict[str, str] | None = None,
           stdout: int | None = None) -> subprocess.Popen[str]:
    with open(log, "a") as sink:
        return subprocess.Popen(argv, stdout=sink if stdout is None else stdout, stderr=sink, text=True,
                                env=env, preexec_fn=_die_with_parent, stdin=subprocess.DEVNULL)


def _end(process: subprocess.Popen[str], wait_s: float = 10) -> int:
    """Terminate a process we started (by its pid), kill it if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode


def wait_for(what: str, check: Callable[[], Any], seconds: float = 60, interval: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def _setconfig_value(text: str) -> Any:
    """A setconfig value as Electrum stores it: JSON where it parses (true, 7777), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def btc_to_sat(text: str | int | float) -> int:
    return int(Decimal(str(text)) * COIN)


def sat_to_btc(sat: int) -> str:
    return str(Decimal(sat) / COIN)


# -- Electrum ---------------------------------------------------------------------------------------

class ElectrumWallet:
    """One Electrum wallet daemon in its own datadir, on the regtest chain, one server."""

    def __init__(self, release: ElectrumRelease, datadir: Path, name: str) -> None:
        self.release, self.datadir, self.name = release, datadir, name
        self.rpc_port = free_port()
        self.rpc_auth: tuple[str, str] | None = None
        self.listen: str | None = None
        self.process: subprocess.Popen[str] | None = None
        self._node_id: str | None = None
        self._ids = 0

    @property
    def log(self) -> Path:
        return self.datadir.parent / f"{self.name}.electrum.log"

    def cli(self, *args: str, timeout: float = 60) -> Any:
        """Run one command line (offline commands: create, setconfig); its JSON answer, else its text."""
        done = subprocess.run([*self.release.argv, "--regtest", "-D", str(self.datadir), *args],
                              capture_output=True, text=True, timeout=timeout, env=electrum_env())
        if done.returncode != 0:
            raise ElectrumError(f"electrum {' '.join(args)} ({self.name}) failed: {done.stderr.strip()[-2000:]}")
        try:
            return json.loads(done.stdout)
        except ValueError:
            return done.stdout.strip()

    def create(self, server: str, *, listen: bool) -> None:
        """A new wallet and its settings, as Electrum's regtest script makes them."""
        self.cli("create", "--offline")
        settings: list[tuple[str, str]] = [
            ("use_gossip", "true"),               # route itself (else trampoline only)
            ("auto_connect", "false"),            # before server: with oneserver, stay on ours
            ("oneserver", "true"),
            ("server", server),
            ("lightning_to_self_delay", str(ELECTRUM_TO_SELF_DELAY)),
            ("log_to_file", "true"),
            ("rpcport", str(self.rpc_port)),      # JSON-RPC over TCP; the daemon writes its credentials
        ]
        if listen:
            self.listen = f"127.0.0.1:{free_port()}"
            settings.append(("lightning_listen", self.listen))
        # Electrum writes its config file (and its format version) on the first setconfig; the
        # rest go into that JSON file as setconfig would put them: each command line is a whole
        # Electrum start (seconds on a loaded machine), seven of them per wallet were most of the
        # network's setup.
        first_key, first_value = settings[0]
        self.cli("setconfig", "--offline", first_key, first_value)
        config_file = self.datadir / "regtest" / "config"
        config = json.loads(config_file.read_text())
        config.update((key, _setconfig_value(value)) for key, value in settings[1:])
        config_file.write_text(json.dumps(config, indent=4, sort_keys=True))

    def start(self) -> None:
        """Start the daemon (kept by its pid) and load the wallet."""
        assert self.process is None or self.process.poll() is not None, f"{self.name} is running"
        self.process = _spawn([*self.release.argv, "--regtest", "-D", str(self.datadir), "daemon"], self.log,
                              env=electrum_env())
        deadline = time.monotonic() + 60
        while True:
            try:
                config = json.loads((self.datadir / "regtest" / "config").read_text())
                self.rpc_auth = (config["rpcuser"], config["rpcpassword"])
                self.rpc("ping", wait_s=5)
                break
            except (httpx.HTTPError, ElectrumError, KeyError, ValueError):
                if self.process.poll() is not None:
                    raise AssertionError(f"electrum daemon {self.name} exited: {self.log_tail()}") from None
                assert time.monotonic() < deadline, f"electrum daemon {self.name} does not answer"
                time.sleep(0.1)
        self.rpc("load_wallet")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Ask the daemon to stop (it saves the wallet), then end it by pid if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(httpx.HTTPError, ElectrumError):
            self.rpc("stop", wait_s=10)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            _end(self.process)

    def rpc(self, method: str, wait_s: float = 60, **params: Any) -> Any:
        """One JSON-RPC call to the daemon (the named parameters of Electrum's command)."""
        self._ids += 1
        assert self.rpc_auth is not None, f"{self.name} is not started"
        response = httpx.post(f"http://127.0.0.1:{self.rpc_port}/", auth=self.rpc_auth, timeout=wait_s,
                              json={"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params})
        body = response.json()
        if body.get("error"):
            error = body["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ElectrumError(f"electrum {method} ({self.name}): {message}")
        return body.get("result")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    def file_log(self, *topics: str, lines: int = 60) -> str:
        """The last ``lines`` lines of Electrum's own log files (``log_to_file``) naming one of
        ``topics`` (e.g. ``txbatcher``): what a failure message needs when Electrum acts on its own."""
        found: list[str] = []
        for path in sorted((self.datadir / "regtest" / "logs").glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                said = line.partition(" | ")[2]  # a message repeated each second is kept once
                if (not topics or any(topic in line for topic in topics)) and not (
                        found and found[-1].partition(" | ")[2] == said):
                    found.append(line)
        return "\n".join(found[-lines:]) or "(nothing logged)"

    # -- what the tests ask ------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        if self._node_id is None:
            self._node_id = str(self.rpc("nodeid")).partition("@")[0]
        return self._node_id

    @property
    def peer_address(self) -> str:
        assert self.listen is not None, f"{self.name} does not listen"
        return f"{self.node_id}@{self.listen}"

    def address(self) -> str:
        return str(self.rpc("getunusedaddress"))

    def height(self) -> int:
        return int(self.rpc("getinfo")["blockchain_height"])

    def balance(self) -> dict[str, int]:
        """getbalance in satoshis: confirmed, unconfirmed, unmatured, lightning (absent: 0)."""
        answer = self.rpc("getbalance")
        return {key: btc_to_sat(answer.get(key, "0")) for key in ("confirmed", "unconfirmed", "unmatured", "lightning")}

    def channels(self) -> list[dict[str, Any]]:
        return [c for c in self.rpc("list_channels") if c.get("type", "CHANNEL") == "CHANNEL"]

    def channel(self, point: str) -> dict[str, Any]:
        for channel in self.channels():
            if channel["channel_point"] == point:
                return channel
        raise AssertionError(f"{self.name} has no channel {point}")

    def open_channel(self, peer: str, amount_sat: int, push_sat: int = 0) -> str:
        """Open a channel; the funding outpoint ``txid:index`` (the channel point)."""
        params: dict[str, Any] = {"connection_string": peer, "amount": sat_to_btc(amount_sat)}
        if push_sat:
            params["push_amount"] = sat_to_btc(push_sat)
        return str(self.rpc("open_channel", wait_s=90, **params))

    def invoice(self, amount_sat: int, memo: str) -> str:
        """A BOLT 11 invoice for ``amount_sat`` (4.3.4: ``add_request AMOUNT -m``; 4.8.1: ``--lightning``)."""
        if self.release.version == "4.3.4":
            answer = self.rpc("add_request", amount=sat_to_btc(amount_sat), memo=memo)
        else:
            answer = self.rpc("add_request", amount=sat_to_btc(amount_sat), memo=memo, lightning=True)
        return str(answer["lightning_invoice"])

    def pay(self, invoice: str, timeout: int = 60) -> dict[str, Any]:
        """lnpay: Electrum routes (with gossip) and answers once the payment ends."""
        answer: dict[str, Any] = self.rpc("lnpay", wait_s=timeout + 15, invoice=invoice, timeout=timeout)
        return answer

    def close_channel(self, point: str, force: bool = False) -> str:
        """Close (mutual, or ``force``: broadcast our commitment); the closing txid."""
        return str(self.rpc("close_channel", wait_s=90, channel_point=point, force=force))


# -- Lightspeed and the chain -------------------------------------------------------------------------

class LightspeedDaemon:
    """``lightspeed node start`` in its own process, driven through the ``lightspeed`` command line."""

    def __init__(self, datadir: Path, chain_file: Path, listen: str | None = None) -> None:
        self.datadir, self.chain_file = datadir, chain_file
        self.listen_arg = listen or f"127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[str] | None = None
        self.ready: dict[str, str] = {}

    @property
    def log(self) -> Path:
        return self.datadir.parent / f"{self.datadir.name}.lightspeed.log"

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = _spawn([PYTHON, "-m", "lightspeed", "node", "start", "--datadir", str(self.datadir),
                               "--listen", self.listen_arg, "--api", "127.0.0.1:0", "--chain",
                               str(self.chain_file), "--verbose"], self.log, env=env, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            _end(self.process)
            raise AssertionError(f"lightspeed daemon did not start: {self.log_tail()}")
        self.ready = json.loads(line)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        code = _end(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code

    @property
    def node_id(self) -> str:
        return self.ready["node_id"]

    @property
    def peer_address(self) -> str:
        return f"{self.ready['node_id']}@{self.ready['listen']}"

    def run(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([PYTHON, "-m", "lightspeed", "--datadir", str(self.datadir), *args],
                              capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
        if check and done.returncode != 0:
            raise AssertionError(f"lightspeed {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    def call(self, *args: str, timeout: float = 120) -> Any:
        return json.loads(self.run(*args, timeout=timeout).stdout)

    def channels(self) -> list[dict[str, Any]]:
        return list(self.call("channels")["channels"])

    def channel(self, funding_point: str) -> dict[str, Any]:
        txid, _, index = funding_point.partition(":")
        for channel in self.channels():
            if channel["funding_txid"] == txid and channel["funding_output_index"] == int(index):
                return channel
        raise AssertionError(f"lightspeed has no channel {funding_point}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"


class Chain:
    """The regtest chain file: mined and funded through ``lightspeed chain``, read in-process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: RegtestChain | None = None

    def _cli(self, *args: str) -> Any:
        done = subprocess.run([PYTHON, "-m", "lightspeed", "chain", *args, "--chain", str(self.path)],
                              capture_output=True, text=True, timeout=120, env=os.environ.copy())
        if done.returncode != 0:
            raise AssertionError(f"lightspeed chain {' '.join(args)} failed: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def mine(self, blocks: int = 1) -> int:
        """Mine ``blocks`` blocks (they confirm the mempool); the new height."""
        return int(self._cli("mine", str(blocks))["height"])

    def set_feerate(self, feerate_per_kw: int) -> None:
        """The chain's fee estimate for every process (our Electrum server answers it too); 0: the default."""
        self._cli("set-feerate", str(feerate_per_kw))

    def send(self, address: str, amount_sat: int) -> str:
        """Pay ``address`` from the faucet, confirmed by one block; the txid."""
        return str(self._cli("send", address, str(amount_sat))["txid"])

    @property
    def reader(self) -> RegtestChain:
        if self._reader is None:
            self._reader = RegtestChain(self.path)
        return self._reader

    def height(self) -> int:
        return self.reader.tip()[0]

    def transaction(self, txid_hex: str) -> Any:
        """(Transaction, its confirmations: 0 in the mempool), or None."""
        return self.reader.get_transaction(bytes.fromhex(txid_hex)[::-1])

    def spender(self, txid_hex: str, index: int) -> Any:
        """The transaction spending ``txid:index`` (mempool or chain), or None."""
        from lightspeed.bitcoin.tx import OutPoint

        return self.reader.spending_tx(OutPoint(bytes.fromhex(txid_hex)[::-1], index))

    def mempool(self) -> list[str]:
        return [txid[::-1].hex() for txid in self.reader.mempool()]

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class ElectrumServer:
    """``lightspeed chain serve-electrum``: the Electrum protocol over the chain file."""

    def __init__(self, chain_file: Path, log: Path) -> None:
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = _spawn([PYTHON, "-m", "lightspeed", "chain", "serve-electrum", "--chain", str(chain_file),
                               "--listen", "127.0.0.1:0"], log, env=env, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            _end(self.process)
            raise AssertionError(f"the Electrum server did not start: {log.read_text(errors='replace')[-3000:]}")
        self.address: str = json.loads(line)["electrum_server"]

    def stop(self) -> None:
        _end(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()


# -- the network ---------------------------------------------------------------------------------------

@dataclass
class InteropNet:
    release: ElectrumRelease
    root: Path
    chain: Chain
    server: ElectrumServer
    lightspeed: LightspeedDaemon
    alice: ElectrumWallet  # opens channels to Lightspeed
    bob: ElectrumWallet    # accepts channels from Lightspeed (lightning_listen)

    def logs(self) -> str:
        """The tails of every log, for an assertion message."""
        parts = [f"--- lightspeed ---\n{self.lightspeed.log_tail()}",
                 f"--- alice ---\n{self.alice.log_tail()}", f"--- bob ---\n{self.bob.log_tail()}"]
        return "\n".join(parts)

    def wait_synced(self, seconds: float = 60) -> int:
        """Until both Electrum wallets (those running) have seen the chain's tip; the tip height."""
        tip = self.chain.height()
        for wallet in (w for w in (self.alice, self.bob) if w.running):
            wait_for(f"{wallet.name} to reach height {tip}", lambda w=wallet: w.height() >= tip, seconds)
        return tip

    def mine(self, blocks: int = 1) -> int:
        self.chain.mine(blocks)
        return self.wait_synced()

    def set_feerate(self, feerate_per_kw: int) -> None:
        """The chain's fee estimate (0: its default) for every process, the running 4.8.1 wallets at once.

        Electrum asks its server for estimates once a minute: a wallet left alone acts on the
        previous estimate for up to a minute after a change, and 4.8.1 spends its anchor to CPFP a
        commitment paying less than the estimate it holds (a stale 20 sat/vB made bob CPFP a
        commitment that paid twice the chain's estimate in the next case).
        """
        self.chain.set_feerate(feerate_per_kw)
        if not self.release.anchors:  # 4.3.4 keeps a hard-coded feerate on regtest
            return
        sat_per_kvb = self.chain.reader.estimate_feerate_per_kw() * 4  # as our server answers estimatefee
        for wallet in (w for w in (self.alice, self.bob) if w.running):
            wallet.rpc("test_inject_fee_etas", fee_est=str(dict.fromkeys(ELECTRUM_FEE_TARGETS, sat_per_kvb)))


@contextlib.contextmanager
def interop_network(release: ElectrumRelease, root: Path, *, fund_electrum_sat: int = COIN,
                    fund_lightspeed_sat: int = 10_000_000) -> Iterator[InteropNet]:
    """Start everything (torn down whatever happens) and fund every wallet from the faucet."""
    from concurrent.futures import ThreadPoolExecutor

    chain_file = root / "chain.sqlite"
    started: list[Callable[[], Any]] = []
    chain = Chain(chain_file)
    try:
        lightspeed = LightspeedDaemon(root / "lightspeed", chain_file)
        lightspeed.start()  # creates the chain file
        started.append(lightspeed.stop)
        server = ElectrumServer(chain_file, root / "electrum-server.log")
        started.append(server.stop)
        alice = ElectrumWallet(release, root / "alice", "alice")
        bob = ElectrumWallet(release, root / "bob", "bob")
        with ThreadPoolExecutor(2) as pool:  # each create + setconfig is a few Python starts
            for future in [pool.submit(alice.create, server.address, listen=False),
                           pool.submit(bob.create, server.address, listen=True)]:
                future.result()
        started += [alice.stop, bob.stop]
        # Started from this thread: PR_SET_PDEATHSIG kills a child when the *thread* that forked it
        # ends, so a daemon spawned by a pool thread dies with the pool.
        alice.start()
        bob.start()
        net = InteropNet(release, root, chain, server, lightspeed, alice, bob)
        for wallet in (alice, bob):
            chain.send(wallet.address(), fund_electrum_sat)
        lightspeed.call("fund", str(fund_lightspeed_sat))
        net.wait_synced()
        for wallet in (alice, bob):
            wait_for(f"{wallet.name}'s funds", lambda w=wallet: w.balance()["confirmed"] == fund_electrum_sat)
        yield net
    finally:
        chain.close()
        for stop in reversed(started):
            with contextlib.suppress(Exception):
                stop()
