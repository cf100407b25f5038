"""lnprototest's runner for Lightspeed: a thin adapter between the suite and a real node.

Run the suite with ``pytest TESTS --runner=lightspeed.testing.lnprototest.Runner`` in a
virtualenv where lnprototest is installed beside lightspeed (docs/lnprototest.md;
lnprototest is not a dependency of the package, and only this module imports it).

What the adapter does, and nothing more (it holds no protocol logic and never answers in
the node's place):

* starts a real :class:`~lightspeed.node.Node` (in this process, on a loop of its own thread:
  :class:`~lightspeed.testing.harness.NodeThread`) with the keys the suite computes our
  signatures from: node key ``01``, and for every channel funding key ``10``, basepoint
  secrets ``11``-``14`` and shachain seed ``FF``x32 (:class:`~lightspeed.node.keys.FixedChannelKeys`,
  regtest only); its wallet holds the suite's test outputs ``utxo(0..4)``;
* builds the suite's chain on the embedded regtest chain: Bitcoin Core's regtest genesis,
  the suite's own block 1 (submitted as is: its coinbase pays the suite's ``tx_spendable``),
  then 100 blocks; ``add_blocks``, ``trim_blocks`` and ``expect_tx`` work on that chain;
* connects to the node over real BOLT 8 TCP from each test key (pyln-proto's Noise), passes
  the suite's messages to the node and the node's messages back (a reader thread per
  connection, so a slow step never loses a message);
* asks the node to fund a channel, make an invoice with a given preimage, offer an HTLC or
  close a channel, through the node's public API;
* answers ``has_option`` and ``runner_features`` from the feature bits the node runs with.

Node settings the suite expects (implementation choices, not protocol rules) are set on
the node here, never special-cased in it: see :data:`NODE_SETTINGS`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import shutil
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import lnprototest
import pyln.proto.wire
from lnprototest import Conn, Event, EventError, KeySet, MustNotMsg, SpecFileError
from lnprototest.utils.bitcoin_utils import utxo

from lightspeed.bitcoin.network import REGTEST
from lightspeed.bitcoin.tx import Transaction
from lightspeed.chain.regtest import RegtestChain
from lightspeed.channel.state import LocalSecrets
from lightspeed.codec.features import FEATURES, Features
from lightspeed.errors import LightspeedError
from lightspeed.node.keys import FixedChannelKeys
from lightspeed.node.node import Node
from lightspeed.node.peer import DEFAULT_FEATURES
from lightspeed.node.settings import ChannelSettings
from lightspeed.routing.pathfind import Route, RouteHop
from lightspeed.testing.harness import NodeThread

TIMEOUT_S = float(os.environ.get("LIGHTSPEED_LNPROTOTEST_TIMEOUT", "30"))
NODE_PRIVKEY = bytes(31) + b"\x01"
FUNDING_PRIVKEY = bytes(31) + b"\x10"
BASEPOINT_SECRETS = tuple(bytes(31) + bytes([n]) for n in (0x11, 0x12, 0x13, 0x14))
SHACHAIN_SEED = b"\xff" * 32
# The suite's commitments assume both dust limits are 546 (Commit(local_dust_limit=546, ...)),
# its accept_channel checks a 1% reserve (9,998 sat of 999,800), and lnprototest.Runner asks
# for minimum_depth 3. Our defaults today, set here so that a change of default breaks nothing.
SUITE_CHANNEL_SETTINGS = ChannelSettings(dust_limit_sat=546, reserve_ppm=10_000, minimum_depth=3)
WALLET_UTXOS = range(5)  # utxo(0..4) are the node's; 5 and 6 are the suite's own
WARNING_TYPE, ERROR_TYPE, PING_TYPE = 1, 17, 18
# What the suite's ExpectMsg skips by default (ExpectMsg.ignore_gossip_queries): not answers.
GOSSIP_QUERY_TYPES = frozenset((261, 263, 265))  # query_short_channel_ids, query_channel_range, gossip_timestamp_filter

# The suite's block 1, as lnprototest.backend.bitcoind submits it: on the regtest genesis, its
# coinbase paying the key of cUB4V7VCk6mX32981TWviQVLkj3pa2zBcXrjMZ9QwaZB5Kojhp59, which
# tx_spendable (lnprototest.utils.bitcoin_utils) spends into the test outputs utxo(0..6).
BLOCK_1 = bytes.fromhex(
    "0000002006226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f84591a56720aabc8023cecf71801c5e0f9"
    "d049d0c550ab42412ad12a67d89f3a3dbb6c60ffff7f200400000001020000000001010000000000000000000000000000000000000000"
    "000000000000000000000000ffffffff03510101ffffffff0200f2052a0100000016001419f5016f07fe815f611df3a2a0802dbd74e6"
    "34c40000000000000000266a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf90120000000"
    "000000000000000000000000000000000000000000000000000000000000000000")

log = logging.getLogger(__name__)


def _suite_keys() -> FixedChannelKeys:
    revocation, payment, delayed, htlc = BASEPOINT_SECRETS
    return FixedChannelKeys(LocalSecrets(FUNDING_PRIVKEY, revocation, payment, delayed, htlc, SHACHAIN_SEED))


class LightspeedConn(Conn):  # type: ignore[misc]  # lnprototest has no type information
    """One BOLT 8 connection from a test key to the node, with a reader thread.

    The reader queues every message the node sends, then ``None`` once the connection
    ends; :meth:`next_message` tells a message, the end (``None``) and a timeout apart.
    """

    def __init__(self, connprivkey: str, port: int, node_id: bytes) -> None:
        super().__init__(connprivkey)
        self.connection = pyln.proto.wire.connect(
            pyln.proto.wire.PrivateKey(bytes.fromhex(self.connprivkey.to_hex())),
            pyln.proto.wire.PublicKey(node_id), "127.0.0.1", port)
        self._inbox: queue.Queue[bytes | None] = queue.Queue()
        self.ended = False
        self._reader = threading.Thread(target=self._read, name=f"lnprototest-conn-{connprivkey}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                self._inbox.put(self.connection.read_message())
        except (OSError, ValueError):  # EOF or reset: pyln raises ValueError on a short read
            pass
        finally:
            self._inbox.put(None)

    def next_message(self, timeout: float) -> bytes | None:
        """The next message from the node; None once the connection has ended; TimeoutError if none came."""
        if self.ended:
            return None
        try:
            message = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        if message is None:
            self.ended = True
        return message

    def send(self, message: bytes) -> None:
        self.connection.send_message(message)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.connection.close()


def _message_type(message: bytes) -> int:
    return int(struct.unpack(">H", message[:2])[0])


def _feature_name(optname: str) -> str | None:
    """lnprototest's option name as the BOLT 9 name we know it by (``option_gossip_queries`` -> ``gossip_queries``)."""
    if optname in FEATURES:
        return optname
    if optname.startswith("option_") and optname[len("option_"):] in FEATURES:
        return optname[len("option_"):]
    return None


