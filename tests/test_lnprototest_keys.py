"""Node hooks for conformance suites: pluggable channel keys, a wallet key given by the test,
an invoice with a given preimage. Fixed keys and imported keys are refused off regtest."""

from __future__ import annotations

import asyncio
import hashlib

import coincurve
import pytest

from lightspeed.bitcoin.network import BITCOIN, REGTEST, SIGNET, TESTNET
from lightspeed.bitcoin.script import p2wpkh_script
from lightspeed.bitcoin.tx import TxOut
from lightspeed.chain import RegtestChain
from lightspeed.chain.wallet import Wallet
from lightspeed.channel.state import LocalSecrets
from lightspeed.errors import UsageError
from lightspeed.node.keys import (
    DerivedChannelKeys,
    FixedChannelKeys,
    channel_seed,
    derive_channel_secrets,
)
from lightspeed.node.node import Node


def _key(n: int) -> bytes:
    return n.to_bytes(32, "big")


SUITE_SECRETS = LocalSecrets(_key(0x10), _key(0x11), _key(0x12), _key(0x13), _key(0x14), b"\xff" * 32)


def _point(secret: bytes) -> bytes:
    return coincurve.PublicKey.from_secret(secret).format()


def _bolt3_per_commitment_point(seed: bytes, commitment_number: int) -> bytes:
    """BOLT 3 generate_from_seed at index 2^48 - 1 - n, written out here independently of the package."""
    index = (1 << 48) - 1 - commitment_number
    value = bytearray(seed)
    for bit in range(47, -1, -1):
        if index >> bit & 1:
            value[bit // 8] ^= 1 << (bit % 8)
            value = bytearray(hashlib.sha256(value).digest())
    return _point(bytes(value))


@pytest.mark.parametrize("network", [BITCOIN, TESTNET, SIGNET])
def test_fixed_channel_keys_are_refused_off_regtest(network: object) -> None:
    chain = RegtestChain(":memory:")
    with pytest.raises(UsageError, match="regtest only"):
        Node(_key(1), chain, b"a wallet seed of 16+ bytes", network=network,  # type: ignore[arg-type]
             channel_keys=FixedChannelKeys(SUITE_SECRETS))


def test_fixed_channel_keys_must_be_valid_keys() -> None:
    with pytest.raises(UsageError, match="htlc secret"):
        FixedChannelKeys(LocalSecrets(_key(0x10), _key(0x11), _key(0x12), _key(0x13), bytes(32), b"\xff" * 32))
    with pytest.raises(UsageError, match="per_commitment_seed"):
        FixedChannelKeys(LocalSecrets(_key(0x10), _key(0x11), _key(0x12), _key(0x13), _key(0x14), b"\xff" * 31))


def test_the_default_provider_derives_what_the_node_always_derived() -> None:
    """Stored channels keep their keys: the default provider is the derivation of before."""
    privkey = _key(7)
    provider = DerivedChannelKeys.from_node_key(privkey)
    assert provider.channel_secrets(3) == derive_channel_secrets(channel_seed(privkey), 3)
    assert provider.channel_secrets(3) != provider.channel_secrets(4)
    node = Node(privkey, RegtestChain(":memory:"), b"a wallet seed of 16+ bytes", network=BITCOIN)
    assert node.channel_keys == provider  # allowed on every network


@pytest.mark.slow
def test_a_channel_uses_the_secrets_of_the_fixed_provider() -> None:
    """Bob's channel keys are the fixed ones: Alice sees his basepoints, funding key and
    per-commitment points as BOLT 3 computes them from those secrets and the seed."""
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice = Node(_key(0xA1), chain, b"alice wallet seed 1234")
        bob = Node(_key(0xB1), chain, b"bob wallet seed 123456", channel_keys=FixedChannelKeys(SUITE_SECRETS))
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        await alice.connect("127.0.0.1", await bob.start(), bob.node_id)

        async def miner() -> None:
            while True:
                await asyncio.sleep(0.05)
                chain.mine(1)

        mining = asyncio.create_task(miner())
        try:
            cid = await asyncio.wait_for(alice.open_channel(bob.node_id, 1_000_000), 30)
        finally:
            mining.cancel()
        theirs = alice.channels[cid].config.remote_basepoints
        assert theirs.funding_pubkey == _point(_key(0x10))
        assert (theirs.revocation_basepoint, theirs.payment_basepoint, theirs.delayed_payment_basepoint,
                theirs.htlc_basepoint) == tuple(_point(_key(n)) for n in (0x11, 0x12, 0x13, 0x14))
        points = alice.channels[cid].remote_points
        assert points[0] == _bolt3_per_commitment_point(b"\xff" * 32, 0)
        assert points[1] == _bolt3_per_commitment_point(b"\xff" * 32, 1)
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_a_regtest_wallet_spends_an_imported_key() -> None:
    chain = RegtestChain(":memory:")
    wallet = Wallet(b"a wallet seed of 16+ bytes", chain, REGTEST)
    privkey = _key(0x76EDF0)
    key = wallet.import_key(privkey)
    assert key.script_pubkey == p2wpkh_script(_point(privkey))
    chain.fund(key.script_pubkey, 1_000_000)
    assert wallet.balance_sat() == 1_000_000
    assert wallet.new_key().index == 0  # the seed's keys are unaffected
    tx = wallet.create_transaction([TxOut(500_000, p2wpkh_script(_point(_key(9))))])
    chain.broadcast(tx)  # the chain checks the imported key's signature
    assert chain.unspent([key.script_pubkey]) == []  # the imported coin is what was spent
    change = [o for o in tx.outputs if o.script_pubkey != p2wpkh_script(_point(_key(9)))]
    assert len(change) == 1 and 0 < change[0].value_sat < 500_000
    assert wallet.balance_sat() == change[0].value_sat  # the change went to a key of the seed


@pytest.mark.parametrize("network", [BITCOIN, TESTNET, SIGNET])
def test_only_a_regtest_wallet_imports_a_key(network: object) -> None:
    wallet = Wallet(b"a wallet seed of 16+ bytes", RegtestChain(":memory:"), network)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="only a regtest wallet"):
        wallet.import_key(_key(5))


def test_an_imported_key_must_be_a_valid_key() -> None:
    wallet = Wallet(b"a wallet seed of 16+ bytes", RegtestChain(":memory:"), REGTEST)
    with pytest.raises(UsageError, match="privkey"):
        wallet.import_key(bytes(32))
    with pytest.raises(UsageError, match="privkey"):
        wallet.import_key(_key(5)[1:])


def test_an_invoice_with_a_given_preimage() -> None:
    node = Node(_key(3), RegtestChain(":memory:"), b"a wallet seed of 16+ bytes")
    preimage = bytes(range(32))
    invoice = node.create_invoice(1000, "given preimage", preimage=preimage)
    assert invoice.payment_hash == hashlib.sha256(preimage).digest()
    assert node.store.invoice(invoice.payment_hash).preimage == preimage  # type: ignore[union-attr]
    assert node.create_invoice(1000, "random").payment_hash != invoice.payment_hash
    with pytest.raises(UsageError, match="preimage"):
        node.create_invoice(1000, "short", preimage=bytes(31))
