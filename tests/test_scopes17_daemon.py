"""Scoped tokens through the CLI against a real `node start` daemon, across a restart (issue 17)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.test_docs17_cli import ENV, Daemon, lightspeed, ok_json


def _get(api: str, path: str, token: str) -> httpx.Response:
    return httpx.get(f"http://{api}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)


@pytest.mark.slow
def test_tokens_made_with_the_cli_keep_their_scope_and_revocation_across_a_restart(tmp_path: Path) -> None:
    chain, datadir = tmp_path / "chain.sqlite", tmp_path / "alice"
    daemon = Daemon(datadir, chain)
    try:
        d = str(datadir)
        viewer = ok_json("token", "create", "--scope", "readonly", "--label", "viewer", "--datadir", d)
        shop = ok_json("token", "create", "--scope", "invoice", "--expires-in", "1h", "--datadir", d)
        bot = ok_json("token", "create", "--scope", "pay", "--budget-msat", "50sat", "--datadir", d)
        assert (bot["scope"], bot["budget_msat"], bot["remaining_msat"]) == ("pay", 50_000, 50_000)
        assert shop["expires_at"] - shop["created_at"] == 3600
        no_budget = lightspeed("token", "create", "--scope", "pay", "--datadir", d)
        assert no_budget.returncode == 1 and "budget_msat: a pay token needs a budget" in no_budget.stderr
        bad = lightspeed("token", "create", "--scope", "readonly", "--expires-in", "soon", "--datadir", d)
        assert bad.returncode == 2 and "not a duration" in bad.stderr
        api = daemon.ready["api"]
        assert _get(api, "/v1/getinfo", viewer["token"]).status_code == 200
        refused = _get(api, "/v1/tokens", viewer["token"])
        assert refused.status_code == 403 and "needs admin" in refused.json()["error"]["reason"]
        made = httpx.post(f"http://{api}/v1/invoices", json={"amount_msat": 1000, "description": "tea"},
                          headers={"Authorization": f"Bearer {shop['token']}"}, timeout=30)
        assert made.status_code == 201, made.text
        # The CLI sends a scoped token given in LIGHTSPEED_TOKEN instead of the datadir's admin token.
        as_shop = {**ENV, "LIGHTSPEED_TOKEN": shop["token"]}
        made_by_cli = lightspeed("invoice", "new", "1sat", "x", "--datadir", d, env=as_shop)
        assert made_by_cli.returncode == 0, made_by_cli.stderr
        listing = lightspeed("token", "list", "--datadir", d, env=as_shop)
        assert listing.returncode == 1 and "scope is invoice; this route needs admin" in listing.stderr
        assert ok_json("token", "revoke", viewer["id"], "--datadir", d)["revoked_at"] is not None
        assert _get(api, "/v1/getinfo", viewer["token"]).status_code == 401
        unknown = lightspeed("token", "revoke", "f" * 16, "--datadir", d)
        assert unknown.returncode == 1 and "no token" in unknown.stderr
    finally:
        daemon.stop()
    daemon = Daemon(datadir, chain)  # restarted on the same datadir
    try:
        api = daemon.ready["api"]
        after = _get(api, "/v1/getinfo", viewer["token"])
        assert after.status_code == 401 and "revoked" in after.json()["error"]["reason"]
        assert _get(api, "/v1/getinfo", shop["token"]).status_code == 200
        listed = {t["id"]: t for t in ok_json("token", "list", "--datadir", str(datadir))["tokens"]}
        assert listed[viewer["id"]]["revoked_at"] is not None and listed[bot["id"]]["remaining_msat"] == 50_000
        assert _get(api, "/v1/getinfo", (datadir / "api_token").read_text().strip()).status_code == 200
    finally:
        daemon.stop()