class Runner(lnprototest.Runner):  # type: ignore[misc]  # lnprototest has no type information
    """lnprototest's Runner for a Lightspeed node (see the module docstring)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.features: Features = DEFAULT_FEATURES  # the bits the node runs with: options answer from these
        for flag in config.getoption("runner_args") or []:
            self.add_startup_flag(flag)
        self._thread: NodeThread | None = None
        self._chain: RegtestChain | None = None
        self._starts = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._starts += 1
        path = os.path.join(self.directory, f"chain-{self._starts}.sqlite")
        thread = NodeThread(f"lightspeed-lnprototest-{self._starts}")
        self._thread = thread
        chain = thread.call(lambda: self._suite_chain(path))
        self._chain = chain

        def make() -> Node:
            node = Node(privkey=NODE_PRIVKEY, chain=chain, wallet_seed=b"lnprototest wallet seed",
                        network=REGTEST, announce_channels=True, features=self.features,
                        channel_keys=_suite_keys(), channel_settings=SUITE_CHANNEL_SETTINGS)
            for index in WALLET_UTXOS:
                node.wallet.import_key(bytes.fromhex(utxo(index)[3]))
            return node

        thread.start(make)
        log.debug("lightspeed node %s listening on port %d", thread.node.node_id.hex(), thread.port)

    @staticmethod
    def _suite_chain(path: str) -> RegtestChain:
        """Genesis, the suite's block 1, then 100 blocks: height 101, as the suite expects."""
        chain = RegtestChain(path)
        chain.submit_block(BLOCK_1)
        chain.mine(100)
        return chain

    def stop(self, print_logs: bool = False) -> None:
        for conn in list(self.conns.values()):
            conn.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            failures = thread.failures
            thread.close()
            for what, exc in failures:
                log.error("%s failed: %s", what, exc)
        if self._chain is not None:
            self._chain.close()
            self._chain = None

    def restart(self) -> None:
        self.stop()
        super().restart()
        self.start()

    def teardown(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def thread(self) -> NodeThread:
        if self._thread is None:
            raise RuntimeError("the runner is not started")
        return self._thread

    @property
    def node(self) -> Node:
        return self.thread.node

    @property
    def chain(self) -> RegtestChain:
        if self._chain is None:
            raise RuntimeError("the runner is not started")
        return self._chain

    # -- keys and options --------------------------------------------------------------------

    def get_keyset(self) -> KeySet:
        revocation, payment, delayed, htlc = (s.hex() for s in BASEPOINT_SECRETS)
        return KeySet(revocation_base_secret=revocation, payment_base_secret=payment,
                      delayed_payment_base_secret=delayed, htlc_base_secret=htlc, shachain_seed=SHACHAIN_SEED.hex())

    def get_node_privkey(self) -> str:
        return NODE_PRIVKEY.hex()

    def get_node_bitcoinkey(self) -> str:
        return FUNDING_PRIVKEY.hex()

    def has_option(self, optname: str) -> str | None:
        """'even' (we require it), 'odd' (we support it) or None, from the node's feature bits."""
        if optname == "supports_open_accept_channel_type":  # not a feature bit: channel_type in open/accept
            return "true" if self.features.supports("option_channel_type") else None
        name = _feature_name(optname)
        if name is None or not self.features.supports(name):
            return None
        return "even" if self.features.requires(name) else "odd"

    def runner_features(self, additional_features: list[int] | None = None, globals: bool = False) -> str:
        """The features the suite's peer sends: what the node requires, plus the test's own bits.

        A test bit overrides ours of the same pair (a test offering bit 13 offers
        option_static_remotekey as optional, whatever we require). ``globalfeatures`` carry
        only the test's bits: BOLT 1 combines the two fields, so ours need not be there too.
        """
        extra = set(additional_features or ())
        bits = extra if globals else extra | {b for b in self.features.bits if b % 2 == 0 and b ^ 1 not in extra}
        return lnprototest.bitfield(*sorted(bits)) if bits else ""

    def add_startup_flag(self, flag: str) -> None:
        raise SpecFileError(None, f"the Lightspeed runner takes no startup flag ({flag!r}): it sets the node's "
                                  "options itself")

    # -- connections -------------------------------------------------------------------------

    def connect(self, event: Event, connprivkey: str) -> None:
        self.add_conn(LightspeedConn(connprivkey, self.thread.port, self.node.node_id))

    def recv(self, event: Event, conn: Conn, outbuf: bytes) -> None:
        """The suite's message to the node."""
        try:
            conn.send(outbuf)
        except OSError as exc:
            try:
                last = conn.next_message(1.0)
            except TimeoutError:
                last = None
            detail = f", after sending {last.hex()}" if last else ""
            raise EventError(event, f"the node closed the connection ({exc}){detail}") from None

    def get_output_message(self, conn: Conn, event: Event) -> bytes | None:
        """The node's next message; None if the connection ended or nothing came within the timeout."""
        try:
            return conn.next_message(TIMEOUT_S)  # type: ignore[no-any-return]
        except TimeoutError:
            log.error("no message from the node within %s s", TIMEOUT_S)
            return None

    def check_error(self, event: Event, conn: Conn) -> str | None:
        """The node's answer (hex): its next message, or None if it closed the connection.

        Skipped on the way, as the suite's ExpectMsg skips them by default: gossip queries
        (BOLT 7: a node sends gossip_timestamp_filter to every peer it connects to) and pings
        (answered). A ``warning`` is skipped too, and logged: it is not an error (BOLT 1: it
        fails no channel), and BOLT 1's "MUST close the connection" lets a node say why before
        closing. A connection that neither answers nor closes within the timeout fails the
        event, so an expected disconnection is never taken from a node that stays silent.
        """
        super().check_error(event, conn)
        while True:
            try:
                message = conn.next_message(TIMEOUT_S)
            except TimeoutError:
                raise EventError(event, f"the node neither sent an error nor closed the connection "
                                        f"within {TIMEOUT_S} s") from None
            if message is None:
                return None
            assert isinstance(message, bytes)
            kind = _message_type(message)
            if kind == WARNING_TYPE:
                log.info("warning from the node: %s", message.hex())
            elif kind == PING_TYPE:
                num_pong_bytes = int.from_bytes(message[2:4], "big")
                if num_pong_bytes < 65532:  # BOLT 1
                    conn.send(struct.pack(">HH", 19, num_pong_bytes) + bytes(num_pong_bytes))
            elif kind not in GOSSIP_QUERY_TYPES:
                return message.hex()

    def check_final_error(self, event: Event, conn: Conn, expected: bool, must_not_events: list[MustNotMsg]) -> None:
        """At the end of a connection: no ``error``, and none of the messages a test banned.

        A frame with a bad MAC makes the node hang up once it has handled everything before it
        (BOLT 8: nothing after a bad MAC can be read), so every message it sent is seen here.
        """
        if not expected:
            with contextlib.suppress(OSError):
                conn.connection.connection.send(bytes(18))
            while True:
                try:
                    message = conn.next_message(TIMEOUT_S)
                except TimeoutError:
                    raise EventError(event, "the node did not close the connection after a frame "
                                            "with a bad MAC") from None
                if message is None:
                    break
                for banned in must_not_events:
                    if banned.matches(message):
                        raise EventError(event, f"got msg banned by {banned}: {message.hex()}")
                if _message_type(message) == ERROR_TYPE:
                    raise EventError(event, f"got error msg: {message.hex()}")
        conn.close()

    # -- chain -------------------------------------------------------------------------------

    def getblockheight(self) -> int:
        return self.thread.call(lambda: self.chain.tip()[0])

    def trim_blocks(self, newheight: int) -> None:
        self.thread.call(lambda: self.chain.trim_blocks(newheight))

    def add_blocks(self, event: Event, txs: list[str], n: int) -> None:
        def add() -> None:
            for raw in txs:
                try:
                    self.chain.broadcast(Transaction.parse(bytes.fromhex(raw)))
                except LightspeedError as exc:
                    raise EventError(event, f"the chain refused transaction {raw}: {exc}") from None
            self.chain.mine(n)
        self.thread.call(add)

    def expect_tx(self, event: Event, txid: str) -> None:
        """``txid`` (internal byte order, as a message carries it) reaches the mempool within the timeout."""
        wanted = bytes.fromhex(txid)
        self._wait_for(event, lambda: wanted in self.chain.mempool(), f"the node to broadcast {wanted[::-1].hex()}")

    # -- asking the node ---------------------------------------------------------------------

    def fundchannel(self, event: Event, conn: Conn, amount: int, feerate: int = 253,
                    expect_fail: bool = False) -> None:
        """Open a channel of ``amount`` sat to the test's peer; returns at once (it ends when ready).

        ``feerate`` is ignored: the node funds at the chain's estimate and picks its own
        commitment feerate (the suite reads both from the messages).
        """
        node_id = conn.pubkey.format()
        thread = self.thread
        # The suite's init may still be on its way: the node opens only to a peer it has finished
        # the init exchange with, as any caller connects before opening.
        self._wait_for(event, lambda: node_id in thread.node.peer_ids(), f"the node to be connected to {conn}")
        thread.submit(f"fundchannel to {conn} for {amount} sat",
                      thread.node.open_channel(node_id, amount) if not expect_fail
                      else _ignore_failure(thread.node.open_channel(node_id, amount)))

    def _wait_for(self, event: Event, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition`` on the node's loop until true; EventError after the timeout."""
        deadline = time.monotonic() + TIMEOUT_S
        while not self.thread.call(condition):
            if time.monotonic() > deadline:
                raise EventError(event, f"timed out after {TIMEOUT_S} s waiting for {what}")
            time.sleep(0.02)

    def invoice(self, event: Event, amount: int, preimage: str) -> None:
        self.thread.call(lambda: self.node.create_invoice(amount, f"invoice from {event}",
                                                          preimage=bytes.fromhex(preimage)))

    def addhtlc(self, event: Event, conn: Conn, amount: int, preimage: str) -> None:
        """Offer the test's peer an HTLC of ``amount`` msat for sha256(``preimage``) over our channel with it."""
        peer_id = conn.pubkey.format()

        def route() -> Route:
            for cid in self.node.channels:
                scid = self.node.short_channel_id(cid)
                if self.node.channel_peer_id(cid) == peer_id and scid is not None:
                    return Route((RouteHop(scid, peer_id, amount, 0, 0),))
            raise EventError(event, f"no channel with {conn} to offer an HTLC on")

        payment_hash = hashlib.sha256(bytes.fromhex(preimage)).digest()
        self.thread.submit(f"addhtlc to {conn}",
                           self.node.send_to_route(self.thread.call(route), payment_hash, None))

    def close_channel(self, channel_id: str) -> None:
        """Mutual close of a channel named by short channel id (``BxTxO``), channel id or peer id."""
        def find() -> bytes:
            for cid in self.node.channels:
                scid = self.node.short_channel_id(cid)
                names = {cid.hex(), (self.node.channel_peer_id(cid) or b"").hex()}
                if scid is not None:
                    names.add(f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}")
                if channel_id in names:
                    return cid
            raise SpecFileError(None, f"no channel {channel_id}")

        cid = self.thread.call(find)
        self.thread.submit(f"close_channel {channel_id}", self.node.close_channel(cid))

    def accept_add_fund(self, event: Event) -> None:
        raise EventError(event, "dual funding (option_dual_fund) is not implemented by Lightspeed")

    def init_rbf(self, event: Event, conn: Conn, channel_id: str, amount: int, utxo_txid: str, utxo_outnum: int,
                 feerate: int) -> None:
        raise EventError(event, "dual funding (option_dual_fund) is not implemented by Lightspeed")


async def _ignore_failure(coro: Any) -> None:
    """An operation the test expects to fail: its failure is not reported."""
    with contextlib.suppress(Exception):
        await coro
