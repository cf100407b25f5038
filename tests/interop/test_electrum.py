"""Lightspeed against Electrum as a live Lightning peer, over TCP, on one regtest chain.

Per Electrum release (4.3.4: static_remotekey channels; 4.8.1: anchor channels) one network runs
for the whole module (see :mod:`tests.interop.electrum_harness`): a Lightspeed daemon, an Electrum
server over the chain file and two Electrum wallets, alice (opens channels to Lightspeed) and bob
(accepts Lightspeed's). Each case checks both sides' views of its channels and, when it ends on
chain, what every party got, to the satoshi. The cases open the channels they change, so each
runs alone too; the channels the payment cases share are opened once (``channels``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest

from lightspeed.bitcoin.address import script_to_address
from lightspeed.bitcoin.network import REGTEST
from lightspeed.bitcoin.tx import OutPoint, Transaction
from lightspeed.invoice.decode import decode
from lightspeed.node.node import FINAL_CLTV_MARGIN
from lightspeed.node.settings import ChannelSettings
from tests.interop.electrum_harness import (
    COIN,
    ELECTRUM_FEE_TARGETS,
    ELECTRUM_TO_SELF_DELAY,
    LIGHTSPEED_TO_SELF_DELAY,
    ElectrumError,
    ElectrumWallet,
    InteropNet,
    interop_network,
    release_or_skip,
    wait_for,
)

pytestmark = [pytest.mark.interop, pytest.mark.slow, pytest.mark.timeout(600)]

CAPACITY_SAT = 1_000_000
PUSH_SAT = 100_000  # pushed to the side that did not fund each of the `channels` fixture's channels
ANCHOR_SAT = 330


@pytest.fixture(scope="module", params=[
    pytest.param("4.3.4", marks=pytest.mark.xdist_group("electrum-4.3.4")),
    pytest.param("4.8.1", marks=pytest.mark.xdist_group("electrum-4.8.1")),
])
def net(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InteropNet]:
    release = release_or_skip(request.param)
    with interop_network(release, tmp_path_factory.mktemp(f"electrum-{release.version}")) as network:
        yield network


@dataclass(frozen=True)
class Pair:
    """alice's channel to Lightspeed and Lightspeed's channel to bob (funding outpoints)."""

    alice: str
    bob: str


# -- helpers ------------------------------------------------------------------------------------------

def ls_view(net: InteropNet, point: str) -> tuple[int, int, int]:
    """Lightspeed's (local_msat, remote_msat, pending HTLCs) on the channel at ``point``."""
    channel = net.lightspeed.channel(point)
    return channel["local_balance_msat"], channel["remote_balance_msat"], channel["pending_htlcs"]


def electrum_view(wallet: ElectrumWallet, point: str) -> tuple[int, int]:
    channel = wallet.channel(point)
    return channel["local_balance"], channel["remote_balance"]


