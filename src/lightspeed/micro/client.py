"""The paying client: an ``httpx.Auth`` flow that buys allowances and attaches a token per call.

The flow sends the request with the next link of a free lane. On a 402 it does what the
body says: buy an allowance (register the lanes' anchors, check the invoice against the
offer and the budget, pay it), pay a due batch invoice, or move past a stale position,
then retries once. A ``Lightspeed-Invoice`` header (the next batch, offered early) is paid
on the spot, and when the paid calls left fall below the low-water mark the next
allowance is bought before this one runs out.

Lanes let requests run in parallel: each request in flight holds its own lane, so
concurrent requests never invalidate each other's tokens.

The same class serves ``httpx.Client`` (give it a synchronous payer) and
``httpx.AsyncClient`` (an asynchronous one).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import threading
from collections.abc import AsyncGenerator, Awaitable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from lightspeed.errors import DecodeError, PaymentError
from lightspeed.invoice.decode import decode
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
from lightspeed.micro.terms import Price
from lightspeed.micro.token import ALLOWANCE_HEADER, TOKEN_HEADER, AllowanceRequest, Token


class SyncPayer(Protocol):
    def pay(self, invoice: str) -> bytes: ...


class AsyncPayer(Protocol):
    def pay(self, invoice: str) -> Awaitable[bytes]: ...


@dataclass
class ClientPolicy:
    calls_per_lane: int = 1000
    lanes: int = 4
    batch_calls: int = 0  # > 0: buy batched allowances (pay K calls at a time)
    max_price_msat_per_call: float = 1000.0  # refuse offers above this
    max_allowance_msat: int = 10_000_000  # refuse an invoice above this
    low_water: float = 0.1  # buy the next allowance when this share of paid calls is left


@dataclass
class Allowance:
    """One allowance as the client holds it: seed, terms, and a walker per lane."""

    allowance_id: bytes
    origin: str
    seed: bytes
    node_id: bytes
    price: Price
    calls_per_lane: int
    walkers: list[ChainWalker]
    remaining_calls: int = 0
    free_lanes: list[int] = field(default_factory=list)
    low: bool = False  # few paid calls left: buy the next allowance

    def token(self, lane: int, cost: int) -> Token | None:
        walker = self.walkers[lane]
        index = walker.next_index + cost - 1
        if index > walker.length:
            return None
        return Token(self.allowance_id, lane, index, walker.link(index))

    def resync(self, lane: int, last_index: int) -> None:
        """The server has this lane spent up to ``last_index`` (a request lost its answer): go on past it."""
        self.walkers[lane].skip_to(last_index + 1)

    def to_json(self) -> dict[str, Any]:
        """Everything needed to go on after a restart: O(lanes * log n) links, not n."""
        return {"id": self.allowance_id.hex(), "origin": self.origin, "seed": self.seed.hex(),
                "node_id": self.node_id.hex(), "price": self.price.to_json(),
                "calls_per_lane": self.calls_per_lane, "remaining_calls": self.remaining_calls,
                "walkers": [w.to_json() for w in self.walkers]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Allowance:
        walkers = [ChainWalker.from_json(w) for w in data["walkers"]]
        return cls(bytes.fromhex(data["id"]), data["origin"], bytes.fromhex(data["seed"]),
                   bytes.fromhex(data["node_id"]), Price.from_json(data["price"]), data["calls_per_lane"],
                   walkers, data["remaining_calls"],
                   free_lanes=[i for i, w in enumerate(walkers) if w.next_index <= w.length])

    def exhausted(self, lane: int) -> bool:
        return self.walkers[lane].next_index > self.walkers[lane].length


class LightspeedAuth(httpx.Auth):
    """Pays for each call with a hash-chain token; buys and tops up allowances through ``payer``."""

    requires_response_body = True

    def __init__(self, payer: SyncPayer | AsyncPayer, policy: ClientPolicy | None = None) -> None:
        self.payer = payer
        self.policy = policy or ClientPolicy()
        self.allowances: dict[str, list[Allowance]] = {}  # origin -> current first, then the next
        self.paid_invoices: set[str] = set()
        self._offers: dict[str, dict[str, Any]] = {}
        self._costs: dict[tuple[str, str], int] = {}  # (origin, path) -> links per call
        self._buying: set[str] = set()  # origins with a purchase in progress
        self.spent_msat = 0
        self._sync_lock = threading.Lock()
        self._freed = threading.Condition(self._sync_lock)
        self._async_freed: asyncio.Event | None = None

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the allowances (seeds and lane positions) atomically, mode 0600: they are money."""
        with self._sync_lock:
            data = {"version": 1, "allowances": [a.to_json() for queue in self.allowances.values() for a in queue],
                    "offers": self._offers, "paid_invoices": sorted(self.paid_invoices)}
        target = Path(path)
        temporary = target.with_suffix(target.suffix + ".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)

    def load(self, path: str | os.PathLike[str]) -> None:
        """Take back allowances saved by :meth:`save` (in a new process, after a restart).

        A lane position saved before its last calls only makes the server answer
        ``replayed`` with the lane's real position, which the flow follows.
        """
        data = json.loads(Path(path).read_text())
        with self._sync_lock:
            for raw in data["allowances"]:
                allowance = Allowance.from_json(raw)
                self.allowances.setdefault(allowance.origin, []).append(allowance)
            self._offers.update(data.get("offers", {}))
            self.paid_invoices.update(data.get("paid_invoices", []))

    # -- closing -----------------------------------------------------------------------------

    async def close_allowances(self, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Close every allowance held, so the server refunds the calls paid and not used.

        A server with automatic refunds pays them back at once through the return path our
        payment carried (``NodePayer(node, return_path=True)``); without one the answer says the
        refund is due (claim it with an invoice). One result per allowance: ``allowance_id``,
        ``unused_calls``, ``refund_msat`` and ``refund`` (the server's view of its payment, or
        ``{"status": "due"}``). An allowance the server no longer knows is skipped.
        """
        results: list[dict[str, Any]] = []
        with self._sync_lock:
            held = [(origin, a) for origin, queue in self.allowances.items() for a in queue]
        for origin, allowance in held:
            token = next((t for lane in range(len(allowance.walkers)) if not allowance.exhausted(lane)
                          for t in [allowance.token(lane, 1)] if t is not None), None)
            if token is None:
                continue  # every link spent: nothing is left to refund
            base = str(self._offers.get(origin, {}).get("allowances_url", "/lightspeed/allowances"))
            url = f"{origin}{base}/{allowance.allowance_id.hex()}"
            async with httpx.AsyncClient(timeout=timeout) as http:
                closed = await http.post(f"{url}/close", json={"token": token.header_value()})
                if closed.status_code != 200:
                    error = _json_or_empty(closed).get("error") or {}
                    if error.get("code") == "unknown_allowance":
                        continue
                    raise PaymentError(f"closing allowance {allowance.allowance_id.hex()} failed: HTTP "
                                       f"{closed.status_code} {error.get('code', '')}: {error.get('reason', '')}")
                status = _json_or_empty(await http.get(url))
            answer = _json_or_empty(closed)
            results.append({"allowance_id": allowance.allowance_id.hex(),
                            "unused_calls": status.get("remaining_calls"),
                            "refund_msat": answer.get("refund_msat"),
                            "refund": answer.get("refund") or {"status": status.get("refund", "due")}})
            self._retire(origin, allowance)
        return results

    # -- httpx entry points ------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self._flow(request)
        try:
            action = flow.send(None)
            while True:
                if isinstance(action, httpx.Request):
                    response = yield action
                    response.read()
                    action = flow.send(response)
                else:  # an invoice to pay or an allowance request to make
                    action = flow.send(self._sync_do(action))
        except StopIteration:
            return

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        flow = self._flow(request)
        try:
            action = flow.send(None)
            while True:
                if isinstance(action, httpx.Request):
                    response = yield action
                    await response.aread()
                    action = flow.send(response)
                else:
                    action = flow.send(await self._async_do(action))
        except StopIteration:
            return

    # -- the flow, shared by sync and async --------------------------------------------------

    def _flow(self, request: httpx.Request) -> Generator[Any, Any, None]:
        origin = f"{request.url.scheme}://{request.url.netloc.decode()}"
        if self._needs_topup(origin) and origin not in self._buying:
            # Requests yielded after the call's answer would replace it, so top up before.
            yield from self._buy_once(origin, self._offers[origin], request)
        cost = self._costs.get((origin, request.url.path), 1)
        for _attempt in range(4):
            held = self._take_lane(origin, cost)
            while held is None and self._has_lanes(origin, cost):
                yield ("wait",)  # every lane is carrying a request: wait for one, don't buy more
                held = self._take_lane(origin, cost)
            if held is not None:
                allowance, _lane, token = held
                request.headers[TOKEN_HEADER] = token.header_value()
            else:
                allowance = None
                request.headers.pop(TOKEN_HEADER, None)
            try:
                response: httpx.Response = yield request
            finally:
                if held is not None:
                    self._release(held[0], held[1])
            if response.status_code < 400 or response.status_code not in (400, 401, 402):
                yield from self._after_success(origin, allowance, response)
                return
            body = _json_or_empty(response)
            error = body.get("error") or {}
            offer = body.get("lightspeed") or {}
            code = error.get("code")
            if isinstance(offer.get("cost"), int):
                cost = self._costs[(origin, request.url.path)] = offer["cost"]
            if code == "underpaid":
                continue
            if code in ("unpaid", "batch_due") and error.get("invoice"):
                yield ("pay", error["invoice"])
                continue
            if code == "replayed" and allowance is not None and isinstance(error.get("last_index"), int):
                allowance.resync(held[1], error["last_index"])  # type: ignore[index]
                continue
            if code in ("no_token", "exhausted", "expired", "closed", "unknown_allowance"):
                if allowance is not None:
                    self._retire(origin, allowance)
                if not self._has_usable(origin, cost):
                    yield from self._buy_once(origin, offer, request)
                continue
            return  # a refusal we can't fix (forged, bad request): the caller sees the response
        return

    def _after_success(self, origin: str, allowance: Allowance | None,
                       response: httpx.Response) -> Generator[Any, Any, None]:
        if allowance is None:
            return
        remaining = response.headers.get("lightspeed-remaining")
        if remaining is not None and remaining.isdigit():
            allowance.remaining_calls = int(remaining)
        invoice = response.headers.get("lightspeed-invoice")
        if invoice and invoice not in self.paid_invoices:
            yield ("pay", invoice)
        total = allowance.calls_per_lane * len(allowance.walkers)
        if not self.policy.batch_calls and allowance.remaining_calls < self.policy.low_water * total:
            allowance.low = True  # the next call buys the next allowance first

    def _needs_topup(self, origin: str) -> bool:
        """The only allowance left for ``origin`` is running low (and we know the offer)."""
        with self._sync_lock:
            queue = self.allowances.get(origin, [])
            return len(queue) == 1 and queue[0].low and origin in self._offers

    def _buy_once(self, origin: str, offer: dict[str, Any], original: httpx.Request) -> Generator[Any, Any, None]:
        """Buy, unless another request to ``origin`` is already buying: then wait for it."""
        if origin in self._buying:
            while origin in self._buying:
                yield ("wait",)
            return
        self._buying.add(origin)
        try:
            yield from self._buy(origin, offer, original)
        finally:
            self._buying.discard(origin)
            self._wake()

    def _buy(self, origin: str, offer: dict[str, Any], original: httpx.Request) -> Generator[Any, Any, None]:
        """Register fresh lanes, check the invoice against the offer and budget, pay it.

        The lanes travel in a ``Lightspeed-Allowance`` header on a copy of the request; the
        server answers 402 with the allowance and its invoice, so no other URL is needed.
        """
        if not offer:
            raise PaymentError("the server's 402 carries no Lightspeed offer")
        self._offers[origin] = offer
        price = Price.from_json(offer.get("price"))
        if price.per_call > self.policy.max_price_msat_per_call:
            raise PaymentError(f"the server asks {price}, above this client's limit")
        p = self.policy
        lanes = max(1, min(p.lanes, int(offer.get("max_lanes", p.lanes))))
        granularity = int(offer.get("granularity", 1))
        per_lane = max(granularity, p.calls_per_lane // granularity * granularity)
        seed = os.urandom(32)
        tips = [lane_tip(seed, lane) for lane in range(lanes)]
        request = AllowanceRequest(per_lane, tuple(anchor(t, per_lane) for t in tips), p.batch_calls)
        headers = {k: v for k, v in original.headers.items() if k.lower() != TOKEN_HEADER}
        headers[ALLOWANCE_HEADER] = request.header_value()
        ask = httpx.Request(original.method, original.url, headers=headers, content=original.content)
        answer: httpx.Response = yield ask
        body = _json_or_empty(answer)
        if "allowance" not in body:
            error = body.get("error") or {}
            raise PaymentError(f"buying an allowance failed: HTTP {answer.status_code} "
                               f"{error.get('code', '')}: {error.get('reason', '')}")
        terms = body["allowance"]
        node_id = bytes.fromhex(str(offer.get("node_id")))
        invoice = decode(terms["invoice"])
        expected = price.cost_msat(p.batch_calls or request.total_calls)
        if terms["node_id"] != node_id.hex() or invoice.payee != node_id:
            raise PaymentError("the allowance invoice is not payable to the offering node")
        if invoice.amount_msat != expected or expected > p.max_allowance_msat:
            raise PaymentError(f"the allowance invoice asks {invoice.amount_msat} msat, expected {expected}")
        allowance = Allowance(bytes.fromhex(terms["id"]), origin, seed, node_id, price, per_lane,
                              [ChainWalker.from_tip(t, per_lane) for t in tips],
                              free_lanes=list(range(lanes)))
        yield ("pay", terms["invoice"])
        allowance.remaining_calls = p.batch_calls or request.total_calls
        self.allowances.setdefault(origin, []).append(allowance)

    # -- lanes -------------------------------------------------------------------------------

    def _take_lane(self, origin: str, cost: int) -> tuple[Allowance, int, Token] | None:
        with self._sync_lock:
            for allowance in self.allowances.get(origin, []):
                for position, lane in enumerate(allowance.free_lanes):
                    token = allowance.token(lane, cost)
                    if token is not None:
                        del allowance.free_lanes[position]
                        return allowance, lane, token
            return None

    def _release(self, allowance: Allowance, lane: int) -> None:
        with self._sync_lock:
            if not allowance.exhausted(lane):
                allowance.free_lanes.append(lane)
        self._wake()

    def _wake(self) -> None:
        """A lane came free or a purchase ended: let waiting requests look again."""
        with self._sync_lock:
            self._freed.notify_all()
        if self._async_freed is not None:
            self._async_freed.set()

    def _has_lanes(self, origin: str, cost: int) -> bool:
        """Some allowance still has a lane with links left (busy or not)."""
        with self._sync_lock:
            return any(not a.exhausted(lane) and a.walkers[lane].next_index + cost - 1 <= a.calls_per_lane
                       for a in self.allowances.get(origin, []) for lane in range(len(a.walkers)))

    def _retire(self, origin: str, allowance: Allowance) -> None:
        with self._sync_lock:
            queue = self.allowances.get(origin, [])
            if allowance in queue:
                queue.remove(allowance)

    def _has_usable(self, origin: str, cost: int) -> bool:
        with self._sync_lock:
            return any(a.free_lanes for a in self.allowances.get(origin, []))

    # -- side effects: paying and registering ------------------------------------------------

    def _sync_do(self, action: tuple[str, ...]) -> bytes | None:
        if action[0] == "wait":
            with self._freed:
                self._freed.wait(timeout=1.0)
            return None
        invoice = action[1]
        if invoice in self.paid_invoices:
            return None
        result = self.payer.pay(invoice)
        if inspect.isawaitable(result):
            raise PaymentError("an httpx.Client needs a synchronous payer")
        self._paid(invoice)
        return result

    async def _async_do(self, action: tuple[str, ...]) -> bytes | None:
        if action[0] == "wait":
            if self._async_freed is None:
                self._async_freed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._async_freed.wait(), 1.0)
            self._async_freed.clear()  # a stale wake-up costs one more look, never a lost one
            return None
        invoice = action[1]
        if invoice in self.paid_invoices:
            return None
        result = self.payer.pay(invoice)
        preimage = await result if inspect.isawaitable(result) else result
        self._paid(invoice)
        return preimage

    def _paid(self, invoice: str) -> None:
        self.paid_invoices.add(invoice)
        amount = decode(invoice).amount_msat
        self.spent_msat += amount or 0


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (ValueError, DecodeError):
        return {}
    return body if isinstance(body, dict) else {}
