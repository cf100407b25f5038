"""A node's data directory: its secret, the API token and address, the daemon lock.

Layout (every secret file is created with mode 0600, atomically, on first start)::

    DIR/wallet_mnemonic  the BIP 39 words the node key and the wallet derive from (or
                         DIR/wallet_mnemonic.enc, encrypted; see lightspeed.api.node_secrets)
    DIR/node_secret    32 random bytes: datadirs made before BIP 39 support (still read, not created)
    DIR/api_token      the admin bearer token (hex text); scoped tokens: lightspeed token create
    DIR/credentials_key  the root key scoped tokens are signed with (see lightspeed.api.credentials)
    DIR/credentials.sqlite  issued scoped tokens: scope, budget spent, revocation (no secrets)
    DIR/api_address    "HOST:PORT" of the running daemon's REST API ("[v6]:PORT"; removed on clean exit)
    DIR/daemon.lock    held (flock) by the running daemon: one daemon per directory
    DIR/node.sqlite    the node's store (channels, invoices, payments; see lightspeed.store)

One secret rather than two keeps a backup to a single thing to write down: the node key and
the wallet both derive from the mnemonic (an old node_secret: ``HMAC-SHA256(secret, purpose)``).
The default shared chain is ``DIR/../chain.sqlite`` (see
:func:`default_chain_path`).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from pathlib import Path
from typing import IO, TYPE_CHECKING

from lightspeed.api.address import format_hostport
from lightspeed.errors import UsageError

if TYPE_CHECKING:  # the key code (coincurve, cryptography) loads when keys are asked for: --help stays fast
    from lightspeed.api.node_secrets import NodeKeys
    from lightspeed.bitcoin.network import Network
    from lightspeed.chain.wallet import HdSeed

SECRET_FILE = "node_secret"  # datadirs made before BIP 39 support
MNEMONIC_FILE = "wallet_mnemonic"
ENCRYPTED_MNEMONIC_FILE = "wallet_mnemonic.enc"
SECRET_FILES = (SECRET_FILE, MNEMONIC_FILE, ENCRYPTED_MNEMONIC_FILE)
TOKEN_FILE = "api_token"
ADDRESS_FILE = "api_address"
LOCK_FILE = "daemon.lock"


def default_chain_path(datadir: Path) -> Path:
    """The regtest chain shared by every daemon whose datadirs are siblings.

    Why a shared SQLite file rather than a chain server process: the embedded
    chain already runs each change in one ``BEGIN IMMEDIATE`` transaction on a WAL
    database, so SQLite's file locks serialize writers across processes and
    readers never block; there is no extra process to start, no port to pick and
    nothing to crash. Putting it next to the datadirs (``~/.lightspeed/alice``,
    ``~/.lightspeed/bob`` -> ``~/.lightspeed/chain.sqlite``) makes two daemons
    started by hand see one chain with no option at all.
    """
    return datadir.resolve().parent / "chain.sqlite"




def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 and ``data``, atomically (a crash leaves no half file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


_write_private = write_private  # the name other modules import


class Datadir:
    """Paths and files of one node's data directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock: IO[bytes] | None = None

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)

    # -- secrets -------------------------------------------------------------------------------

    def has_secret(self) -> bool:
        """The node ran (or was initialised) here: its key exists."""
        return any((self.path / name).exists() for name in SECRET_FILES)

    def secret_file(self) -> str:
        return next((name for name in SECRET_FILES if (self.path / name).exists()), "")

    def keys(self, network: Network | None = None, *, passphrase: str | None = None, restore: str | None = None,
             words: int = 24) -> NodeKeys:
        """The node key and wallet seed (a new datadir gets a new mnemonic: see ``NodeKeys.new_mnemonic``)."""
        from lightspeed.api.node_secrets import load_or_create
        from lightspeed.bitcoin.network import REGTEST

        self.create()
        return load_or_create(self.path, network or REGTEST, passphrase=passphrase, restore=restore, words=words)

    def node_privkey(self) -> bytes:
        return self.keys().node_privkey

    def wallet_seed(self) -> bytes | HdSeed:
        return self.keys().wallet_seed

    def ensure_token(self) -> str:
        path = self.path / TOKEN_FILE
        if not path.exists():
            write_private(path, secrets.token_hex(32).encode())
        return self.token()

    def token(self) -> str:
        path = self.path / TOKEN_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            raise UsageError(f"no API token in {self.path}: is this a node's datadir? "
                             "(lightspeed node start creates it)") from None

    # -- the running daemon --------------------------------------------------------------------

    def write_api_address(self, host: str, port: int) -> None:
        write_private(self.path / ADDRESS_FILE, f"{format_hostport(host, port)}\n".encode())

    def api_address(self) -> str:
        try:
            return (self.path / ADDRESS_FILE).read_text().strip()
        except FileNotFoundError:
            raise UsageError(f"no daemon is running for {self.path} (no {ADDRESS_FILE} file); "
                             f"start one with: lightspeed node start --datadir {self.path}") from None

    def api_url(self) -> str:
        """``http://HOST:PORT`` of the running daemon (an IPv6 host in brackets)."""
        address = self.api_address()
        host, sep, port = address.rpartition(":")
        if not sep or not host or not (port.isascii() and port.isdigit()):
            raise UsageError(f"{self.path / ADDRESS_FILE}: not HOST:PORT but {address!r}")
        if ":" in host and not host.startswith("["):  # written unbracketed by an older daemon
            host = f"[{host}]"
        return f"http://{host}:{port}"

    def remove_api_address(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / ADDRESS_FILE).unlink()

    def lock(self) -> None:
        """Take the daemon lock, or raise if another daemon already runs on this directory."""
        handle = open(self.path / LOCK_FILE, "ab")  # noqa: SIM115 - held for the daemon's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UsageError(f"another daemon is already running on {self.path}") from None
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None
