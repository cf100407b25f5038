"""The server process of ``benchmarks/paid_api.py``: one node, one paid and one unpaid route.

``python benchmarks/_paid_api_server.py --chain FILE --store URL [--fd N] [--no-mining]``:
prints ``READY <url>`` and serves until killed. Both routes run the same handler, so the
difference between them is what Lightspeed costs. ``--fd``: serve on an inherited listening
socket, which several of these processes share (``paid_api.py --workers``: the kernel hands
each new connection to one of them, as uvicorn's own ``--workers`` does); each has its own
node, and only the first mines blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lightspeed.chain.regtest import RegtestChain
from lightspeed.cli.paid_example import start_paid_api
from lightspeed.micro.stores import open_allowance_store
from lightspeed.micro.terms import Price


async def weather(request: Request) -> JSONResponse:
    return JSONResponse({"city": request.path_params["city"], "celsius": 21})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chain", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--fd", type=int, help="an inherited listening socket to serve on")
    parser.add_argument("--no-mining", action="store_true", help="another worker mines the blocks")
    parser.add_argument("--profile", help="profile the CPU time (cProfile) and write it here on SIGTERM")
    args = parser.parse_args()
    if args.profile:
        _profile_until_sigterm(args.profile)
    sock = None if args.fd is None else socket.socket(fileno=args.fd)
    app = Starlette(routes=[Route("/weather/{city}", weather), Route("/unpaid/weather/{city}", weather)])
    api = await start_paid_api(RegtestChain(args.chain), open_allowance_store(args.store), Price(1),
                               app=app, prices={"/weather": 1}, sock=sock,
                               mine_every=0 if args.no_mining else 0.2,
                               creates_per_minute=10**6)  # the L402 baseline buys one allowance per call
    print("READY", api.url, flush=True)
    await asyncio.Event().wait()


def _profile_until_sigterm(path: str) -> None:
    """cProfile on process CPU time; SIGTERM writes the stats to ``path`` and exits."""
    import cProfile
    import signal
    import time

    profile = cProfile.Profile(time.process_time)
    profile.enable()

    def stop() -> None:
        profile.disable()
        profile.dump_stats(path)
        raise SystemExit(0)

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)


if __name__ == "__main__":
    asyncio.run(main())
