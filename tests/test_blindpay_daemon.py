"""End to end between daemon processes: payments over blinded paths (BOLT 4 route blinding).

Four ``lightspeed node start`` processes on loopback share one regtest chain; channels are
opened and announced through the CLI, and the blinded paths travel through the REST API
(``POST /v1/blinded-paths``, ``POST /v1/blinded-payments``: BOLT 11 cannot carry them; the
offers flow will). Topology: A - B, B - C, C - D, B - D (D dials its peers, so it finds them
again after its restart).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from lightspeed.api.datadir import Datadir
from lightspeed.crypto.hashes import sha256
from tests.test_daemon import Daemon, call, started, wait_for

__all__ = ["started"]  # the fixture, used by name below


def rest(datadir: Path, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    store = Datadir(datadir)
    response = httpx.request(method, store.api_url() + path, json=body, timeout=120,
                             headers={"Authorization": f"Bearer {store.token()}"})
    return response.status_code, response.json()


def flip_last_byte_of_last_hop(path_hex: str) -> str:
    """The path's last hop's encrypted_recipient_data, one bit flipped (it ends the encoding)."""
    raw = bytearray(bytes.fromhex(path_hex))
    raw[-1] ^= 1
    return raw.hex()


@pytest.mark.slow
def test_four_daemons_pay_over_blinded_paths(tmp_path: Path, started: list[Daemon]) -> None:
    chain = tmp_path / "chain.sqlite"
    for name in ("alice", "bob", "carol", "dave"):
        started.append(Daemon(tmp_path / name, chain, "127.0.0.1:0", "--announce-channels"))
    _alice, bob, carol, dave = started
    a, b, c, d = (x.datadir for x in started)
    B, C = bob.ready["node_id"], carol.ready["node_id"]
    call(a, "fund", "3000000")
    call(b, "fund", "3000000")
    call(c, "fund", "2000000")
    call(a, "connect", bob.peer_address)
    call(b, "connect", carol.peer_address)
    call(d, "connect", carol.peer_address)
    call(d, "connect", bob.peer_address)
    call(a, "open-channel", B, "2500000")
    call(b, "open-channel", C, "1000000")
    call(c, "open-channel", dave.ready["node_id"], "1000000")
    call(b, "open-channel", dave.ready["node_id"], "1000000")
    call(a, "chain", "mine", "7", "--chain", str(chain))  # 6 confirmations: announced by gossip
    for datadir, count in ((a, 1), (b, 3), (c, 2), (d, 2)):
        wait_for(f"{datadir.name}'s channels never became ready", lambda datadir=datadir, count=count: [
            ch["state"] for ch in call(datadir, "channels")["channels"]] == ["normal"] * count)

    def request(amount_msat: int, via: list[list[str]], dummy_hops: int = 1) -> dict[str, Any]:
        made: dict[str, Any] = {}

        def ready() -> bool:  # D needs B -> C's channel_update (gossip) to put B's terms in the path
            status, body = rest(d, "POST", "/v1/blinded-paths",
                                {"amount_msat": amount_msat, "via": via, "dummy_hops": dummy_hops})
            made.update(body)
            return status == 201

        wait_for("dave never learned the path's channel policies", ready, seconds=60)
        return made

    def pay(paths: list[dict[str, str]], amount_msat: int, payment_hash: str) -> tuple[int, Any]:
        body = {"paths": paths, "amount_msat": amount_msat, "payment_hash": payment_hash, "timeout_s": 30}
        return rest(a, "POST", "/v1/blinded-payments", body)

    # A -> B -> C -> D: B introduces, C and D are blinded, D adds a dummy hop.
    first = request(50_000_000, [[B, C]])
    status, paid = pay(first["paths"], 50_000_000, first["payment_hash"])
    assert status == 200 and paid["status"] == "succeeded", paid
    assert sha256(bytes.fromhex(paid["preimage"])).hex() == first["payment_hash"]

    # A path used for another payment (its path_id is the first payment's secret), and a path whose
    # last encrypted_recipient_data was tampered with: both refused as invalid_onion_blinding.
    second = request(20_000_000, [[B, C]])
    status, refused = pay(first["paths"], 20_000_000, second["payment_hash"])
    assert status == 409 and "invalid_onion_blinding from hop 0" in refused["error"]["reason"], refused
    tampered = [{"path": flip_last_byte_of_last_hop(p["path"]), "payinfo": p["payinfo"]} for p in second["paths"]]
    status, refused = pay(tampered, 20_000_000, second["payment_hash"])
    assert status == 409 and "invalid_onion_blinding" in refused["error"]["reason"], refused

    # The payee restarts before the payment: its paths, kept in its store, still pay.
    assert dave.stop() == 0
    dave = Daemon(d, chain, "127.0.0.1:0", "--announce-channels")
    started.append(dave)
    wait_for("dave's channels never came back", lambda: [
        ch["state"] for ch in call(d, "channels")["channels"]] == ["normal", "normal"])
    status, paid = pay(second["paths"], 20_000_000, second["payment_hash"])
    assert status == 200 and paid["status"] == "succeeded", paid

    # MPP over two paths: neither of D's 1,000,000 sat channels carries 1,400,000 sat alone.
    third = request(1_400_000_000, [[B, C], [B]])
    status, paid = pay(third["paths"], 1_400_000_000, third["payment_hash"])
    assert status == 200 and paid["status"] == "succeeded", paid
    received = {p["payment_hash"]: p["amount_msat"] for p in call(d, "payments", "--direction", "received")["payments"]}
    assert received[first["payment_hash"]] >= 50_000_000
    assert received[second["payment_hash"]] >= 20_000_000
    assert received[third["payment_hash"]] >= 1_400_000_000
