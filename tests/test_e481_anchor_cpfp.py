"""A force close of an anchor channel whose commitment pays less than the chain asks: CPFP through our anchor.

Two real nodes over TCP on a real regtest chain; the chain's fee estimate is raised after the
channel was signed at the old one. Boundary: an estimate equal to the commitment's feerate needs
no child, one sat/kw more does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.bitcoin.tx import OutPoint
from lightspeed.chain import RegtestChain
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT, anchor_script
from lightspeed.errors import UsageError
from lightspeed.node.node import Node
from tests.onchain_support import commitment_fee, fee_of, open_paid_channel


@pytest.mark.slow
@pytest.mark.parametrize("above", [0, 1, 4_000])
def test_force_close_cpfps_through_our_anchor_when_the_commitment_pays_too_little(tmp_path: Path,
                                                                                  above: int) -> None:
    async def scenario() -> None:
        chain, alice, bob, channel_id = await open_paid_channel(tmp_path, 0x61)
        try:
            await check(chain, alice, channel_id)
        finally:
            await alice.stop()
            await bob.stop()

    async def check(chain: RegtestChain, alice: Node, channel_id: bytes) -> None:
        channel = alice.channels[channel_id]
        assert channel.config.anchors
        feerate = channel.log.commitment(Side.LOCAL).feerate_per_kw
        chain.set_fee_estimate(feerate + above)
        wallet_before = alice.wallet.balance_sat()
        commitment = await alice.force_close_channel(channel_id, "test: fees rose")
        mempool = chain.mempool()
        assert mempool[0] == commitment.txid
        if not above:  # it pays what the chain asks: no child
            assert mempool == [commitment.txid]
            return
        assert len(mempool) == 2
        found = chain.get_transaction(mempool[1])
        assert found is not None
        child = found[0]
        ours = p2wsh_script(anchor_script(channel.secrets.basepoints().funding_pubkey))
        anchor = next(i for i, o in enumerate(commitment.outputs) if o.script_pubkey == ours)
        assert commitment.outputs[anchor].value_sat == ANCHOR_OUTPUT_SAT
        assert chain.spending_tx(OutPoint(commitment.txid, anchor)) == child
        assert len(child.inputs) == 2 and len(child.outputs) == 1  # the anchor, one wallet coin; the change
        target = feerate + above
        package_fee = commitment_fee(commitment) + fee_of(chain, child)
        weight = commitment.weight + child.weight
        # the package pays the target, over by no more than the signature-size allowance and rounding
        assert target * weight <= package_fee * 1000 < target * (weight + 4) + 1000
        assert alice.wallet.balance_sat() == wallet_before - fee_of(chain, child) + ANCHOR_OUTPUT_SAT
        chain.mine(1)
        for tx in (commitment, child):
            confirmed = chain.get_transaction(tx.txid)
            assert confirmed is not None and confirmed[1] == 1

    asyncio.run(scenario())


def test_the_chain_fee_estimate_is_set_for_every_reader_and_refused_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "chain.sqlite"
    writer, reader = RegtestChain(path), RegtestChain(path)
    assert reader.estimate_feerate_per_kw() == 253  # never set: the default
    writer.set_fee_estimate(253)
    writer.set_fee_estimate(10_000_000)  # both ends accepted
    assert reader.estimate_feerate_per_kw() == 10_000_000
    for bad in (252, 10_000_001):
        with pytest.raises(UsageError, match=r"feerate_per_kw: \d+ is outside 253\.\.10000000"):
            writer.set_fee_estimate(bad)
    assert reader.estimate_feerate_per_kw() == 10_000_000
    writer.set_fee_estimate(None)
    assert reader.estimate_feerate_per_kw() == 253
    writer.close()
    reader.close()


def test_chain_set_feerate_command(tmp_path: Path) -> None:
    """``lightspeed chain set-feerate``: what every process on the file then estimates; 0 resets; a bad value is refused."""
    import json

    from click.testing import CliRunner

    from lightspeed.cli.main import cli

    path = tmp_path / "chain.sqlite"
    RegtestChain(path).close()
    runner = CliRunner()
    done = runner.invoke(cli, ["chain", "set-feerate", "5000", "--chain", str(path)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == {"feerate_per_kw": 5000, "min_relay_feerate_per_kw": 0}
    reader = RegtestChain(path)
    assert reader.estimate_feerate_per_kw() == 5000
    done = runner.invoke(cli, ["chain", "set-feerate", "252", "--chain", str(path)])
    assert done.exit_code != 0 and "feerate_per_kw: 252 is outside 253..10000000" in done.output
    assert "Traceback" not in done.output
    done = runner.invoke(cli, ["chain", "set-feerate", "0", "--chain", str(path)])
    assert done.exit_code == 0 and json.loads(done.output) == {"feerate_per_kw": 253, "min_relay_feerate_per_kw": 0}
    assert reader.estimate_feerate_per_kw() == 253
    reader.close()
