"""The static channel backup file: encrypted to the node key, versioned, rewritten atomically, no secret in it."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from lightspeed.api.client import ApiClient
from lightspeed.api.datadir import Datadir
from lightspeed.errors import DecodeError
from lightspeed.node import backup
from lightspeed.node.backup import (
    BackupChannel,
    backup_key,
    decode_backup,
    encode_backup,
    write_atomically,
)
from tests.onchain_support import open_paid_channel
from tests.test_daemon import Daemon, call, lightspeed, started, wait_for

__all__ = ["started"]  # the fixture, used by name

KEY = bytes([7]) * 32
ENTRY = BackupChannel(channel_id=bytes(range(32)), peer_id=b"\x02" + bytes([9]) * 32, host="127.0.0.1", port=9735,
                      funding_txid=bytes([3]) * 32, funding_output_index=1, funding_sat=1_000_000,
                      key_index=(1 << 255) | 12345, anchors=True, local_is_funder=True, local_to_self_delay=144)


def test_round_trip_keeps_every_field() -> None:
    other = dataclasses.replace(ENTRY, channel_id=bytes(32), host=None, port=None, anchors=False,
                                local_is_funder=False)
    assert decode_backup(KEY, encode_backup(KEY, [ENTRY, other])) == [ENTRY, other]
    assert decode_backup(KEY, encode_backup(KEY, [])) == []


def test_another_node_key_cannot_read_it() -> None:
    data = encode_backup(KEY, [ENTRY])
    with pytest.raises(DecodeError, match="another node key, or corrupt"):
        decode_backup(bytes([8]) * 32, data)


@pytest.mark.parametrize(("damage", "reason"), [
    (lambda d: d[:-1], "another node key, or corrupt"),  # truncated: the tag no longer matches
    (lambda d: d[:20], "truncated"),
    (lambda d: d[:-20] + bytes([d[-20] ^ 1]) + d[-19:], "another node key, or corrupt"),  # one bit flipped
    (lambda d: b"XXXX" + d[4:], "bad magic bytes"),
    (lambda d: d[:4] + b"\x02" + d[5:], "unsupported version 2"),
    (lambda d: b"", "bad magic bytes"),
])
def test_damaged_files_are_refused_with_the_reason(damage: object, reason: str) -> None:
    data = encode_backup(KEY, [ENTRY])
    with pytest.raises(DecodeError, match=reason):
        decode_backup(KEY, damage(data))  # type: ignore[operator]


def test_a_wellformed_ciphertext_of_bad_content_is_refused() -> None:
    nonce = bytes(12)
    header = backup.MAGIC + bytes([backup.VERSION])
    for plaintext in (b"not json", json.dumps({"channels": [{"channel_id": "00"}]}).encode()):
        data = header + nonce + ChaCha20Poly1305(backup_key(KEY)).encrypt(nonce, plaintext, header)
        with pytest.raises(DecodeError, match="malformed"):
            decode_backup(KEY, data)


def test_rewrite_replaces_the_file_whole_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "channel.backup"
    write_atomically(target, b"first")
    write_atomically(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert [p.name for p in tmp_path.iterdir()] == ["channel.backup"]  # no temporary file left
    assert target.stat().st_mode & 0o777 == 0o600

    def crash(src: object, dst: object) -> None:  # the process dies between the write and the rename
        raise OSError("killed")

    monkeypatch.setattr(backup.os, "replace", crash)
    with pytest.raises(OSError, match="killed"):
        write_atomically(target, b"third")
    assert target.read_bytes() == b"second, longer"  # the old backup is intact, never half written


@pytest.mark.slow
def test_a_node_keeps_its_backup_current_and_free_of_secrets(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "channel.backup"
        _chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x61, alice_backup=path)
        channel = alice.channels[cid]
        [entry] = decode_backup(alice.privkey, path.read_bytes())
        config = channel.config
        assert entry.channel_id == cid and entry.peer_id == bob.node_id
        assert (entry.funding_txid, entry.funding_output_index, entry.funding_sat) == (
            config.funding_txid, config.funding_output_index, config.funding_sat)
        assert entry.key_index == alice._key_index[cid] and entry.anchors == config.anchors
        assert entry.local_is_funder and entry.local_to_self_delay == config.local_to_self_delay
        assert entry.host == "127.0.0.1" and entry.port is not None  # Alice dialled Bob there
        # No secret, neither in the file nor in what it decrypts to (the encryption alone proves nothing).
        nonce_end = len(backup.MAGIC) + 1 + 12
        plaintext = ChaCha20Poly1305(backup_key(alice.privkey)).decrypt(
            path.read_bytes()[len(backup.MAGIC) + 1:nonce_end], path.read_bytes()[nonce_end:],
            backup.MAGIC + bytes([backup.VERSION]))
        secrets = [alice.privkey, *dataclasses.astuple(channel.secrets)]
        for data in (path.read_bytes(), plaintext):
            for secret in secrets:
                assert secret not in data and secret.hex().encode() not in data
        assert alice.channel_backup() != path.read_bytes()  # a fresh nonce every time...
        assert decode_backup(alice.privkey, alice.channel_backup()) == [entry]  # ...the same content
        # Closed for good: the backup no longer lists it.
        await asyncio.wait_for(alice.close_channel(cid), 30)
        assert decode_backup(alice.privkey, path.read_bytes()) == []
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_a_daemon_exports_its_backup(tmp_path: Path, started: list[Daemon]) -> None:
    started.append(Daemon(tmp_path / "alice", tmp_path / "chain.sqlite"))
    datadir = started[0].datadir
    privkey = Datadir(datadir).node_privkey()
    assert decode_backup(privkey, (datadir / backup.BACKUP_FILE).read_bytes()) == []  # written at start
    answer = ApiClient.from_datadir(datadir).call("GET", "/v1/backup")
    assert answer["version"] == 1 and answer["channels"] == 0
    assert decode_backup(privkey, base64.b64decode(answer["backup"])) == []
    out = tmp_path / "exported.backup"
    assert call(datadir, "backup", "export", "--output", str(out)) == {
        "output": str(out), "channels": 0, "version": 1}
    assert decode_backup(privkey, out.read_bytes()) == []
    assert decode_backup(privkey, base64.b64decode(call(datadir, "backup", "export")["backup"])) == []
    refused = lightspeed(datadir, "backup", "export", "--output", str(tmp_path / "no" / "such" / "dir"), check=False)
    assert refused.returncode == 1 and refused.stderr.startswith("error: --output ")
    assert "Traceback" not in refused.stderr


def _start_refused(datadir: Path, chain: Path, *extra: str) -> str:
    result = lightspeed(datadir, "node", "start", "--datadir", str(datadir), "--listen", "127.0.0.1:0",
                        "--api", "127.0.0.1:0", "--chain", str(chain), *extra, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    return result.stderr


@pytest.mark.slow
def test_restore_backup_is_refused_on_a_datadir_with_channels_or_a_bad_file(tmp_path: Path,
                                                                           started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    started.append(Daemon(tmp_path / "alice", chain))
    started.append(Daemon(tmp_path / "bob", chain))
    alice, bob = started
    call(alice.datadir, "fund", "2000000")
    call(alice.datadir, "connect", bob.peer_address)
    call(alice.datadir, "open-channel", bob.ready["node_id"], "1000000")
    exported = tmp_path / "alice.backup"
    assert call(alice.datadir, "backup", "export", "--output", str(exported))["channels"] == 1
    assert alice.stop() == 0
    stderr = _start_refused(alice.datadir, chain, "--restore-backup", str(exported))
    assert stderr.startswith("error: --restore-backup: this datadir already has open channels")
    # Bob's backup is not Alice's; a damaged file is not a backup.
    bobs = tmp_path / "bob.backup"
    bobs.write_bytes((bob.datadir / backup.BACKUP_FILE).read_bytes())
    assert _start_refused(alice.datadir, chain, "--restore-backup", str(bobs)).startswith(
        f"error: --restore-backup {bobs}: cannot be decrypted: made by another node key, or corrupt")
    damaged = tmp_path / "damaged.backup"
    damaged.write_bytes(exported.read_bytes()[:10])
    assert _start_refused(alice.datadir, chain, "--restore-backup", str(damaged)).startswith(
        f"error: --restore-backup {damaged}: truncated")


@pytest.mark.slow
def test_a_daemon_restored_from_words_and_backup_recovers_its_balance(tmp_path: Path, started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    started.append(Daemon(tmp_path / "alice", chain))
    started.append(Daemon(tmp_path / "bob", chain))
    alice, bob = started
    call(alice.datadir, "fund", "2000000")
    call(alice.datadir, "connect", bob.peer_address)
    channel_id = call(alice.datadir, "open-channel", bob.ready["node_id"], "1000000")["channel_id"]
    call(alice.datadir, "chain", "mine", "3", "--chain", str(chain))
    wait_for("the channel never became ready",
             lambda: call(alice.datadir, "channels")["channels"][0]["state"] == "normal")
    invoice = call(bob.datadir, "invoice", "new", "300000000", "before the loss")
    assert call(alice.datadir, "pay", invoice["invoice"])["status"] == "succeeded"
    exported = tmp_path / "alice.backup"
    call(alice.datadir, "backup", "export", "--output", str(exported))
    words = tmp_path / "words.txt"
    words.write_text((alice.datadir / "wallet_mnemonic").read_text())
    onchain_before = call(alice.datadir, "balance")["onchain_sat"]
    assert alice.stop() == 0
    shutil.rmtree(alice.datadir)  # everything lost but the words and the backup
    restored = Daemon(tmp_path / "alice2", chain, "127.0.0.1:0", "--mnemonic-file", str(words),
                      "--restore-backup", str(exported))
    started.append(restored)
    assert restored.ready["node_id"] == alice.ready["node_id"]
    [listed] = call(restored.datadir, "channels")["channels"]
    assert (listed["channel_id"], listed["state"], listed["local_balance_msat"]) == (channel_id, "recovering", None)
    wait_for("bob never force-closed", lambda: call(bob.datadir, "channels")["channels"][0]["state"] != "normal")

    def swept() -> bool:
        call(bob.datadir, "chain", "mine", "1", "--chain", str(chain))
        return bool(call(restored.datadir, "balance")["onchain_sat"] > onchain_before)

    wait_for("the to_remote output was never swept", swept)
    [listed] = call(restored.datadir, "channels")["channels"]
    assert (listed["state"], listed["close_type"]) == ("closed", "data_loss")
    gained = call(restored.datadir, "balance")["onchain_sat"] - onchain_before
    assert 690_000 < gained < 700_000  # 700,000 sat less the commitment's and the sweep's fees


@pytest.mark.slow
def test_a_backup_that_cannot_be_written_does_not_stop_the_channel(tmp_path: Path) -> None:
    async def scenario() -> None:
        unwritable = tmp_path / "missing-dir" / "channel.backup"  # a full or gone disk: the write fails
        _chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x65, alice_backup=unwritable)
        assert alice.channel_is_ready(cid)  # opened and paid regardless
        assert alice.channel_backup_error is not None and "missing-dir" in alice.channel_backup_error
        unwritable.parent.mkdir()
        await asyncio.wait_for(alice.close_channel(cid), 30)
        assert alice.channel_backup_error is None and decode_backup(alice.privkey, unwritable.read_bytes()) == []
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())
