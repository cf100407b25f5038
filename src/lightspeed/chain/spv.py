"""Simplified payment verification: a header chain a light client can trust without a full node.

What an Electrum server sends is checked here, never believed (sans-IO: headers in, verdicts out).
Every header links to the previous one, meets the target its ``bits`` claim, and claims the
``bits`` the network's rules demand at that height (Bitcoin Core's ``GetNextWorkRequired``:
every 2016 blocks the target scales with the time the last period took, clamped to 4x either
way; testnet's 20-minute minimum-difficulty rule; regtest never retargets). Its time must exceed
the median of the 11 before it. The chain starts at a per-network checkpoint (the end of a
difficulty period, its hash compiled in) or at the genesis block, so a server cannot feed a history
of its own. A competing branch replaces ours only when it carries more work, and never below
the checkpoint. A transaction is confirmed when its merkle branch leads to the merkle root of a
header in this chain.

A header may not be more than two hours ahead of ``now`` (an input: the runtime passes its clock).
Not checked: signet's block signatures (BIP 325, they are in the block, not the header).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lightspeed.bitcoin.network import BITCOIN, REGTEST, SIGNET, TESTNET
from lightspeed.chain.blocks import HEADER_SIZE, BlockHeader, bits_to_target, root_from_branch
from lightspeed.errors import DecodeError

RETARGET_INTERVAL = 2016  # blocks between difficulty adjustments (Bitcoin Core: nPowTargetTimespan / spacing)
TARGET_TIMESPAN_S = 14 * 24 * 60 * 60
TARGET_SPACING_S = 10 * 60
MEDIAN_TIME_SPAN = 11
MAX_FUTURE_BLOCK_TIME_S = 2 * 60 * 60  # Bitcoin Core's MAX_FUTURE_BLOCK_TIME


class HeaderError(DecodeError):
    """A header (or a proof against one) that breaks a consensus rule: the server is not to be trusted."""


class WeakerBranch(HeaderError):
    """Valid headers forking from ours with no more work: ours stays the best chain."""


def target_to_bits(target: int) -> int:
    """Bitcoin Core's ``arith_uint256::GetCompact``: the compact form of a target (the inverse of
    :func:`~lightspeed.chain.blocks.bits_to_target`, rounding the mantissa down)."""
    size = (target.bit_length() + 7) // 8
    compact = target << (8 * (3 - size)) if size <= 3 else target >> (8 * (size - 3))
    if compact & 0x00800000:  # the mantissa's top bit is a sign bit: shift it out
        compact >>= 8
        size += 1
    return compact | (size << 24)


def work_of(bits: int) -> int:
    """The expected number of hashes to find a block at this target (Bitcoin Core's ``GetBlockProof``)."""
    return (1 << 256) // (bits_to_target(bits) + 1)


@dataclass(frozen=True)
class Checkpoint:
    """Where header sync starts: a block whose hash is compiled in (the last of a difficulty period),
    and the hash of the last block of the next period, which pins every header in between (so the
    bits of that period's first block, whose retarget needs headers from before the start, are
    fixed too)."""

    height: int
    block_hash: bytes  # internal byte order
    pin_height: int | None = None
    pin_hash: bytes | None = None


@dataclass(frozen=True)
class ChainParams:
    """One network's header rules (Bitcoin Core's ``chainparams.cpp`` consensus fields)."""

    name: str
    genesis_hash: bytes  # internal byte order (= the BOLT chain_hash of lightspeed.bitcoin.network)
    pow_limit: int
    retargets: bool  # False: fPowNoRetargeting (regtest)
    min_difficulty_blocks: bool  # fPowAllowMinDifficultyBlocks (testnet: 20 minutes without a block)
    checkpoint: Checkpoint | None = None  # where header sync starts; None: the genesis block

    @property
    def start(self) -> Checkpoint:
        return self.checkpoint or Checkpoint(0, self.genesis_hash)


def _hash(display_hex: str) -> bytes:
    return bytes.fromhex(display_hex)[::-1]


def _checkpoint(height: int, block_hash: str, pin_hash: str) -> Checkpoint:
    return Checkpoint(height, _hash(block_hash), height + RETARGET_INTERVAL, _hash(pin_hash))


_MAIN_LIMIT = 0x00000000FFFF0000000000000000000000000000000000000000000000000000
# Checkpoints: the last two entries of Electrum's electrum/chains/{mainnet,testnet,signet}/checkpoints.json
# (github.com/spesmilo/electrum at 9ebabef3839e37af2fce13dc016bc9491da781ad): entry i is the hash of
# block (i + 1) * 2016 - 1. Header sync starts there: tens of thousands of headers, not millions.
BITCOIN_PARAMS = ChainParams(
    "bitcoin", BITCOIN.chain_hash, _MAIN_LIMIT, retargets=True, min_difficulty_blocks=False,
    checkpoint=_checkpoint(951551, "0000000000000000000195dd7790358834443ede81e6800d8c497aa58040790d",
                           "00000000000000000001b315e72169bef4867bf780527aa97c625ee9c001dc5d"))
TESTNET_PARAMS = ChainParams(  # testnet3, the chain BOLT's testnet chain_hash names
    "testnet", TESTNET.chain_hash, _MAIN_LIMIT, retargets=True, min_difficulty_blocks=True,
    checkpoint=_checkpoint(5009759, "0000000000003ac332c3ac91aac2f9c7b5991ee81c9af86897eb6e922f617439",
                           "000000000000041b511bf0b926371d5045f70bbc30d36b66f1c84ed30d765886"))
SIGNET_PARAMS = ChainParams(  # the default signet (Bitcoin Core: powLimit 00000377ae...)
    "signet", SIGNET.chain_hash, 0x00000377AE000000000000000000000000000000000000000000000000000000,
    retargets=True, min_difficulty_blocks=False,
    checkpoint=_checkpoint(306431, "00000006f04e877d3793db457a61de7f11df44552a9c18fc3484604b59158ebf",
                           "0000000fce481bd689af96794ea36ad8e80bc4635f068104aeff53bc17326ecf"))
REGTEST_PARAMS = ChainParams(
    "regtest", REGTEST.chain_hash, 0x7FFFFF0000000000000000000000000000000000000000000000000000000000,
    retargets=False, min_difficulty_blocks=True)
PARAMS = {p.name: p for p in (BITCOIN_PARAMS, TESTNET_PARAMS, SIGNET_PARAMS, REGTEST_PARAMS)}


def retarget_bits(params: ChainParams, first: BlockHeader, last: BlockHeader) -> int:
    """Bitcoin Core's CalculateNextWorkRequired: the bits of the block after ``last``, the last block
    of a period that began with ``first``. The target scales by the time the period took against two
    weeks, clamped to a factor of 4 either way, and never exceeds the network's limit."""
    timespan = min(max(last.time - first.time, TARGET_TIMESPAN_S // 4), TARGET_TIMESPAN_S * 4)
    target = min(bits_to_target(last.bits) * timespan // TARGET_TIMESPAN_S, params.pow_limit)
    return target_to_bits(target)


def parse_header(data: bytes, field: str = "header") -> BlockHeader:
    if len(data) != HEADER_SIZE:
        raise HeaderError(field, f"{len(data)} bytes, a header has {HEADER_SIZE}")
    return BlockHeader.parse(data)


@dataclass(frozen=True)
class Connected:
    """What :meth:`HeaderChain.connect` changed: the lowest height whose header changed (None: nothing new)
    and whether blocks of ours were replaced (a reorganisation)."""

    changed_from: int | None
    reorg: bool


class HeaderChain:
    """The best verified header chain from the network's start point (in memory)."""

    def __init__(self, params: ChainParams) -> None:
        self.params = params
        self.base_height = params.start.height
        self._headers: list[BlockHeader] = []  # index = height - base_height
        self._hashes: list[bytes] = []
        self._work: list[int] = []  # cumulative work from the base, per header

    # -- reading ---------------------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return bool(self._headers)

    @property
    def tip_height(self) -> int:
        return self.base_height + len(self._headers) - 1

    @property
    def tip_hash(self) -> bytes:
        return self._hashes[-1]

    def header(self, height: int) -> BlockHeader | None:
        i = height - self.base_height
        return self._headers[i] if 0 <= i < len(self._headers) else None

    def block_hash(self, height: int) -> bytes | None:
        i = height - self.base_height
        return self._hashes[i] if 0 <= i < len(self._hashes) else None

    def serialize(self) -> bytes:
        """Every header from the base, 80 bytes each (what :meth:`load` checks and takes back)."""
        return b"".join(h.serialize() for h in self._headers)

    # -- writing ---------------------------------------------------------------------------------

    def load(self, data: bytes, now: int | None = None) -> None:
        """Headers saved by :meth:`serialize`, checked again as if a server sent them; HeaderError
        (and an empty chain) if they are not a valid chain from this network's start."""
        if not data or len(data) % HEADER_SIZE:
            raise HeaderError("headers file", f"{len(data)} bytes is not a whole number of headers")
        try:
            self.set_base(data[:HEADER_SIZE])
            raw = [data[i:i + HEADER_SIZE] for i in range(HEADER_SIZE, len(data), HEADER_SIZE)]
            self.connect(self.base_height + 1, raw, now)
        except HeaderError:
            self._headers, self._hashes, self._work = [], [], []
            raise

    def set_base(self, header_bytes: bytes) -> None:
        """The first header: it must hash to the network's checkpoint (or genesis)."""
        header = parse_header(header_bytes)
        start = self.params.start
        if header.hash != start.block_hash:
            raise HeaderError("header", f"block {start.height} is {header.hash[::-1].hex()}, the "
                                        f"{self.params.name} checkpoint is {start.block_hash[::-1].hex()}")
        if not self._meets_target(header):
            raise HeaderError("header", f"block {start.height}: proof of work does not meet its bits")
        self._headers, self._hashes, self._work = [header], [header.hash], [work_of(header.bits)]

    def connect(self, start_height: int, raw_headers: Sequence[bytes], now: int | None = None) -> Connected:
        """Check ``raw_headers`` (consecutive, the first at ``start_height``) and adopt them if they
        extend our chain or form a branch with more work; HeaderError (nothing changed) otherwise."""
        if not self._headers:
            raise HeaderError("start_height", "the chain has no base header yet")
        if not raw_headers:
            return Connected(None, False)
        if start_height <= self.base_height:
            skip = self.base_height + 1 - start_height  # at or below the checkpoint: must be ours
            for i, raw in enumerate(raw_headers[:skip]):
                if parse_header(raw).hash != self.block_hash(start_height + i):
                    raise HeaderError("headers", f"block {start_height + i} differs from the checkpointed chain")
            raw_headers, start_height = raw_headers[skip:], self.base_height + 1
            if not raw_headers:
                return Connected(None, False)
        if start_height > self.tip_height + 1:
            raise HeaderError("start_height", f"{start_height} leaves a gap after our tip {self.tip_height}")
        headers = [parse_header(raw, f"headers[{i}]") for i, raw in enumerate(raw_headers)]
        # Skip what we already have: the branch starts at the first header that differs.
        first = 0
        while first < len(headers) and self.block_hash(start_height + first) == headers[first].hash:
            first += 1
        headers, start_height = headers[first:], start_height + first
        if not headers:
            return Connected(None, False)
        fork = start_height - 1  # our block the branch builds on
        new_headers, new_hashes, new_work = self._headers[:fork - self.base_height + 1], \
            self._hashes[:fork - self.base_height + 1], self._work[:fork - self.base_height + 1]
        view = _View(self, new_headers, new_hashes)
        total = new_work[-1]
        for i, header in enumerate(headers):
            height = start_height + i
            self._check(view, height, header)
            if now is not None and header.time > now + MAX_FUTURE_BLOCK_TIME_S:
                raise HeaderError("time", f"block {height}: time {header.time} is more than two hours after "
                                          f"now ({now})")
            new_headers.append(header)
            new_hashes.append(header.hash)
            total += work_of(header.bits)
            new_work.append(total)
        reorg = start_height <= self.tip_height
        if reorg and total <= self._work[-1]:
            raise WeakerBranch("headers", f"a branch from block {start_height} with no more work than our "
                                         f"chain (tip {self.tip_height})")
        self._headers, self._hashes, self._work = new_headers, new_hashes, new_work
        return Connected(start_height, reorg)

    # -- rules -----------------------------------------------------------------------------------

    def _meets_target(self, header: BlockHeader) -> bool:
        return meets_target(self.params, header)

    def _check(self, view: _View, height: int, header: BlockHeader) -> None:
        where = f"block {height}"
        prev = view.header(height - 1)
        assert prev is not None
        if header.prev_hash != view.hash(height - 1):
            raise HeaderError("prev_hash", f"{where} does not link to block {height - 1} "
                                           f"{view.hash(height - 1)[::-1].hex()}")
        if not self._meets_target(header):
            raise HeaderError("bits", f"{where}: its hash {header.hash[::-1].hex()} does not meet "
                                      f"the target of bits {header.bits:#010x} (proof of work)")
        start = self.params.start
        if height == start.pin_height and header.hash != start.pin_hash:
            raise HeaderError("headers", f"{where} is {header.hash[::-1].hex()}, the {self.params.name} "
                                         f"checkpoint says {(start.pin_hash or b'')[::-1].hex()}")
        expected = self._required_bits(view, height, header)
        if expected is not None and header.bits != expected:
            raise HeaderError("bits", f"{where} has bits {header.bits:#010x}, the difficulty rules "
                                      f"demand {expected:#010x}")
        times = sorted(view.header(h).time for h in range(max(height - MEDIAN_TIME_SPAN, view.low), height)  # type: ignore[union-attr]
                       )
        if len(times) == MEDIAN_TIME_SPAN and header.time <= times[len(times) // 2]:
            raise HeaderError("time", f"{where}: time {header.time} is not after the median of the "
                                      f"previous {MEDIAN_TIME_SPAN} blocks ({times[len(times) // 2]})")

    def _required_bits(self, view: _View, height: int, header: BlockHeader) -> int | None:
        """Bitcoin Core's GetNextWorkRequired; None when the headers it needs are before our base."""
        params = self.params
        prev = view.header(height - 1)
        assert prev is not None
        limit_bits = target_to_bits(params.pow_limit)
        if not params.retargets:
            return prev.bits  # regtest: the same (minimal) difficulty throughout
        if height % RETARGET_INTERVAL:
            if params.min_difficulty_blocks:
                if header.time > prev.time + 2 * TARGET_SPACING_S:
                    return limit_bits  # testnet: 20 minutes without a block allow a minimum-difficulty one
                h = height - 1  # else the last block of the period that was not a minimum-difficulty one
                while h % RETARGET_INTERVAL and view.header(h) is not None and view.header(h).bits == limit_bits:  # type: ignore[union-attr]
                    h -= 1
                found = view.header(h)
                return None if found is None else found.bits
            return prev.bits
        first = view.header(height - RETARGET_INTERVAL)
        if first is None:
            return None  # the period started before our checkpoint: its pinned hash vouches for it
        return retarget_bits(params, first, prev)


def meets_target(params: ChainParams, header: BlockHeader) -> bool:
    """Bitcoin Core's CheckProofOfWork: the bits are a positive target within the network's limit,
    and the header's hash does not exceed it."""
    target = bits_to_target(header.bits)
    if header.bits & 0x00800000 or target == 0 or target > params.pow_limit:
        return False
    return int.from_bytes(header.hash, "little") <= target


class _View:
    """Our chain below a fork plus the branch being checked, by height."""

    def __init__(self, chain: HeaderChain, headers: list[BlockHeader], hashes: list[bytes]) -> None:
        self.low = chain.base_height
        self._headers, self._hashes = headers, hashes

    def header(self, height: int) -> BlockHeader | None:
        i = height - self.low
        return self._headers[i] if 0 <= i < len(self._headers) else None

    def hash(self, height: int) -> bytes:
        return self._hashes[height - self.low]


def verify_merkle(txid: bytes, position: int, branch: Sequence[bytes], header: BlockHeader, tx_size: int) -> None:
    """HeaderError unless ``branch`` proves ``txid`` at ``position`` under ``header``'s merkle root.

    A 64-byte "transaction" could be an inner node of the tree in disguise; none is valid.
    """
    if tx_size == 64:
        raise HeaderError("merkle", "a 64-byte transaction cannot be proven by a merkle branch")
    if position >= 1 << len(branch):
        raise HeaderError("pos", f"position {position} does not fit a branch of {len(branch)} hashes")
    if root_from_branch(txid, position, list(branch)) != header.merkle_root:
        raise HeaderError("merkle", f"the branch for {txid[::-1].hex()} does not lead to the merkle root "
                                    f"of block {header.hash[::-1].hex()}")
