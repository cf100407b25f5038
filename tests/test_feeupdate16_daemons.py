"""`node start --fee-update on`: two daemons on the embedded chain; the funder's anchor commitment
follows the relay floor, which the force close shows on chain."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint
from lightspeed.chain.regtest import RegtestChain
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT
from lightspeed.node.fee_updates import least_feerate
from tests.test_daemon import Daemon, call, lightspeed, wait_for

ANCHOR_COMMITMENT_WEIGHT = 1124  # BOLT 3: an anchor commitment without HTLC outputs


@pytest.fixture
def started() -> Iterator[list[Daemon]]:
    daemons: list[Daemon] = []
    try:
        yield daemons
    finally:
        for daemon in daemons:
            daemon.stop()


@pytest.mark.slow
def test_a_daemon_with_fee_update_on_moves_its_anchor_commitment_to_the_relay_floor(
        tmp_path: Path, started: list[Daemon]) -> None:
    chain_file = tmp_path / "chain.sqlite"
    started.append(Daemon(tmp_path / "alice", chain_file, "127.0.0.1:0", "--fee-update", "on", "-v"))
    started.append(Daemon(tmp_path / "bob", chain_file, "127.0.0.1:0", "--fee-update", "on", "-v"))
    alice, bob = started
    a, b = alice.datadir, bob.datadir
    bad = lightspeed(a, "node", "start", "--fee-update", "sometimes", check=False)
    assert bad.returncode != 0 and "--fee-update" in bad.stderr and "Traceback" not in bad.stderr
    call(a, "fund", "2000000")
    assert call(a, "connect", bob.peer_address)["connected"] is True
    opened = call(a, "open-channel", bob.ready["node_id"], "1000000")
    call(a, "chain", "mine", "3", "--chain", str(chain_file))
    wait_for("the channel", lambda: call(b, "channels")["channels"][0]["state"] == "normal")
    call(a, "chain", "mine", "1", "--chain", str(chain_file))  # a block at which it is usable, in case
    # 2500 sat/kw (the opening feerate) is far above what an anchor commitment needs: lowered
    log = tmp_path / "alice.log"
    wait_for("the update_fee", lambda: "from 2500 to 317 sat/kw" in log.read_text())
    time.sleep(2)  # commitment_signed and revoke_and_ack both ways, over loopback
    call(a, "close", opened["channel_id"], "--force")
    chain = RegtestChain(chain_file)
    try:
        funding = OutPoint(bytes.fromhex(opened["funding_txid"])[::-1], opened["funding_output_index"])
        commitment = chain.spending_tx(funding)
        assert commitment is not None
        fee = 1_000_000 - sum(o.value_sat for o in commitment.outputs)
        # 317 sat/kw, not 2500; Bob has no output, so his anchor is left out and its 330 sat go to the fee
        assert fee == least_feerate(0) * ANCHOR_COMMITMENT_WEIGHT // 1000 + ANCHOR_OUTPUT_SAT
    finally:
        chain.close()
