"""Real Redis and PostgreSQL servers on loopback, started in a private temporary directory.

The store tests and ``benchmarks/stores.py`` run against real servers, never mocks. Each
server gets a free port and its own directory, so parallel test workers (pytest-xdist) each
start their own without clashing. A missing server binary is a failure with a message saying
what to install, never a skip: CI installs both from the distribution's packages.

PostgreSQL's ``initdb`` refuses to run as root (CI and the dev machine run as root), so as
root both ``initdb`` and ``postgres`` run as the ``postgres`` system user that the Debian
package creates, in a directory handed over to it.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

REDIS_BINARY = "redis-server"
POSTGRES_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 30.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class ServerStartError(RuntimeError):
    """A server binary is missing or the server did not come up; the message says which."""


def free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes], first: signal.Signals) -> None:
    """Ask the server to stop with ``first``; kill it if it has not exited after 10 s."""
    if process.poll() is not None:
        return
    process.send_signal(first)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A ``preexec_fn`` asking Linux to send ``sig`` to the server when the test process dies
    (a killed pytest worker must not leave servers behind). Runs after the user switch, which
    would otherwise clear it."""
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    return preexec


def _start(name: str, launch: Callable[[int], subprocess.Popen[bytes]],
           ready: Callable[[int], bool], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Launch on a free port until the server answers; a server that exits at once (another
    process took the port between our check and its bind) gets a new port, twice."""
    for attempt in range(3):
        port = free_port()
        process = launch(port)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready(port):
            if process.poll() is not None:
                break
            if time.monotonic() > deadline:
                _stop(process, signal.SIGKILL)
                raise ServerStartError(f"{name} did not answer on port {port} within "
                                       f"{START_TIMEOUT_S:.0f} s: {_log_tail(log)}")
            time.sleep(0.02)
        else:
            return process, port
        if attempt == 2:
            raise ServerStartError(f"{name} exited at start (port {port}): {_log_tail(log)}")
    raise AssertionError("unreachable")


def _log_tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"


# ----------------------------------------------------------------------------------- Redis


@dataclass(frozen=True)
class RedisServer:
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    """A throwaway ``redis-server`` on 127.0.0.1 (no persistence), stopped on exit."""
    binary = shutil.which(REDIS_BINARY)
    if binary is None:
        raise ServerStartError(
            "redis-server not found on PATH: install it "
            "(Debian/Ubuntu: apt-get install redis-server)")
    workdir = Path(tempfile.mkdtemp(prefix="lightspeed-redis-"))
    log = workdir / "redis.log"

    def launch(port: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", str(workdir), "--logfile", str(log), "--daemonize", "no"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent(signal.SIGTERM))

    process: subprocess.Popen[bytes] | None = None
    try:
        process, port = _start("redis-server", launch, _redis_ping, log)
        yield RedisServer(port)
    finally:
        if process is not None:
            _stop(process, signal.SIGTERM)
        shutil.rmtree(workdir, ignore_errors=True)


# ------------------------------------------------------------------------------ PostgreSQL


@dataclass(frozen=True)
class PostgresServer:
    port: int
    user: str

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres"


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's ``bin`` directory (``/usr/lib/postgresql/N/bin``)."""
    found = [Path(p) for p in glob.glob(POSTGRES_GLOB) if (Path(p) / "initdb").exists()]
    if not found:
        raise ServerStartError(
            f"PostgreSQL server binaries not found ({POSTGRES_GLOB}/initdb): install them "
            "(Debian/Ubuntu: apt-get install postgresql)")
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


def _server_account() -> pwd.struct_passwd | None:
    """The account to run PostgreSQL as: ``postgres`` when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ServerStartError(
            "running as root, and initdb refuses root: a 'postgres' system user is needed "
            "(the Debian postgresql package creates it)") from None


def _postgres_ready(dsn: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=1) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def postgres_server(durable: bool = False) -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (trust authentication), removed on exit.

    ``durable=False`` turns fsync off, which is right for tests (nothing is meant to survive)
    and wrong for benchmarks of commit latency, which pass ``durable=True``.
    """
    bindir = postgres_bin_dir()
    account = _server_account()
    # mkdtemp directly under /tmp: pytest's tmp_path lives in a root-only directory the
    # postgres user cannot enter.
    workdir = Path(tempfile.mkdtemp(prefix="lightspeed-pg-"))
    data, sockets, log = workdir / "data", workdir / "sock", workdir / "postgres.log"
    sockets.mkdir()
    run_as: dict[str, object] = {}
    if account is not None:
        for path in (workdir, sockets):
            os.chown(path, account.pw_uid, account.pw_gid)
        run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    user = account.pw_name if account is not None else pwd.getpwuid(os.geteuid()).pw_name
    process: subprocess.Popen[bytes] | None = None
    try:
        init = subprocess.run(
            [str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8",
             "--no-sync", "--no-instructions"],
            capture_output=True, cwd=workdir, **run_as)  # type: ignore[call-overload]
        if init.returncode != 0:
            raise ServerStartError(f"initdb failed: {init.stderr.decode(errors='replace')[-2000:]}")
        settings = ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockets}",
                    "-c", "max_connections=100", "-c", "shared_buffers=32MB"]
        if not durable:
            settings += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                         "-c", "full_page_writes=off"]

        def launch(port: int) -> subprocess.Popen[bytes]:
            with log.open("ab") as log_file:
                started: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
                    [str(bindir / "postgres"), "-D", str(data), "-p", str(port), *settings],
                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, cwd=workdir,
                    start_new_session=True, preexec_fn=_die_with_parent(signal.SIGINT),
                    **run_as)
            return started

        process, port = _start("postgres", launch,
                               lambda port: _postgres_ready(PostgresServer(port, user).dsn), log)
        yield PostgresServer(port, user)
    finally:
        if process is not None:
            _stop(process, signal.SIGINT)  # SIGINT: PostgreSQL's "fast" shutdown
        shutil.rmtree(workdir, ignore_errors=True)
