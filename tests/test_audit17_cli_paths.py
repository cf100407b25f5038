"""Issue 17 audit: what a user types as NODE_ID, PAYMENT_HASH, CHANNEL_ID... stays that argument.

The CLI put arguments into REST paths as typed, and httpx resolves `..` in a path: so
`lightspeed disconnect '../stop#'` sent `POST /v1/stop` and stopped the daemon, and
`getnodeinfo '../../getinfo#'` printed getinfo. A real `node start` daemon, the CLI as a
subprocess.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_docs17_cli import Daemon, lightspeed, ok_json

HOSTILE = [  # each, resolved as a URL, names another route (`#` ends the path)
    ("disconnect", "../stop#"),                   # POST /v1/stop
    ("invoice", "cancel", "../stop#"),            # POST /v1/stop
    ("token", "revoke", "../stop#"),              # POST /v1/stop
    ("update-fee", "../stop#", "1000"),           # POST /v1/stop
    ("getnodeinfo", "../../getinfo#"),            # GET /v1/getinfo
    ("getchaninfo", "../../getinfo#"),
    ("trackpayment", "../getinfo#"),
    ("invoice", "lookup", "../getinfo#"),
    ("invoice", "lookup", ".."),                  # GET /v1/ (a dot segment alone)
]


@pytest.mark.slow
def test_an_argument_never_reaches_another_route(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path / "alice", tmp_path / "chain.sqlite")
    datadir = str(daemon.datadir)
    try:
        for args in HOSTILE:
            result = lightspeed(*args, "--datadir", datadir)
            assert result.returncode == 1 and result.stdout == "", (args, result.stdout)
            assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, (args, result.stderr)
            named = {"disconnect": "node_id", "getnodeinfo": "node_id", "getchaninfo": "short_channel_id",
                     "update-fee": "channel_id", "token": "token_id"}.get(args[0], "payment_hash")
            assert named in result.stderr.lower(), (args, result.stderr)  # the argument, by name
            assert "node_id" not in result.stdout and '"uris"' not in result.stdout
            assert daemon.process.poll() is None, f"{args} stopped the daemon"
        assert ok_json("getinfo", "--datadir", datadir)["node_id"] == daemon.ready["node_id"]
    finally:
        daemon.stop()
