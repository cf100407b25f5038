"""The store file itself (issue 11, item 15): private like the other datadir files, and a damaged
or foreign file is refused with its reason, never a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from lightspeed.store import STORE_FILE, PaymentRecord, SqliteStore, StoreCorrupt, open_store

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _modes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir() if p.name.startswith(STORE_FILE)}


def test_the_store_and_its_wal_and_shm_files_are_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask: files would be 0644, readable by every local user
    try:
        store = open_store(tmp_path, fsync=False)
        with store.transaction():
            store.put_payment(PaymentRecord(b"a" * 32, 1, "pending"))
        assert _modes(tmp_path) == {STORE_FILE: 0o600, f"{STORE_FILE}-wal": 0o600, f"{STORE_FILE}-shm": 0o600}
        store.close()
    finally:
        os.umask(old)


def test_a_store_left_readable_by_an_earlier_version_is_made_private_on_open(tmp_path: Path) -> None:
    open_store(tmp_path, fsync=False).close()
    for name in _modes(tmp_path):
        os.chmod(tmp_path / name, 0o644)
    store = open_store(tmp_path, fsync=False)
    assert set(_modes(tmp_path).values()) == {0o600}
    store.close()


@pytest.mark.parametrize("content", [b"not a database at all " * 100, b"SQLite format 3\x00" + b"\xff" * 4080])
def test_a_file_that_is_not_a_store_is_refused_with_its_reason(tmp_path: Path, content: bytes) -> None:
    (tmp_path / STORE_FILE).write_bytes(content)
    with pytest.raises(StoreCorrupt, match=r"^node\.sqlite is not a valid Lightspeed store: .+"):
        open_store(tmp_path)
    assert (tmp_path / STORE_FILE).read_bytes() == content  # left as it was, for recovery


def test_another_programs_database_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILE
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE blocks (height INTEGER)")
    other.commit()
    other.close()
    before = path.read_bytes()
    with pytest.raises(StoreCorrupt, match="holds other tables \\(blocks\\) and no schema version"):
        SqliteStore(path)
    assert path.read_bytes() == before and not (tmp_path / f"{STORE_FILE}-wal").exists()


def test_a_store_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    store = open_store(tmp_path, fsync=False)
    store._db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    store.close()
    with pytest.raises(StoreCorrupt, match="schema version '99'"):
        open_store(tmp_path)


def _start(datadir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "lightspeed", "node", "start", "--datadir", str(datadir),
                           "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0",
                           "--chain", str(datadir.parent / "chain.sqlite")],
                          capture_output=True, text=True, timeout=60, env=ENV, check=False)


def test_the_daemon_on_a_corrupt_store_says_so_and_exits_1_without_a_traceback(tmp_path: Path) -> None:
    datadir = tmp_path / "alice"
    datadir.mkdir(mode=0o700)
    (datadir / "node_secret").write_bytes(os.urandom(32))
    (datadir / STORE_FILE).write_bytes(b"garbage, not SQLite " * 300)
    result = _start(datadir)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: node.sqlite is not a valid Lightspeed store: file is not a database")

    # A valid SQLite store whose channel record cannot be read back: the same answer, naming the record.
    (datadir / STORE_FILE).unlink()
    store = open_store(datadir, fsync=False)
    with store.transaction():
        store.put_channel(b"c" * 32, b"\x02" * 33, b'{"version": 1, "truncated', ready=True)
    store.close()
    result = _start(datadir)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: node.sqlite is not a valid Lightspeed store: channel record")