def settled(net: InteropNet, wallet: ElectrumWallet, point: str, electrum_local_msat: int) -> None:
    """Both sides agree that ``wallet`` owns ``electrum_local_msat`` and nothing is in flight."""
    capacity_msat = net.lightspeed.channel(point)["capacity_sat"] * 1000
    want_ls = (capacity_msat - electrum_local_msat, electrum_local_msat, 0)
    wait_for(f"Lightspeed's view of {point} to be {want_ls}", lambda: ls_view(net, point) == want_ls, 30)
    want_el = (electrum_local_msat // 1000, (capacity_msat - electrum_local_msat) // 1000)

    def electrum_settled() -> bool:
        channel = wallet.channel(point)
        return ((channel["local_balance"], channel["remote_balance"]) == want_el
                and channel["local_unsettled_sent"] == 0 and channel["remote_unsettled_sent"] == 0)

    wait_for(f"{wallet.name}'s view of {point} to be {want_el}", electrum_settled, 30)


def open_from_electrum(net: InteropNet, wallet: ElectrumWallet, amount_sat: int = CAPACITY_SAT,
                       push_sat: int = 0) -> str:
    point = wallet.open_channel(net.lightspeed.peer_address, amount_sat, push_sat)
    wait_for("the funding transaction in the mempool", lambda: point.split(":")[0] in net.chain.mempool(), 30)
    net.mine(3)
    wait_for(f"{wallet.name}'s channel to open", lambda: wallet.channel(point)["state"] == "OPEN", 60)
    wait_for("Lightspeed's channel to be ready", lambda: net.lightspeed.channel(point)["state"] == "normal", 60)
    return point


def open_from_lightspeed(net: InteropNet, wallet: ElectrumWallet, amount_sat: int = CAPACITY_SAT,
                         push_sat: int = 0) -> str:
    net.lightspeed.call("connect", wallet.peer_address)
    opened = net.lightspeed.call("open-channel", wallet.node_id, str(amount_sat), "--push-msat", str(push_sat * 1000))
    point = f"{opened['funding_txid']}:{opened['funding_output_index']}"
    net.mine(3)
    wait_for("Lightspeed's channel to be ready", lambda: net.lightspeed.channel(point)["state"] == "normal", 60)
    wait_for(f"{wallet.name}'s channel to open", lambda: wallet.channel(point)["state"] == "OPEN", 60)
    return point


def ls_invoice(net: InteropNet, amount_msat: int, memo: str) -> dict[str, Any]:
    return dict(net.lightspeed.call("invoice", "new", str(amount_msat), memo))


def electrum_pays(wallet: ElectrumWallet, invoice: str) -> dict[str, Any]:
    paid = wallet.pay(invoice)
    assert paid["success"], f"{wallet.name} could not pay: {paid}"
    return paid


def ls_pays(net: InteropNet, invoice: str) -> dict[str, Any]:
    paid = dict(net.lightspeed.call("pay", invoice))
    assert paid["status"] == "succeeded", paid
    return paid


def proves(preimage_hex: str, payment_hash_hex: str) -> bool:
    return hashlib.sha256(bytes.fromhex(preimage_hex)).hexdigest() == payment_hash_hex


def tx_of(net: InteropNet, txid: str) -> Transaction:
    found = net.chain.transaction(txid)
    assert found is not None, f"transaction {txid} is not on the chain"
    tx: Transaction = found[0]
    return tx


def fee_inputs_cost(net: InteropNet, htlc_tx: Transaction) -> int:
    """What Lightspeed's wallet paid for the fee of its HTLC transaction under anchors: the wallet
    inputs it added (all but input 0, the HTLC) less its change (all but output 0). 0 without anchors."""
    added = sum(tx_of(net, txin.prevout.txid[::-1].hex()).outputs[txin.prevout.index].value_sat
                for txin in htlc_tx.inputs[1:])
    return added - sum(o.value_sat for o in htlc_tx.outputs[1:])


def check_htlc_tx_shape(net: InteropNet, htlc_tx: Transaction, amount_sat: int) -> None:
    """BOLT 3: input 0 / output 0 as both signed; under anchors the zero-fee transaction gains Lightspeed's
    wallet inputs and one change output (the peer signed SIGHASH_SINGLE|ANYONECANPAY), paying the fee."""
    assert htlc_tx.outputs[0].value_sat == amount_sat
    if net.release.anchors:
        assert len(htlc_tx.inputs) >= 2 and len(htlc_tx.outputs) == 2 and fee_inputs_cost(net, htlc_tx) > 0
    else:
        assert len(htlc_tx.inputs) == 1 and len(htlc_tx.outputs) == 1


def ctx_of(wallet: ElectrumWallet, point: str) -> Transaction:
    """Electrum's latest signed commitment transaction (what a force close would broadcast)."""
    raw = wallet.rpc("get_channel_ctx", channel_point=point, iknowwhatimdoing=True)
    return Transaction.parse(bytes.fromhex(raw))


# -- the cases --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def channels(net: InteropNet) -> Pair:
    """alice's channel to Lightspeed and Lightspeed's to bob, each with PUSH_SAT pushed to the side
    that did not fund it: both sides of both channels can pay, whatever ran before. (Run alone, or
    first on its worker, the multi-hop case found bob with nothing to pay back with, "NoPathFound"
    in a -n 3 run, and Lightspeed with too little on alice's channel to forward it.)"""
    return Pair(open_from_electrum(net, net.alice, push_sat=PUSH_SAT),
                open_from_lightspeed(net, net.bob, push_sat=PUSH_SAT))


def test_open_both_directions(net: InteropNet, channels: Pair) -> None:
    """Electrum opens a channel to Lightspeed and Lightspeed opens one to Electrum: both agree."""
    for point, wallet, lightspeed_funds in ((channels.alice, net.alice, False), (channels.bob, net.bob, True)):
        ls = net.lightspeed.channel(point)
        assert (ls["state"], ls["capacity_sat"], ls["initiator"]) == ("normal", CAPACITY_SAT, lightspeed_funds)
        assert ls["peer_id"] == wallet.node_id
        funder_msat, pushed_msat = CAPACITY_SAT * 1000, PUSH_SAT * 1000
        assert (ls["local_balance_msat"], ls["remote_balance_msat"]) == (
            (funder_msat - pushed_msat, pushed_msat) if lightspeed_funds else (pushed_msat, funder_msat - pushed_msat))
        el = wallet.channel(point)
        assert (el["state"], el["remote_pubkey"]) == ("OPEN", net.lightspeed.node_id)
        assert (el["local_balance"], el["remote_balance"]) == (
            (PUSH_SAT, CAPACITY_SAT - PUSH_SAT) if lightspeed_funds else (CAPACITY_SAT - PUSH_SAT, PUSH_SAT))
        txid, _, index = point.partition(":")
        funding, confirmations = net.chain.transaction(txid)
        assert confirmations >= 3 and funding.outputs[int(index)].value_sat == CAPACITY_SAT
        assert len(funding.outputs[int(index)].script_pubkey) == 34  # P2WSH of the 2-of-2


def test_payments_both_ways_on_both_channels(net: InteropNet, channels: Pair) -> None:
    """Electrum pays Lightspeed and Lightspeed pays Electrum, on the channel each side opened."""
    for point, wallet in ((channels.alice, net.alice), (channels.bob, net.bob)):
        before = net.lightspeed.channel(point)["remote_balance_msat"]
        if before == 0:  # Lightspeed funded it: it pays first, then gets some back
            invoice = wallet.invoice(200_000, "from lightspeed")
            paid = ls_pays(net, invoice)
            assert proves(paid["preimage"], paid["payment_hash"])
            settled(net, wallet, point, before + 200_000_000)
            before += 200_000_000
        ours = ls_invoice(net, 70_000_123, f"from {wallet.name}")  # not a whole satoshi: msat precision
        paid = electrum_pays(wallet, ours["invoice"])
        assert paid["payment_hash"] == ours["payment_hash"] and proves(paid["preimage"], ours["payment_hash"])
        settled(net, wallet, point, before - 70_000_123)
        theirs = wallet.invoice(30_000, f"to {wallet.name}")
        paid = ls_pays(net, theirs)
        assert proves(paid["preimage"], paid["payment_hash"])
        settled(net, wallet, point, before - 70_000_123 + 30_000_000)
        invoices = {i["payment_hash"]: i["status"] for i in net.lightspeed.call("invoice", "list")["invoices"]}
        assert invoices[ours["payment_hash"]] == "paid"


def test_channel_type_is_agreed(net: InteropNet, channels: Pair) -> None:
    """4.3.4 runs static_remotekey commitments, 4.8.1 anchors: Electrum's signed commitment has that form.

    Electrum's commitment pays Electrum's balance to its to_local (P2WSH) and Lightspeed's to its
    to_remote (P2WPKH under static_remotekey, a CSV-1 P2WSH under anchors); the funder's output
    carries the commitment fee (and the two 330 sat anchors), the other one is its balance exactly.
    """
    for point, wallet in ((channels.alice, net.alice), (channels.bob, net.bob)):
        ls = net.lightspeed.channel(point)
        local_msat, remote_msat, _ = ls_view(net, point)
        if not local_msat:  # run alone: give the non-funder a balance, for both main outputs
            electrum_pays(wallet, ls_invoice(net, 100_000_000, "both outputs")["invoice"])
            settled(net, wallet, point, remote_msat - 100_000_000)
        elif not remote_msat:
            ls_pays(net, wallet.invoice(100_000, "both outputs"))
            settled(net, wallet, point, 100_000_000)
        local_msat, remote_msat, _ = ls_view(net, point)
        ctx = ctx_of(wallet, point)
        anchors = [o for o in ctx.outputs if o.value_sat == ANCHOR_SAT]
        mains = [o for o in ctx.outputs if o.value_sat != ANCHOR_SAT]
        assert len(mains) == 2, ctx.outputs
        ls_sat, el_sat = local_msat // 1000, remote_msat // 1000
        # what the outputs lack of the capacity: the fee, and the msat the two balances' rounding drops
        fee_sat = CAPACITY_SAT - sum(o.value_sat for o in ctx.outputs) - (CAPACITY_SAT - ls_sat - el_sat)
        assert 0 < fee_sat < 50_000, fee_sat
        funder_pays = fee_sat + len(anchors) * ANCHOR_SAT
        want_to_remote = ls_sat - funder_pays if ls["initiator"] else ls_sat
        want_to_local = el_sat if ls["initiator"] else el_sat - funder_pays
        to_remote = [o for o in mains if o.value_sat == want_to_remote]
        to_local = [o for o in mains if o.value_sat == want_to_local]
        assert to_remote and to_local, (ctx.outputs, local_msat, remote_msat, fee_sat)
        assert len(to_local[0].script_pubkey) == 34  # P2WSH: revocation or CSV delay
        if net.release.anchors:  # BOLT 3 option_anchors: to_remote is a CSV-1 P2WSH, two P2WSH anchors
            assert len(anchors) == 2 and len(to_remote[0].script_pubkey) == 34
            assert all(len(a.script_pubkey) == 34 and a.script_pubkey[:2] == b"\x00\x20" for a in anchors)
        else:
            assert not anchors and len(to_remote[0].script_pubkey) == 22
        assert electrum_view(wallet, point) == (el_sat, ls_sat)


def test_multihop_both_ways(net: InteropNet, channels: Pair) -> None:
    """alice -> Lightspeed -> bob and back: Lightspeed forwards, at its advertised fee, first try."""
    amount_msat = 50_000_000
    fee_msat = 1000 + amount_msat // 1_000_000  # Lightspeed's policy: 1000 msat + 1 ppm
    for payer, payee, payer_point, payee_point in ((net.alice, net.bob, channels.alice, channels.bob),
                                                   (net.bob, net.alice, channels.bob, channels.alice)):
        payer_before = ls_view(net, payer_point)[1]
        payee_before = ls_view(net, payee_point)[1]
        invoice = payee.invoice(amount_msat // 1000, f"{payer.name} to {payee.name}")
        paid = electrum_pays(payer, invoice)
        assert proves(paid["preimage"], paid["payment_hash"])
        # BOLT 4: the route hint carried Lightspeed's channel_update, so no fee_insufficient round trip
        assert len(paid["log"]) == 1, f"{payer.name} needed more than one attempt: {paid['log']}"
        settled(net, payer, payer_point, payer_before - amount_msat - fee_msat)
        settled(net, payee, payee_point, payee_before + amount_msat)


def test_mpp_from_electrum(net: InteropNet, channels: Pair) -> None:
    """alice pays more than any one of her channels can carry: she splits it, Lightspeed takes the set."""
    second = open_from_electrum(net, net.alice, 600_000)
    first_sendable = ls_view(net, channels.alice)[1]
    amount_msat = first_sendable - 20_000_000 + 300_000_000  # more than either channel alone
    first_before, second_before = ls_view(net, channels.alice)[1], ls_view(net, second)[1]
    ours = ls_invoice(net, amount_msat, "needs two channels")
    paid = electrum_pays(net.alice, ours["invoice"])
    assert proves(paid["preimage"], ours["payment_hash"])
    wait_for("both channels to settle", lambda: ls_view(net, channels.alice)[2] == ls_view(net, second)[2] == 0)
    spent = (first_before - ls_view(net, channels.alice)[1]) + (second_before - ls_view(net, second)[1])
    assert spent == amount_msat
    assert ls_view(net, second)[1] < second_before and ls_view(net, channels.alice)[1] < first_before
    net.alice.close_channel(second)
    net.mine(1)


def test_restart_and_reestablish(net: InteropNet, channels: Pair) -> None:
    """Each side restarts mid-channel: channel_reestablish brings the channel back, payments flow."""
    point, wallet = channels.alice, net.alice
    electrum_msat = ls_view(net, point)[1]
    net.lightspeed.stop()
    net.lightspeed.start()
    wait_for("Lightspeed's channel back", lambda: net.lightspeed.channel(point)["state"] == "normal", 30)
    wait_for("alice reconnected", lambda: wallet.channel(point)["peer_state"] == "GOOD", 60)
    ours = ls_invoice(net, 10_000_000, "after lightspeed restarted")
    electrum_pays(wallet, ours["invoice"])
    settled(net, wallet, point, electrum_msat - 10_000_000)

    wallet.stop()
    wallet.start()
    wait_for("alice reconnected", lambda: wallet.channel(point)["peer_state"] == "GOOD", 60)
    theirs = wallet.invoice(4_000, "after alice restarted")
    ls_pays(net, theirs)
    settled(net, wallet, point, electrum_msat - 10_000_000 + 4_000_000)


# -- closing ----------------------------------------------------------------------------------------

def closing_outputs(net: InteropNet, closing_txid: str) -> dict[bytes, int]:
    tx = tx_of(net, closing_txid)
    return {o.script_pubkey: o.value_sat for o in tx.outputs}


def test_mutual_close_started_by_each_side(net: InteropNet) -> None:
    """alice closes her channel, Lightspeed closes bob's: each gets its balance, the funder pays the fee."""
    # balances pushed at opening: a payment could take the other channel each wallet has with Lightspeed
    a = open_from_electrum(net, net.alice, push_sat=123_456)
    b = open_from_lightspeed(net, net.bob, push_sat=234_567)
    settled(net, net.alice, a, (CAPACITY_SAT - 123_456) * 1000)
    settled(net, net.bob, b, 234_567_000)

    ls_before = net.lightspeed.call("balance")["onchain_sat"]
    alice_before, bob_before = net.alice.balance(), net.bob.balance()
    closing_a = net.alice.close_channel(a)
    closed = net.lightspeed.call("close", net.lightspeed.channel(b)["channel_id"])
    closing_b = closed["closing_txid"]
    net.mine(1)
    for point, txid in ((a, closing_a), (b, closing_b)):
        tx = tx_of(net, txid)
        assert tx.inputs[0].prevout.txid[::-1].hex() == point.split(":")[0]
    # a: alice funded it. Lightspeed gets exactly its 123,456 sat; alice the rest less the fee.
    tx_a = tx_of(net, closing_a)
    values_a = sorted(o.value_sat for o in tx_a.outputs)
    fee_a = CAPACITY_SAT - sum(values_a)
    assert 123_456 in values_a and CAPACITY_SAT - 123_456 - fee_a in values_a and 0 < fee_a < 20_000
    # b: Lightspeed funded it. bob gets exactly 234,567 sat.
    tx_b = tx_of(net, closing_b)
    values_b = sorted(o.value_sat for o in tx_b.outputs)
    fee_b = CAPACITY_SAT - sum(values_b)
    assert 234_567 in values_b and CAPACITY_SAT - 234_567 - fee_b in values_b and 0 < fee_b < 20_000
    wait_for("Lightspeed's wallet to have both outputs", lambda: net.lightspeed.call("balance")["onchain_sat"]
             == ls_before + 123_456 + CAPACITY_SAT - 234_567 - fee_b)
    wait_for("alice's wallet", lambda: net.alice.balance()["confirmed"]
             == alice_before["confirmed"] + CAPACITY_SAT - 123_456 - fee_a)
    wait_for("bob's wallet", lambda: net.bob.balance()["confirmed"] == bob_before["confirmed"] + 234_567)
    for point, wallet in ((a, net.alice), (b, net.bob)):
        wait_for(f"{wallet.name} to see {point} closed", lambda p=point, w=wallet: w.channel(p)["state"]
                 in ("CLOSED", "REDEEMED"))
        assert net.lightspeed.channel(point)["state"] == "closed"


# -- force close ------------------------------------------------------------------------------------

def output_paying(tx: Transaction, value_sat: int) -> int:
    """The index of ``tx``'s one output of exactly ``value_sat``."""
    found = [i for i, o in enumerate(tx.outputs) if o.value_sat == value_sat]
    assert len(found) == 1, (value_sat, tx.outputs)
    return found[0]


def anchor_children(net: InteropNet, wallet: ElectrumWallet, commitment: Transaction) -> tuple[list[Transaction], int]:
    """``wallet``'s spends of an anchor of ``commitment`` (Electrum 4.8.1), and what they changed in its
    wallet: their outputs, every one of them the wallet's, less the wallet coins they spent.

    4.8.1 spends its anchor with a wallet coin (CPFP) whenever it sees a commitment, its own or the
    peer's, paying less than its estimate, judged on the commitment's own fee, before the commitment
    is confirmed and verified: it may do so beside a package that already pays enough, and the 330 sat
    it gets back cost it more. A check of its balance to the satoshi counts them.
    """
    children, change = [], 0
    for index in anchor_indexes(commitment):
        child = net.chain.spender(commitment.txid_hex, index)
        if child is None or not all(wallet.rpc("ismine", address=script_to_address(o.script_pubkey, REGTEST))
                                    for o in child.outputs):
            continue
        coins = [i for i in child.inputs if i.prevout.txid != commitment.txid]
        spent = sum(tx_of(net, i.prevout.txid[::-1].hex()).outputs[i.prevout.index].value_sat for i in coins)
        children.append(child)
        change += sum(o.value_sat for o in child.outputs) - spent
    return children, change


def confirmed_anchor_change(net: InteropNet, wallet: ElectrumWallet, commitment: Transaction) -> int:
    """What ``wallet``'s anchor spends of ``commitment`` changed in its confirmed balance (all mined)."""
    children, change = anchor_children(net, wallet, commitment)
    for child in children:
        assert net.chain.transaction(child.txid_hex)[1] >= 1, f"{wallet.name}'s anchor spend is not mined"
    return change


def lightspeed_anchor_alone(net: InteropNet, commitment_txid: str) -> int:
    """What Lightspeed's own anchor on the commitment brought its wallet when swept alone (it does so
    once its commitment confirmed, when the fee leaves half the anchor): that sweep's one output,
    counted once mined; 0 while it is not, or when the anchor went otherwise (a CPFP child, or batched
    into the to_remote sweep). Told apart by its shape, one signed input and one output: Electrum
    4.8.1 spends its anchor only in CPFP children, beside a wallet coin."""
    commitment = tx_of(net, commitment_txid)
    gain = 0
    for index in anchor_indexes(commitment):
        spender = net.chain.spender(commitment_txid, index)
        if spender is None or len(spender.inputs) != 1 or not spender.inputs[0].witness[0]:
            continue
        found = net.chain.transaction(spender.txid_hex)
        if found is not None and found[1] >= 1:
            gain += spender.outputs[0].value_sat
    return gain


def swept(net: InteropNet, txid: str, index: int, seconds: float = 60) -> Transaction:
    """The transaction spending ``txid:index`` once it shows up (then confirmed by a block)."""
    sweep: Transaction = wait_for(f"a sweep of {txid}:{index}", lambda: net.chain.spender(txid, index), seconds)
    net.mine(1)
    return sweep


def test_force_close_by_electrum_and_sweeps(net: InteropNet) -> None:
    """alice broadcasts her commitment: Lightspeed gets its balance at once, alice hers after the delay."""
    # the balance is pushed at opening: a payment could take the other channel alice has with Lightspeed
    a = open_from_electrum(net, net.alice, push_sat=300_000)
    settled(net, net.alice, a, (CAPACITY_SAT - 300_000) * 1000)
    ls_before = net.lightspeed.call("balance")["onchain_sat"]
    alice_before = net.alice.balance()["confirmed"]

    commitment_txid = net.alice.close_channel(a, force=True)
    wait_for("alice's commitment in the mempool", lambda: commitment_txid in net.chain.mempool(), 30)
    net.mine(1)
    commitment = tx_of(net, commitment_txid)
    assert commitment.inputs[0].prevout.txid[::-1].hex() == a.split(":")[0]
    to_remote = output_paying(commitment, 300_000)  # Lightspeed's balance, exactly: alice paid the fee
    to_local = next(i for i in range(len(commitment.outputs)) if i != to_remote
                    and commitment.outputs[i].value_sat != ANCHOR_SAT)
    to_local_sat = commitment.outputs[to_local].value_sat
    assert to_local_sat < CAPACITY_SAT - 300_000
    ls_sweep = swept(net, commitment_txid, to_remote)  # under anchors, Lightspeed's anchor rides along
    assert len(ls_sweep.outputs) == 1 and 300_000 - 5_000 < ls_sweep.outputs[0].value_sat < 300_000 + ANCHOR_SAT
    wait_for("Lightspeed's wallet to get its sweep", lambda: net.lightspeed.call("balance")["onchain_sat"]
             == ls_before + ls_sweep.outputs[0].value_sat)

    # alice's to_local waits Lightspeed's to_self_delay (CSV) before Electrum can sweep it
    # BIP 68: after DELAY - 2 confirmations the next block is DELAY - 1 deep, too early for the sweep
    net.mine(LIGHTSPEED_TO_SELF_DELAY - 3)
    assert net.chain.spender(commitment_txid, to_local) is None, "swept before its CSV delay"
    net.mine(1)
    alice_sweep = swept(net, commitment_txid, to_local)
    # Electrum's sweep fee is its own choice (about 21,800 sat at its regtest fallback feerate)
    assert len(alice_sweep.outputs) == 1 and to_local_sat - 25_000 < alice_sweep.outputs[0].value_sat < to_local_sat
    wait_for("alice's wallet to get her sweep", lambda: net.alice.balance()["confirmed"]
             == alice_before + alice_sweep.outputs[0].value_sat)
    assert net.lightspeed.channel(a)["state"] == "closed"
    wait_for("alice to see the channel redeemed", lambda: net.alice.channel(a)["state"] in ("CLOSED", "REDEEMED"))



# -- anchor channels (Electrum 4.8.1) -----------------------------------------------------------------

# The cases below need Electrum 4.8.1: 4.3.4 opens no anchor channel and, on regtest, keeps one
# hard-coded feerate (it sends no update_fee for a changed estimate).
only_481 = pytest.mark.parametrize("net", [pytest.param("4.8.1", marks=pytest.mark.xdist_group("electrum-4.8.1"))],
                                   indirect=True)
# BOLT 3: the weight of a commitment under option_anchors with no HTLC output.
ANCHOR_COMMITMENT_WEIGHT = 1124
SERVER_SAT_PER_KVB = 253 * 4  # what our Electrum server answers to blockchain.estimatefee (the chain's 253 sat/kw)


@contextlib.contextmanager
def fee_estimate(wallet: ElectrumWallet, sat_per_kvb: int) -> Iterator[None]:
    """Electrum believes the chain's fee estimate is ``sat_per_kvb`` at every target (regtest commands).

    Electrum reacts as to a real change: update_fee on the channels it funded, CPFP of a commitment
    of its own that now pays too little. Afterwards it gets the server's estimate back.
    """
    wallet.rpc("setconfig", key="test_disable_automatic_fee_eta_update", value="true")
    wallet.rpc("test_inject_fee_etas", fee_est=str(dict.fromkeys(ELECTRUM_FEE_TARGETS, sat_per_kvb)))
    try:
        yield
    finally:
        wallet.rpc("test_inject_fee_etas", fee_est=str(dict.fromkeys(ELECTRUM_FEE_TARGETS, SERVER_SAT_PER_KVB)))
        wallet.rpc("setconfig", key="test_disable_automatic_fee_eta_update", value="false")


@contextlib.contextmanager
def large_coins_only(wallet: ElectrumWallet, min_sat: int = 100_000) -> Iterator[None]:
    """Freeze the wallet's coins under ``min_sat`` meanwhile (Electrum 4.8.1's batcher bug).

    Its coin chooser, for a sweep with no output of its own (a CPFP through an anchor), asks the
    coins for dust plus the fee of a transaction without change, then drops a change output that
    the larger fee with change leaves under dust: a coin in that window of ~1,200 sat (at 40 sat/vB)
    gives a transaction with no output, an assertion fails, the batch is dropped, and it fails the
    same way at every retry ("coinchooser returned tx with 2 inputs and 0 outputs" in its log).
    Earlier tests of the module leave such coins (small sweeps), in an order that varies: CI's
    150 s timeout. A large coin always leaves a change output."""
    small = [f"{c['prevout_hash']}:{c['prevout_n']}" for c in wallet.rpc("listunspent")
             if int(Decimal(str(c["value"])) * COIN) < min_sat]
    for coin in small:
        wallet.rpc("freeze_utxo", coin=coin)
    try:
        yield
    finally:
        for coin in small:
            with contextlib.suppress(ElectrumError):
                wallet.rpc("unfreeze_utxo", coin=coin)


def commitment_fee(tx: Transaction) -> int:
    """The fee of a commitment of a CAPACITY_SAT channel (the funding output is its one input)."""
    return CAPACITY_SAT - sum(o.value_sat for o in tx.outputs)


def anchor_indexes(tx: Transaction) -> list[int]:
    return [i for i, o in enumerate(tx.outputs) if o.value_sat == ANCHOR_SAT]


@only_481
def test_update_fee_from_electrum_then_force_close_by_lightspeed(net: InteropNet) -> None:
    """alice raises the feerate (update_fee): Lightspeed accepts it, both commitments carry it;
    Lightspeed then broadcasts its commitment and each side sweeps its output after its CSV delay."""
    a = open_from_electrum(net, net.alice, push_sat=300_000)
    settled(net, net.alice, a, (CAPACITY_SAT - 300_000) * 1000)
    start_fee = commitment_fee(ctx_of(net.alice, a))
    # Electrum's anchor-channel feerate: the 1008-block estimate (at least 5 sat/vB) in sat/kw, plus half
    feerate_per_kw = 40_000 // 4 * 3 // 2
    want_fee = feerate_per_kw * ANCHOR_COMMITMENT_WEIGHT // 1000
    assert start_fee < want_fee
    with fee_estimate(net.alice, 40_000):
        # Electrum's commitment at the new feerate, signed by Lightspeed, comes after Lightspeed's
        # revoke_and_ack of its own commitment at that feerate (BOLT 2 update order)
        wait_for("alice's commitment at the new feerate", lambda: commitment_fee(ctx_of(net.alice, a)) == want_fee, 30)
        settled(net, net.alice, a, (CAPACITY_SAT - 300_000) * 1000)
        ls_before = net.lightspeed.call("balance")["onchain_sat"]
        alice_before = net.alice.balance()["confirmed"]
        closed = net.lightspeed.call("close", net.lightspeed.channel(a)["channel_id"], "--force")
        commitment_txid = closed["closing_txid"]
        commitment = tx_of(net, commitment_txid)
        # Lightspeed's commitment: the same feerate; its balance exactly; alice's less fee and anchors
        assert commitment_fee(commitment) == want_fee
        assert len(anchor_indexes(commitment)) == 2
        to_local = output_paying(commitment, 300_000)
        to_remote_sat = CAPACITY_SAT - 300_000 - want_fee - 2 * ANCHOR_SAT
        to_remote = output_paying(commitment, to_remote_sat)
        net.mine(1)
        # alice's to_remote is a P2WSH with a 1-block CSV under anchors: swept once the commitment confirmed
        alice_sweep = swept(net, commitment_txid, to_remote)
        spending = next(i for i in alice_sweep.inputs if i.prevout.txid[::-1].hex() == commitment_txid)
        assert spending.sequence == 1
        assert len(alice_sweep.outputs) == 1 and to_remote_sat - 25_000 < alice_sweep.outputs[0].value_sat < to_remote_sat
        wait_for("alice's wallet to get her sweep", lambda: net.alice.balance()["confirmed"]
                 == alice_before + alice_sweep.outputs[0].value_sat)
    # Lightspeed's to_local waits alice's to_self_delay: BIP 68 lets the sweep into the block that
    # gives the commitment DELAY confirmations, so with DELAY - 1 none may be in the mempool yet
    net.mine(ELECTRUM_TO_SELF_DELAY - 1 - net.chain.transaction(commitment_txid)[1])
    assert net.chain.spender(commitment_txid, to_local) is None, "swept before its CSV delay"
    net.mine(1)
    ls_sweep = swept(net, commitment_txid, to_local)  # Electrum's delay (10) is under 16: the anchor rides along
    assert len(ls_sweep.outputs) == 1 and 300_000 - 5_000 < ls_sweep.outputs[0].value_sat < 300_000 + ANCHOR_SAT
    wait_for("Lightspeed's wallet to get its sweep and its anchor", lambda: net.lightspeed.call("balance")[
        "onchain_sat"] == ls_before + lightspeed_anchor_alone(net, commitment_txid) + ls_sweep.outputs[0].value_sat)
    wait_for("alice to see the channel closed", lambda: net.alice.channel(a)["state"] in ("CLOSED", "REDEEMED"))


@only_481
def test_electrum_cpfps_its_commitment_through_its_anchor(net: InteropNet) -> None:
    """alice force-closes; her commitment then pays less than her fee estimate: she spends her anchor
    in a child that pays for both (CPFP), and the chain mines the two together."""
    a = open_from_electrum(net, net.alice, push_sat=200_000)
    settled(net, net.alice, a, (CAPACITY_SAT - 200_000) * 1000)
    ls_before = net.lightspeed.call("balance")["onchain_sat"]
    commitment_txid = net.alice.close_channel(a, force=True)
    wait_for("alice's commitment in the mempool", lambda: commitment_txid in net.chain.mempool(), 30)
    commitment = tx_of(net, commitment_txid)
    parent_fee = commitment_fee(commitment)
    anchors = anchor_indexes(commitment)
    assert len(anchors) == 2
    with fee_estimate(net.alice, 40_000), large_coins_only(net.alice):  # 40 sat/vB: the commitment pays about 7.5
        assert parent_fee * 1000 // commitment.vsize < 40_000

        def cpfp() -> Transaction | None:
            return next((s for i in anchors if (s := net.chain.spender(commitment_txid, i)) is not None), None)

        try:  # Electrum's batcher acts on its own 1 s timer: slow under CI load (60 s timed out once)
            child: Transaction = wait_for("alice's CPFP through her anchor", cpfp, 150)
        except AssertionError as exc:  # CI timed out once at 150 s too: say what alice's batcher did
            raise AssertionError(f"{exc}\n--- alice's batcher and watcher ---\n"
                                 f"{net.alice.file_log('txbatcher', 'lnwatcher', 'network')}\n"
                                 f"--- the Electrum server ---\n{net.server.log.read_text(errors='replace')[-3000:]}") from None
    spent = [net.chain.transaction(i.prevout.txid[::-1].hex())[0].outputs[i.prevout.index].value_sat
             for i in child.inputs]
    child_fee = sum(spent) - sum(o.value_sat for o in child.outputs)
    assert len(child.inputs) >= 2  # the anchor's 330 sat cannot pay: a wallet coin joins it
    package_rate = (parent_fee + child_fee) * 1000 // (commitment.vsize + child.vsize)
    assert package_rate > parent_fee * 1000 // commitment.vsize, (parent_fee, child_fee)
    net.mine(1)
    assert net.chain.transaction(commitment_txid)[1] == net.chain.transaction(child.txid_hex)[1] == 1  # confirmations
    ls_sweep = swept(net, commitment_txid, output_paying(commitment, 200_000))
    assert len(ls_sweep.outputs) == 1 and 200_000 - 5_000 < ls_sweep.outputs[0].value_sat < 200_000 + ANCHOR_SAT
    wait_for("Lightspeed's wallet to get its sweep", lambda: net.lightspeed.call("balance")["onchain_sat"]
             == ls_before + ls_sweep.outputs[0].value_sat)


@only_481
def test_lightspeed_force_close_cpfps_through_its_anchor(net: InteropNet) -> None:
    """Lightspeed signed its commitment to bob at 2,500 sat/kw, then the chain asks 5,000: its force close
    sends the commitment with a child spending its anchor (one package, mined together); bob sweeps his
    to_remote after its 1-block CSV, Lightspeed its to_local after bob's to_self_delay."""
    b = open_from_lightspeed(net, net.bob, push_sat=200_000)
    settled(net, net.bob, b, 200_000_000)
    ls_before = net.lightspeed.call("balance")["onchain_sat"]
    bob_before = net.bob.balance()["confirmed"]
    target = 5_000
    net.set_feerate(target)
    try:
        closed = net.lightspeed.call("close", net.lightspeed.channel(b)["channel_id"], "--force")
        commitment_txid = closed["closing_txid"]
        commitment = tx_of(net, commitment_txid)
        parent_fee = commitment_fee(commitment)
        # BOLT 3: the fee at the feerate Lightspeed opened with, below what the chain asks now
        assert parent_fee == ChannelSettings().feerate_per_kw * ANCHOR_COMMITMENT_WEIGHT // 1000
        assert ChannelSettings().feerate_per_kw < target
        # Lightspeed's child is in the mempool with its parent at once (bob may add his own: anchor_children)
        bobs = {c.txid for c in anchor_children(net, net.bob, commitment)[0]}
        children = [s for i in anchor_indexes(commitment) if (s := net.chain.spender(commitment_txid, i))
                    and s.txid not in bobs]
        assert len(children) == 1, children
        child = children[0]
        spent = [tx_of(net, i.prevout.txid[::-1].hex()).outputs[i.prevout.index].value_sat for i in child.inputs]
        child_fee = sum(spent) - sum(o.value_sat for o in child.outputs)
        assert target * (commitment.weight + child.weight) <= (parent_fee + child_fee) * 1000
        net.mine(1)
        assert net.chain.transaction(commitment_txid)[1] == net.chain.transaction(child.txid_hex)[1] == 1
        wait_for("Lightspeed's wallet after the CPFP", lambda: net.lightspeed.call("balance")["onchain_sat"]
                 == ls_before - child_fee + ANCHOR_SAT)
        to_remote = output_paying(commitment, 200_000)  # bob's balance exactly: Lightspeed funded the channel
        to_local_sat = CAPACITY_SAT - 200_000 - parent_fee - 2 * ANCHOR_SAT
        to_local = output_paying(commitment, to_local_sat)
        bob_sweep = swept(net, commitment_txid, to_remote)
        anchor_spends, _ = anchor_children(net, net.bob, commitment)
        if bob_sweep.txid in {c.txid for c in anchor_spends}:
            # 4.8.1 may batch his to_remote into his anchor's CPFP (with a wallet coin): count that one
            # transaction once, by what it changed in his wallet (its outputs less the wallet coin)
            # (mined, every output his: anchor_children and confirmed_anchor_change check both on chain).
            bob_gain = confirmed_anchor_change(net, net.bob, commitment)
            assert 200_000 - 25_000 < bob_gain < 200_000 + ANCHOR_SAT
            # 4.8.1 builds this batch by replacing (BIP 125) its first anchor CPFP. serve-electrum did not
            # tell it that the replaced transaction was gone, and its balance stayed stale; it does now.
            wait_for("bob's wallet to count his batch",
                     lambda: net.bob.balance()["confirmed"] == bob_before + bob_gain)
        else:
            assert len(bob_sweep.outputs) == 1 and 200_000 - 25_000 < bob_sweep.outputs[0].value_sat < 200_000
            bob_gain = bob_sweep.outputs[0].value_sat + confirmed_anchor_change(net, net.bob, commitment)
            wait_for("bob's wallet to get his sweep",
                     lambda: net.bob.balance()["confirmed"] == bob_before + bob_gain)
    finally:
        net.set_feerate(0)
    net.mine(ELECTRUM_TO_SELF_DELAY - 1 - net.chain.transaction(commitment_txid)[1])
    assert net.chain.spender(commitment_txid, to_local) is None, "swept before its CSV delay"
    net.mine(1)
    ls_sweep = swept(net, commitment_txid, to_local)
    assert len(ls_sweep.outputs) == 1 and to_local_sat - 5_000 < ls_sweep.outputs[0].value_sat < to_local_sat
    wait_for("Lightspeed's wallet to get its sweep", lambda: net.lightspeed.call("balance")["onchain_sat"]
             == ls_before - child_fee + ANCHOR_SAT + ls_sweep.outputs[0].value_sat)


def bob_takes_his_to_remote(net: InteropNet, commitment: Transaction, to_remote: int, bob_before: int) -> int:
    """What bob's wallet got from ``commitment`` (Lightspeed's, mined): his to_remote, and what his anchor
    spends changed. Waits until his confirmed balance shows it, so that no coin of a case reaches a
    later case's wallet and moves the balance that case checks."""
    amount_sat = commitment.outputs[to_remote].value_sat
    if net.release.anchors:  # to_remote is a CSV-1 P2WSH: bob sweeps it
        bob_sweep = swept(net, commitment.txid_hex, to_remote)
        assert len(bob_sweep.outputs) == 1 and amount_sat - 5_000 < bob_sweep.outputs[0].value_sat < amount_sat
        bob_gets = bob_sweep.outputs[0].value_sat
    else:  # static_remotekey: to_remote pays a key of bob's wallet, his as it is
        assert len(commitment.outputs[to_remote].script_pubkey) == 22
        bob_gets = amount_sat
    bob_gets += confirmed_anchor_change(net, net.bob, commitment)
    wait_for("bob's wallet to get his balance", lambda: net.bob.balance()["confirmed"] == bob_before + bob_gets)
    return bob_gets


def test_force_close_by_lightspeed_and_sweeps(net: InteropNet) -> None:
    """Lightspeed broadcasts its commitment: bob gets his balance, Lightspeed sweeps after bob's delay."""
    b = open_from_lightspeed(net, net.bob, push_sat=250_000)
    settled(net, net.bob, b, 250_000_000)
    ls_before = net.lightspeed.call("balance")["onchain_sat"]
    bob_before = net.bob.balance()["confirmed"]
    bob_ctx = ctx_of(net.bob, b)  # bob's commitment: same feerate, same outputs, so the same fee

    closed = net.lightspeed.call("close", "--force", net.lightspeed.channel(b)["channel_id"])
    commitment_txid = closed["closing_txid"]
    wait_for("Lightspeed's commitment in the mempool", lambda: commitment_txid in net.chain.mempool(), 30)
    net.mine(1)
    commitment = tx_of(net, commitment_txid)
    assert commitment.inputs[0].prevout.txid[::-1].hex() == b.split(":")[0]
    to_remote = output_paying(commitment, 250_000)  # bob's balance, exactly: Lightspeed paid the fee
    to_local = next(i for i in range(len(commitment.outputs)) if i != to_remote
                    and commitment.outputs[i].value_sat != ANCHOR_SAT)
    to_local_sat = commitment.outputs[to_local].value_sat
    # Lightspeed funded the channel: its output carries the commitment fee (and the anchors)
    assert sum(o.value_sat for o in commitment.outputs) == sum(o.value_sat for o in bob_ctx.outputs)
    assert sorted(o.value_sat for o in commitment.outputs) == sorted(o.value_sat for o in bob_ctx.outputs)
    assert 0 < CAPACITY_SAT - 250_000 - to_local_sat < 50_000
    bob_takes_his_to_remote(net, commitment, to_remote, bob_before)

    # Lightspeed's to_local waits the to_self_delay Electrum asked for (not Lightspeed's own), BIP 68:
    # it may be mined DELAY blocks after the commitment's block, and Lightspeed says so while it waits
    commitment_height = net.chain.height() - net.chain.transaction(commitment_txid)[1] + 1
    maturity = commitment_height + ELECTRUM_TO_SELF_DELAY
    limbo = net.lightspeed.channel(b)["limbo_sweeps"]
    assert [(s["label"], s["maturity_height"]) for s in limbo] == [("to_local", maturity)], limbo
    net.mine(maturity - 2 - net.chain.height())
    assert net.chain.spender(commitment_txid, to_local) is None, "swept before its CSV delay"
    net.mine(1)  # the next block is the first that may hold the sweep: Lightspeed broadcasts it now
    ls_sweep = swept(net, commitment_txid, to_local, 30)
    # under anchors Lightspeed's anchor rides along (Electrum's delay, 10 blocks, is under 16)
    anchor = ANCHOR_SAT if net.release.anchors else 0
    assert len(ls_sweep.outputs) == 1 and to_local_sat - 5_000 < ls_sweep.outputs[0].value_sat < to_local_sat + anchor
    assert ls_sweep.outputs[0].value_sat == limbo[0]["amount_sat"]  # what it said would come
    wait_for("Lightspeed's wallet to get its sweep and its anchor", lambda: net.lightspeed.call("balance")[
        "onchain_sat"] == ls_before + lightspeed_anchor_alone(net, commitment_txid) + ls_sweep.outputs[0].value_sat)
    closed_view = net.lightspeed.channel(b)
    assert (closed_view["state"], closed_view["close_type"], closed_view["limbo_sweeps"]) == ("closed", "local", [])
    wait_for("bob to see the channel redeemed", lambda: net.bob.channel(b)["state"] in ("CLOSED", "REDEEMED"))


# -- update_fee ---------------------------------------------------------------------------------------


def bolt3_fee(net: InteropNet, feerate_per_kw: int, htlcs: int = 0) -> int:
    # BOLT #3: commitment_weight = 724 (1124 with option_anchors) + 172 per HTLC output;
    # fee = feerate_per_kw * weight / 1000, rounded down
    return feerate_per_kw * ((1124 if net.release.anchors else 724) + 172 * htlcs) // 1000


def test_update_fee_from_lightspeed(net: InteropNet) -> None:
    """Lightspeed, the funder, moves the feerate: Electrum signs it, both commitments pay the same fee."""
    b = open_from_lightspeed(net, net.bob, push_sat=300_000)
    settled(net, net.bob, b, 300_000_000)
    feerate = 7_531
    want_fee = bolt3_fee(net, feerate)  # what the miner gets; the funder also pays the two anchors (4.8.1)
    anchors_sat = 2 * ANCHOR_SAT if net.release.anchors else 0
    assert commitment_fee(ctx_of(net.bob, b)) != want_fee
    net.lightspeed.call("update-fee", net.lightspeed.channel(b)["channel_id"], str(feerate))
    wait_for(f"bob's commitment to pay {want_fee} sat", lambda: commitment_fee(ctx_of(net.bob, b)) == want_fee, 30)
    # Electrum holds Lightspeed's signature for it: its outputs are the balances, less the new fee
    ctx = ctx_of(net.bob, b)
    assert sorted(o.value_sat for o in ctx.outputs if o.value_sat != ANCHOR_SAT) == sorted(
        [300_000, CAPACITY_SAT - 300_000 - want_fee - anchors_sat])
    assert len(anchor_indexes(ctx)) == anchors_sat // ANCHOR_SAT
    # (no payment here: it could take the other channel bob has with Lightspeed)
    # Lightspeed's commitment (bob's signature on it: the chain checks it) pays the same fee to the satoshi
    bob_before = net.bob.balance()["confirmed"]
    closed = net.lightspeed.call("close", "--force", net.lightspeed.channel(b)["channel_id"])
    wait_for("Lightspeed's commitment in the mempool", lambda: closed["closing_txid"] in net.chain.mempool(), 30)
    net.mine(1)
    commitment = tx_of(net, closed["closing_txid"])
    assert commitment_fee(commitment) == want_fee
    to_local = output_paying(commitment, CAPACITY_SAT - 300_000 - want_fee - anchors_sat)
    # nothing of this case may reach a later one's wallet: bob's sweep of his to_remote once confirmed
    # (a sweep of 4.8.1's still pending here was mined in the breach case and counted there)
    bob_takes_his_to_remote(net, commitment, output_paying(commitment, 300_000), bob_before)
    # and Lightspeed sweeps its to_local after bob's delay
    net.mine(ELECTRUM_TO_SELF_DELAY - net.chain.transaction(closed["closing_txid"])[1])
    swept(net, closed["closing_txid"], to_local, 30)
    wait_for("Lightspeed's resolution to end", lambda: net.lightspeed.channel(b)["limbo_sweeps"] == [], 30)


# -- a breach -----------------------------------------------------------------------------------------

def paying_in_background(pool: ThreadPoolExecutor, wallet: ElectrumWallet, invoice: str) -> Future[dict[str, Any]]:
    """``wallet`` pays ``invoice`` in a thread: lnpay answers only once the HTLC is settled or failed."""
    return pool.submit(wallet.pay, invoice, 120)


def hold_invoice(net: InteropNet, amount_msat: int, memo: str) -> tuple[bytes, str]:
    """A Lightspeed hold invoice: (its preimage, which only the test knows, the invoice)."""
    preimage = os.urandom(32)
    made = net.lightspeed.call("invoice", "new", str(amount_msat), memo, "--hold", hashlib.sha256(preimage).hexdigest())
    return preimage, str(made["invoice"])


def non_anchor_values(tx: Transaction) -> list[int]:
    return sorted(o.value_sat for o in tx.outputs if o.value_sat != ANCHOR_SAT)


def with_htlcs(ctx: Transaction, htlcs: int) -> Transaction | None:
    """``ctx`` if it carries ``htlcs`` HTLC outputs beside both main outputs (a wait_for check)."""
    return ctx if len(non_anchor_values(ctx)) == 2 + htlcs else None


def test_breach_by_electrum_is_punished(net: InteropNet) -> None:
    """bob broadcasts a commitment he revoked (one with an HTLC in it): Lightspeed takes every output.

    bob pays a hold invoice of Lightspeed's; his commitment with the HTLC in flight is saved, the
    invoice is settled (bob revokes that commitment), then bob broadcasts the saved one. BOLT 5:
    Lightspeed spends his to_local and the HTLC output with the revocation key, and sweeps its own.
    """
    b = open_from_lightspeed(net, net.bob, push_sat=600_000)
    settled(net, net.bob, b, 600_000_000)
    preimage, invoice = hold_invoice(net, 400_000_000, "to be revoked")
    with ThreadPoolExecutor(1) as pool:
        paying = paying_in_background(pool, net.bob, invoice)
        revoked = wait_for("bob's commitment with the HTLC", lambda: with_htlcs(ctx_of(net.bob, b), 1), 60)
        assert ls_view(net, b)[2] == 1
        net.lightspeed.call("invoice", "settle", preimage.hex())
        paid = paying.result(timeout=120)
    assert paid["success"] and proves(paid["preimage"], hashlib.sha256(preimage).hexdigest()), paid
    settled(net, net.bob, b, 200_000_000)  # (the 400,000 sat could only go through this channel)
    assert ctx_of(net.bob, b).txid != revoked.txid
    # the revoked commitment: bob's 200,000 sat (to_local), the 400,000 sat HTLC, Lightspeed's rest less the fee
    revoked_fee = commitment_fee(revoked)
    assert non_anchor_values(revoked) == sorted([200_000, 400_000, CAPACITY_SAT - 600_000 - revoked_fee
                                                 - (2 * ANCHOR_SAT if net.release.anchors else 0)])

    ls_before = net.lightspeed.call("balance")["onchain_sat"]
    bob_before = net.bob.balance()["confirmed"]
    net.bob.rpc("broadcast", tx=revoked.serialize().hex())
    wait_for("the revoked commitment in the mempool", lambda: revoked.txid_hex in net.chain.mempool(), 30)
    net.mine(1)  # Lightspeed reacts to the block that confirms it: the penalty needs no delay
    mains = [i for i, o in enumerate(revoked.outputs) if o.value_sat != ANCHOR_SAT]
    claims = {i: wait_for(f"Lightspeed's claim on output {i}", lambda i=i: net.chain.spender(revoked.txid_hex, i), 30)
              for i in mains}
    net.mine(1)
    by_txid = {c.txid: c for c in claims.values()}
    bob_outputs = {revoked.outputs.index(o) for o in revoked.outputs if o.value_sat in (200_000, 400_000)}
    penalty = {claims[i].txid for i in bob_outputs}
    assert len(penalty) == 1, "bob's to_local and the HTLC are taken by one penalty transaction"
    taken_sat = 0
    for claim in by_txid.values():
        assert all(txin.prevout.txid == revoked.txid for txin in claim.inputs) and len(claim.outputs) == 1
        claimed_sat = sum(revoked.outputs[txin.prevout.index].value_sat for txin in claim.inputs)
        assert 0 < claimed_sat - claim.outputs[0].value_sat < 5_000, "a claim's fee"
        taken_sat += claim.outputs[0].value_sat
    wait_for("Lightspeed's wallet to hold the whole channel", lambda: net.lightspeed.call("balance")["onchain_sat"]
             == ls_before + taken_sat)
    assert sum(revoked.outputs[i].value_sat for i in mains) - taken_sat < 10_000
    view = net.lightspeed.channel(b)
    assert (view["state"], view["close_type"], view["limbo_sat"]) == ("closed", "revoked", 0)
    # bob got nothing from the channel (what a CPFP of his through his anchor cost him is his own)
    assert net.bob.balance()["confirmed"] == bob_before + confirmed_anchor_change(net, net.bob, revoked)


# -- HTLCs in flight on chain -------------------------------------------------------------------------

def only_through(net: InteropNet, wallet: ElectrumWallet, sat: int, side: str) -> int:
    """An amount above ``sat`` that no other channel of ``wallet``'s with Lightspeed can carry from
    ``side`` ("lightspeed" or "electrum"): the payment then takes the channel the case opened."""
    key = "local_balance_msat" if side == "lightspeed" else "remote_balance_msat"
    others = [c[key] // 1000 for c in net.lightspeed.channels()
              if c["peer_id"] == wallet.node_id and c["state"] == "normal"]
    return max([sat, *(o + 50_000 for o in others)])


def ls_pays_in_background(pool: ThreadPoolExecutor, net: InteropNet, invoice: str) -> Future[dict[str, Any]]:
    """``lightspeed pay`` in a thread: it answers once the payment ends (on chain, here)."""
    def pay() -> dict[str, Any]:
        done = net.lightspeed.run("pay", invoice, "--timeout", "600", check=False, timeout=660)
        return dict(json.loads(done.stdout)) if done.returncode == 0 else {"status": "error", "error": done.stderr}
    return pool.submit(pay)


def claimed_from(commitment: Transaction, tx: Transaction) -> int:
    """What ``tx`` spends of ``commitment``'s outputs."""
    return sum(commitment.outputs[i.prevout.index].value_sat for i in tx.inputs if i.prevout.txid == commitment.txid)


def electrum_takes(net: InteropNet, commitment: Transaction, to_remote: int, claims: list[Transaction]) -> int:
    """What Electrum's wallet gets from Lightspeed's ``commitment``: its ``claims`` (their one output each)
    and its to_remote, its wallet's as it is under static_remotekey, a CSV-1 P2WSH it sweeps under anchors
    (alone or batched into a claim)."""
    txs = {c.txid: c for c in claims}
    if net.release.anchors:
        sweep = swept(net, commitment.txid_hex, to_remote) if not any(
            i.prevout.txid == commitment.txid and i.prevout.index == to_remote for c in claims for i in c.inputs) else None
        if sweep is not None:
            assert len(sweep.outputs) == 1 and claimed_from(commitment, sweep) - 5_000 < sweep.outputs[0].value_sat
            txs[sweep.txid] = sweep
        return sum(o.value_sat for tx in txs.values() for o in tx.outputs)
    return commitment.outputs[to_remote].value_sat + sum(o.value_sat for tx in txs.values() for o in tx.outputs)


def feerate_of(net: InteropNet, fee_sat: int, htlcs: int) -> int:
    """The feerate a commitment with ``htlcs`` HTLC outputs paying ``fee_sat`` (to the miner: its anchors are
    outputs) was built at (BOLT 3)."""
    found = [f for f in range(253, 100_000) if bolt3_fee(net, f, htlcs) == fee_sat]
    assert found, f"no feerate gives a fee of {fee_sat} sat"
    return found[0]


def test_htlcs_on_chain_after_lightspeed_force_close(net: InteropNet) -> None:
    """Lightspeed force closes with an HTLC in flight each way; each side claims the one it is paid with the
    preimage: bob straight from Lightspeed's commitment, Lightspeed through its HTLC-success transaction,
    whose output it sweeps after bob's to_self_delay, with its to_local.

    bob holds the HTLC to him (``enable_htlc_settle false``: he knows the preimage, does not fulfil);
    Lightspeed's hold invoice is settled only after the close, so its preimage is learned on a closed
    channel (the node must still claim the HTLC on chain: BOLT 5).
    """
    out_sat = only_through(net, net.bob, 150_000, "lightspeed")  # Lightspeed -> bob
    in_sat = only_through(net, net.bob, 120_000, "electrum")  # bob -> Lightspeed
    capacity = out_sat + in_sat + 400_000
    push = in_sat + 100_000
    b = open_from_lightspeed(net, net.bob, capacity, push_sat=push)
    settled(net, net.bob, b, push * 1000)
    net.bob.rpc("enable_htlc_settle", b=False)
    preimage, held = hold_invoice(net, in_sat * 1000, "settled after the close")
    with ThreadPoolExecutor(2) as pool:
        try:
            ls_paying = ls_pays_in_background(pool, net, net.bob.invoice(out_sat, "claimed on chain"))
            wait_for("the HTLC to bob", lambda: ls_view(net, b)[2] == 1, 60)
            bob_paying = paying_in_background(pool, net.bob, held)

            def both_committed() -> bool:
                el = net.bob.channel(b)
                return (ls_view(net, b)[2] == 2 and with_htlcs(ctx_of(net.bob, b), 2) is not None
                        and el["local_unsettled_sent"] == in_sat and el["remote_unsettled_sent"] == out_sat)

            wait_for("both HTLCs in both commitments", both_committed, 60)
            bob_ctx = ctx_of(net.bob, b)
            ls_before = net.lightspeed.call("balance")["onchain_sat"]
            bob_before = net.bob.balance()["confirmed"]
            closed = net.lightspeed.call("close", "--force", net.lightspeed.channel(b)["channel_id"])
            txid = closed["closing_txid"]
            wait_for("Lightspeed's commitment in the mempool", lambda: txid in net.chain.mempool(), 30)
            net.mine(1)
            commitment = tx_of(net, txid)
            fee = capacity - sum(o.value_sat for o in commitment.outputs)
            assert fee == capacity - sum(o.value_sat for o in bob_ctx.outputs)  # same feerate, same HTLCs
            feerate = feerate_of(net, fee, 2)
            to_bob, to_ls = output_paying(commitment, out_sat), output_paying(commitment, in_sat)
            to_remote = output_paying(commitment, push - in_sat)  # bob's balance, exactly
            # Lightspeed funded it: its to_local carries the fee and, under anchors, both anchors
            to_local = output_paying(commitment, capacity - push - out_sat - fee - len(anchor_indexes(commitment))
                                     * ANCHOR_SAT)

            # Lightspeed learns the preimage now; its HTLC-success goes out at the next block
            wait_for("the held payment to settle", lambda: net.lightspeed.run(
                "invoice", "settle", preimage.hex(), check=False).returncode == 0, 30)
            net.mine(1)
            success = swept(net, txid, to_ls, 30)
            assert preimage in success.inputs[0].witness
            # BOLT 3: the HTLC-success fee is 703 weight units at the commitment's feerate (0 with anchors)
            htlc_fee = 0 if net.release.anchors else 703 * feerate // 1000
            check_htlc_tx_shape(net, success, in_sat - htlc_fee)
            paid_in = bob_paying.result(timeout=120)

            # bob claims his HTLC from Lightspeed's commitment with the preimage: Lightspeed's payment succeeds
            bob_claim = swept(net, txid, to_bob, 60)
            # (its fee is Electrum's choice: 36,000 sat at 4.3.4's fixed regtest feerate)
            claimed = claimed_from(commitment, bob_claim)  # (4.8.1 may batch his to_remote into it)
            assert len(bob_claim.outputs) == 1 and claimed - 50_000 < bob_claim.outputs[0].value_sat < claimed
            paid_out = ls_paying.result(timeout=120)
        finally:
            net.bob.rpc("enable_htlc_settle", b=True)
    assert paid_out["status"] == "succeeded" and proves(paid_out["preimage"], paid_out["payment_hash"]), paid_out
    assert any(paid_out["preimage"] == item.hex() for txin in bob_claim.inputs for item in txin.witness)
    assert paid_in["success"] and paid_in["preimage"] == preimage.hex(), paid_in

    # Lightspeed's to_local and its HTLC-success output each wait bob's to_self_delay
    limbo = {s["label"]: s for s in net.lightspeed.channel(b)["limbo_sweeps"]}
    assert set(limbo) == {"to_local", f"htlc_success {to_ls} output"}, limbo
    last = max(s["maturity_height"] for s in limbo.values())
    net.mine(last - 1 - net.chain.height())
    sweeps = [swept(net, txid, to_local, 30), swept(net, success.txid_hex, 0, 30)]
    for sweep in sweeps:
        assert len(sweep.outputs) == 1
    assert sorted(s.outputs[0].value_sat for s in sweeps) == sorted(s["amount_sat"] for s in limbo.values())
    ls_got = sum(s.outputs[0].value_sat for s in sweeps)
    ls_got -= fee_inputs_cost(net, success)  # under anchors its wallet paid the HTLC-success's fee
    wait_for("Lightspeed's wallet to get both sweeps and its anchor", lambda: net.lightspeed.call("balance")[
        "onchain_sat"] == ls_before + lightspeed_anchor_alone(net, txid) + ls_got)
    bob_got = electrum_takes(net, commitment, to_remote, [bob_claim]) + confirmed_anchor_change(net, net.bob, commitment)
    wait_for("bob's wallet to get his balance and his HTLC", lambda: net.bob.balance()["confirmed"]
             == bob_before + bob_got)
    view = net.lightspeed.channel(b)
    assert (view["close_type"], view["limbo_sweeps"]) == ("local", [])


def test_htlcs_time_out_on_chain(net: InteropNet) -> None:
    """Nobody claims either HTLC: Lightspeed times out the one it offered through its HTLC-timeout
    transaction (and sweeps that after bob's delay), bob times out his straight from Lightspeed's commitment.

    bob holds the HTLC to him and is offline from before the close until Lightspeed's HTLC-timeout is
    confirmed (he knows the preimage: online, he would claim it); Lightspeed's hold invoice is never settled.
    """
    try:
        htlcs_time_out(net)
    finally:  # bob is stopped for a while: a failure there must not leave him down for the next case
        if not net.bob.running:
            net.bob.start()


def htlcs_time_out(net: InteropNet) -> None:
    out_sat = only_through(net, net.bob, 160_000, "lightspeed")  # Lightspeed -> bob, timed out by Lightspeed
    in_sat = only_through(net, net.bob, 110_000, "electrum")  # bob -> Lightspeed, timed out by bob
    capacity = out_sat + in_sat + 400_000
    push = in_sat + 100_000
    b = open_from_lightspeed(net, net.bob, capacity, push_sat=push)
    settled(net, net.bob, b, push * 1000)
    _, held = hold_invoice(net, in_sat * 1000, "never settled")
    bob_invoice = net.bob.invoice(out_sat, "timed out on chain")
    # Lightspeed's HTLC expires the payee's min_final_cltv_expiry (plus its margin) after the send
    cltv_out = net.chain.height() + decode(bob_invoice).min_final_cltv_expiry + FINAL_CLTV_MARGIN
    net.bob.rpc("enable_htlc_settle", b=False)
    with ThreadPoolExecutor(2) as pool:
        ls_paying = ls_pays_in_background(pool, net, bob_invoice)
        wait_for("the HTLC to bob", lambda: ls_view(net, b)[2] == 1, 60)
        bob_paying = paying_in_background(pool, net.bob, held)

        def both_committed() -> bool:
            el = net.bob.channel(b)
            return (ls_view(net, b)[2] == 2 and with_htlcs(ctx_of(net.bob, b), 2) is not None
                    and el["local_unsettled_sent"] == in_sat and el["remote_unsettled_sent"] == out_sat)

        wait_for("both HTLCs in both commitments", both_committed, 60)
        bob_before = net.bob.balance()["confirmed"]
        net.bob.stop()
        bob_paying.exception(timeout=60)  # bob's lnpay ended with his daemon
        ls_before = net.lightspeed.call("balance")["onchain_sat"]
        closed = net.lightspeed.call("close", "--force", net.lightspeed.channel(b)["channel_id"])
        txid = closed["closing_txid"]
        wait_for("Lightspeed's commitment in the mempool", lambda: txid in net.chain.mempool(), 30)
        net.mine(1)
        commitment = tx_of(net, txid)
        fee = capacity - sum(o.value_sat for o in commitment.outputs)
        feerate = feerate_of(net, fee, 2)
        to_bob, to_ls = output_paying(commitment, out_sat), output_paying(commitment, in_sat)
        to_remote = output_paying(commitment, push - in_sat)
        to_local = output_paying(commitment, capacity - push - out_sat - fee - len(anchor_indexes(commitment))
                                 * ANCHOR_SAT)

        # BIP 65/BOLT 3: the HTLC-timeout's nLockTime is the cltv_expiry; Lightspeed sends it once the tip is there
        net.mine(cltv_out - net.chain.height())
        timeout_tx = swept(net, txid, to_bob, 30)
        assert timeout_tx.locktime == cltv_out
        htlc_fee = 0 if net.release.anchors else 663 * feerate // 1000  # BOLT 3: HTLC-timeout weight 663
        check_htlc_tx_shape(net, timeout_tx, out_sat - htlc_fee)
        paid_out = ls_paying.result(timeout=120)
    # the attempt failed when its HTLC timed out on chain; the channel is gone, so no other route
    assert paid_out["status"] == "error" and "no route" in paid_out["error"], paid_out
    assert net.chain.spender(txid, to_ls) is None  # Lightspeed never learned that preimage: not its to take

    # the HTLC-timeout's output waits bob's to_self_delay; to_local matured long ago
    limbo = {s["label"]: s for s in net.lightspeed.channel(b)["limbo_sweeps"]}
    label = f"htlc_timeout {to_bob} output"
    assert set(limbo) <= {"to_local", label} and label in limbo, limbo
    net.mine(limbo[label]["maturity_height"] - 1 - net.chain.height())
    sweeps = [swept(net, txid, to_local, 30), swept(net, timeout_tx.txid_hex, 0, 30)]
    assert sweeps[1].outputs[0].value_sat == limbo[label]["amount_sat"]
    ls_got = sum(s.outputs[0].value_sat for s in sweeps) - fee_inputs_cost(net, timeout_tx)  # anchors: its fee
    wait_for("Lightspeed's wallet to get both sweeps and its anchor", lambda: net.lightspeed.call("balance")[
        "onchain_sat"] == ls_before + lightspeed_anchor_alone(net, txid) + ls_got)

    # bob comes back: his HTLC expired long ago, he takes it back from Lightspeed's commitment
    net.bob.start()
    refund = swept(net, txid, to_ls, 120)
    claimed = claimed_from(commitment, refund)  # (4.8.1 may batch his to_remote into it)
    assert len(refund.outputs) == 1 and claimed - 50_000 < refund.outputs[0].value_sat < claimed
    bob_got = electrum_takes(net, commitment, to_remote, [refund])
    wait_for("bob's wallet to get his balance and his refund", lambda: net.bob.balance()["confirmed"]
             == bob_before + bob_got, 60)
    view = net.lightspeed.channel(b)
    assert (view["close_type"], view["limbo_sweeps"]) == ("local", [])


def wallet_change(wallet: ElectrumWallet, net: InteropNet, txs: list[Transaction]) -> int:
    """What ``txs`` changed in ``wallet``: the outputs paying it less the coins of its they spend."""
    def mine(script: bytes) -> bool:
        return bool(wallet.rpc("ismine", address=script_to_address(script, REGTEST)))

    change = 0
    for tx in txs:
        change += sum(o.value_sat for o in tx.outputs if mine(o.script_pubkey))
        for txin in tx.inputs:
            spent = tx_of(net, txin.prevout.txid[::-1].hex()).outputs[txin.prevout.index]
            if mine(spent.script_pubkey):
                change -= spent.value_sat
    return change


def mined_at(net: InteropNet, txid: str) -> int:
    """The height of the block that holds ``txid``."""
    found = net.chain.transaction(txid)
    assert found is not None and found[1] >= 1, f"{txid} is not mined"
    return net.chain.height() - found[1] + 1


def spends_of(net: InteropNet, wallet: ElectrumWallet, root: Transaction, skip: set[bytes]) -> list[Transaction]:
    """Every transaction descending from ``root`` through outputs not paying ``wallet`` (its claims, their
    sweeps, its anchor children), the ones in ``skip`` (the other side's) left out."""
    found: dict[bytes, Transaction] = {}
    todo = [root]
    while todo:
        tx = todo.pop()
        for index, output in enumerate(tx.outputs):
            if wallet.rpc("ismine", address=script_to_address(output.script_pubkey, REGTEST)):
                continue
            child = net.chain.spender(tx.txid_hex, index)
            if child is not None and child.txid not in skip and child.txid not in found:
                found[child.txid] = child
                todo.append(child)
    return list(found.values())


def test_htlcs_on_chain_after_electrum_force_close(net: InteropNet) -> None:
    """bob's (Electrum's) commitment goes on chain with four HTLCs in flight, two each way:

    - ``claim_in`` (bob -> Lightspeed, hold invoice settled after the close): Lightspeed claims it straight
      from bob's commitment with the preimage (BOLT 5: no second stage on the remote commitment);
    - ``timeout_out`` (Lightspeed -> bob): bob is offline past its cltv_expiry; Lightspeed takes it back
      straight from bob's commitment, nLockTime the expiry;
    - ``success_out`` (Lightspeed -> bob, held by bob: ``enable_htlc_settle false``, later expiry): bob,
      back, claims it through his own HTLC-success, and Lightspeed's payment succeeds with the preimage it
      reads there;
    - ``timeout_in`` (bob -> Lightspeed, hold invoice never settled): bob times it out through his own
      HTLC-timeout.
    bob sweeps his to_local and both second-stage outputs after Lightspeed's to_self_delay. Every party's
    wallet to the satoshi.

    bob's force close is his latest commitment (``get_channel_ctx``) broadcast while his daemon is down:
    online, he would claim ``timeout_out`` with its preimage at once. Back up, he resolves it as his own.
    """
    try:
        electrum_commitment_htlcs(net)
    finally:  # bob is stopped for a while: a failure there must not leave him down for the next case
        if not net.bob.running:
            net.bob.start()
        with contextlib.suppress(Exception):
            net.bob.rpc("enable_htlc_settle", b=True)


def electrum_commitment_htlcs(net: InteropNet) -> None:
    timeout_out = only_through(net, net.bob, 170_000, "lightspeed")  # Lightspeed -> bob
    success_out = timeout_out + 11_000  # Lightspeed -> bob
    claim_in = only_through(net, net.bob, 130_000, "electrum")  # bob -> Lightspeed
    timeout_in = claim_in + 9_000  # bob -> Lightspeed
    capacity = timeout_out + success_out + claim_in + timeout_in + 400_000
    push = claim_in + timeout_in + 100_000
    b = open_from_lightspeed(net, net.bob, capacity, push_sat=push)
    settled(net, net.bob, b, push * 1000)
    net.bob.rpc("enable_htlc_settle", b=False)
    claim_preimage, claim_invoice = hold_invoice(net, claim_in * 1000, "claimed from bob's commitment")
    _, never_invoice = hold_invoice(net, timeout_in * 1000, "timed out by bob")
    timeout_invoice = net.bob.invoice(timeout_out, "timed out by lightspeed")
    success_invoice = net.bob.invoice(success_out, "claimed by bob's HTLC-success")
    with ThreadPoolExecutor(4) as pool:
        cltv_timeout = net.chain.height() + decode(timeout_invoice).min_final_cltv_expiry + FINAL_CLTV_MARGIN
        paying_timeout = ls_pays_in_background(pool, net, timeout_invoice)
        wait_for("the first HTLC to bob", lambda: ls_view(net, b)[2] == 1, 60)
        # success_out expires 8 blocks after timeout_out: bob is back before it. (Electrum fails a held HTLC
        # once fewer than 144 blocks are left: 147 + Lightspeed's 12 blocks of margin leave 15 to mine.)
        net.mine(8)
        paying_success = ls_pays_in_background(pool, net, success_invoice)
        wait_for("the second HTLC to bob", lambda: ls_view(net, b)[2] == 2, 60)
        bob_paid_at = net.chain.height()
        bob_paying = [paying_in_background(pool, net.bob, claim_invoice),
                      paying_in_background(pool, net.bob, never_invoice)]

        def all_committed() -> bool:
            el = net.bob.channel(b)
            return (ls_view(net, b)[2] == 4 and with_htlcs(ctx_of(net.bob, b), 4) is not None
                    and el["local_unsettled_sent"] == claim_in + timeout_in
                    and el["remote_unsettled_sent"] == timeout_out + success_out)

        wait_for("the four HTLCs in both commitments", all_committed, 90)
        commitment = ctx_of(net.bob, b)  # bob's latest commitment, signed by Lightspeed
        bob_before = net.bob.balance()["confirmed"]
        net.bob.stop()
        for paying in bob_paying:
            paying.exception(timeout=60)  # bob's lnpay ended with his daemon
        ls_before = net.lightspeed.call("balance")["onchain_sat"]
        net.alice.rpc("broadcast", tx=commitment.serialize().hex())
        txid = commitment.txid_hex
        wait_for("bob's commitment in the mempool", lambda: txid in net.chain.mempool(), 30)
        net.mine(1)
        # bob's commitment: Lightspeed funded the channel, so bob's to_local is his balance exactly, and
        # Lightspeed's to_remote carries the fee (and, under anchors, both anchors)
        fee = capacity - sum(o.value_sat for o in commitment.outputs)
        feerate = feerate_of(net, fee, 4)
        anchors = anchor_indexes(commitment)
        assert len(anchors) == (2 if net.release.anchors else 0)
        to_local = output_paying(commitment, push - claim_in - timeout_in)
        to_remote_sat = capacity - push - timeout_out - success_out - fee - len(anchors) * ANCHOR_SAT
        to_remote = output_paying(commitment, to_remote_sat)
        htlc = {name: output_paying(commitment, sat) for name, sat in (
            ("claim_in", claim_in), ("timeout_in", timeout_in), ("timeout_out", timeout_out),
            ("success_out", success_out))}

        # Lightspeed learns claim_in's preimage now and spends that output of bob's commitment with it at
        # once, before another block (tests/test_e12htlc_settle_claims_at_once.py)
        tip = net.chain.height()
        wait_for("the held payment to settle", lambda: net.lightspeed.run(
            "invoice", "settle", claim_preimage.hex(), check=False).returncode == 0, 30)
        wait_for("Lightspeed's claim of claim_in", lambda: net.chain.spender(txid, htlc["claim_in"]), 30)
        assert net.chain.height() == tip, "claimed at the next block, not at once"
        ls_claim = swept(net, txid, htlc["claim_in"], 30)
        assert [i.prevout.txid for i in ls_claim.inputs] == [commitment.txid] and len(ls_claim.outputs) == 1
        assert claim_preimage in ls_claim.inputs[0].witness
        assert 0 < claim_in - ls_claim.outputs[0].value_sat < 5_000, "the claim's fee"
        # Lightspeed's to_remote: it sweeps it to its wallet (static_remotekey: a P2WPKH of its payment
        # basepoint, at once; anchors: a CSV-1 P2WSH, one block after the commitment)
        assert len(commitment.outputs[to_remote].script_pubkey) == (34 if net.release.anchors else 22)
        ls_to_remote = swept(net, txid, to_remote, 30)
        anchor = ANCHOR_SAT if net.release.anchors else 0  # Lightspeed's anchor, batched into this sweep
        assert len(ls_to_remote.outputs) == 1 and 0 < to_remote_sat + anchor - ls_to_remote.outputs[0].value_sat < 5_000

        # timeout_out: BIP 65, the claim's nLockTime is the HTLC's cltv_expiry; sent once the tip is there
        assert net.chain.spender(txid, htlc["timeout_out"]) is None
        net.mine(cltv_timeout - net.chain.height())
        ls_timeout = swept(net, txid, htlc["timeout_out"], 30)
        assert ls_timeout.locktime == cltv_timeout and len(ls_timeout.outputs) == 1
        assert 0 < timeout_out - ls_timeout.outputs[0].value_sat < 5_000, "the claim's fee"
        paid_timeout = paying_timeout.result(timeout=120)
        assert paid_timeout["status"] == "error", paid_timeout
        ls_got = ls_claim.outputs[0].value_sat + ls_timeout.outputs[0].value_sat + ls_to_remote.outputs[0].value_sat
        wait_for("Lightspeed's wallet to get its claims", lambda: net.lightspeed.call("balance")["onchain_sat"]
                 == ls_before + ls_got)

        # bob comes back: he claims success_out with its preimage through his own HTLC-success
        # (before Lightspeed may time it out) and times out timeout_in through his own HTLC-timeout
        net.bob.start()
        bob_success = swept(net, txid, htlc["success_out"], 120)
        paid_success = paying_success.result(timeout=120)
    assert paid_success["status"] == "succeeded" and proves(paid_success["preimage"], paid_success["payment_hash"])
    assert bytes.fromhex(paid_success["preimage"]) in next(
        i.witness for i in bob_success.inputs if i.prevout.txid == commitment.txid)
    bob_timeout: Transaction = wait_for("bob's HTLC-timeout", lambda: net.chain.spender(txid, htlc["timeout_in"])
                                        or (net.mine(5) and None), 120, interval=1)
    net.mine(1)
    # BOLT 3 second stage: one HTLC output of bob's commitment per input, paired with the output at the same
    # index (SIGHASH_SINGLE under anchors), which pays the HTLC less 703 / 663 weight at the commitment's
    # feerate (zero fee under anchors: bob's own inputs, if any, pay it)
    second_stage: dict[str, tuple[Transaction, int]] = {}
    for name, weight in (("success_out", 703), ("timeout_in", 663)):
        tx = bob_success if name == "success_out" else bob_timeout
        n = next(n for n, i in enumerate(tx.inputs) if i.prevout == OutPoint(commitment.txid, htlc[name]))
        htlc_fee = 0 if net.release.anchors else weight * feerate // 1000
        assert tx.outputs[n].value_sat == commitment.outputs[htlc[name]].value_sat - htlc_fee, name
        assert len(tx.outputs[n].script_pubkey) == 34  # P2WSH: revocation or bob's CSV delay
        assert all(i.prevout.txid != commitment.txid or i.prevout.index in htlc.values() for i in tx.inputs)
        second_stage[name] = tx, n
    # BIP 65: the HTLC-timeout waits the HTLC's cltv_expiry, set after bob sent it
    assert bob_paid_at < bob_timeout.locktime < mined_at(net, bob_timeout.txid_hex)

    # bob's to_local and both second-stage outputs wait Lightspeed's to_self_delay (BIP 68), then he sweeps
    parents = [(txid, to_local)] + [(tx.txid_hex, n) for tx, n in second_stage.values()]
    assert len(set(parents)) == 3
    net.mine(max(0, max(mined_at(net, t) for t, _ in parents) + LIGHTSPEED_TO_SELF_DELAY - 1 - net.chain.height()))
    sweeps: dict[bytes, Transaction] = {}
    for parent, n in parents:
        sweep = wait_for(f"bob's sweep of {parent}:{n}", lambda p=parent, n=n: net.chain.spender(p, n), 60)
        sweeps[sweep.txid] = sweep
    net.mine(1)
    for (parent, n) in parents:
        sweep = net.chain.spender(parent, n)
        assert mined_at(net, sweep.txid_hex) - mined_at(net, parent) >= LIGHTSPEED_TO_SELF_DELAY, (
            "swept before the CSV delay")
        assert next(i.sequence for i in sweep.inputs if i.prevout.txid[::-1].hex() == parent
                    and i.prevout.index == n) == LIGHTSPEED_TO_SELF_DELAY
    bob_txs = spends_of(net, net.bob, commitment, {ls_claim.txid, ls_timeout.txid, ls_to_remote.txid})
    assert {bob_success.txid, bob_timeout.txid} | set(sweeps) <= {t.txid for t in bob_txs}
    for tx in bob_txs:
        assert net.chain.transaction(tx.txid_hex)[1] >= 1, f"bob's {tx.txid_hex} is not mined"
    bob_got = wallet_change(net.bob, net, bob_txs)
    # what bob's wallet got: his balance and the two HTLCs less the fees of his own transactions
    bob_fees = push - claim_in - timeout_in + success_out + timeout_in - bob_got
    assert 0 < bob_fees < 50_000 * len(bob_txs), bob_fees
    wait_for("bob's wallet to get his balance and both HTLCs", lambda: net.bob.balance()["confirmed"]
             == bob_before + bob_got, 60)
    assert net.lightspeed.call("balance")["onchain_sat"] == ls_before + ls_got
    view = net.lightspeed.channel(b)
    assert (view["state"], view["close_type"], view["limbo_sweeps"]) == ("closed", "remote", []), view
