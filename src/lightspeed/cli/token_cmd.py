"""``lightspeed token create|list|revoke``: scoped API credentials (admin only; docs/credentials.md)."""

from __future__ import annotations

from typing import Any

import click

from lightspeed.cli.common import Amount, datadir_option, segment, with_example
from lightspeed.cli.node_cmd import _call, _errors_to_exit, _print


def _duration(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> int | None:
    from lightspeed.api.token_handlers import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


@click.group("token")
def token_group() -> None:
    """Scoped API tokens: readonly, invoice, pay (with a budget) or admin.

    \b
    Example:
      lightspeed --datadir ~/.lightspeed/alice token create --scope invoice --label shop
    """


@token_group.command("create")
@click.option("--scope", type=click.Choice(["readonly", "invoice", "pay", "admin"]), required=True,
              help="What the token may do: readonly < invoice < pay < admin (each includes the ones before).")
@click.option("--budget-msat", type=Amount("msat", minimum=1),
              help="pay tokens (required for them): the most they may ever spend, fees included.")
@click.option("--expires-in", callback=_duration, help="The token expires after this long: 90s, 15m, 1h, 7d, 2w.")
@click.option("--label", default="", help="A name to recognise the token by in `token list`.")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice token create --scope pay --budget-msat 50000sat "
              "--expires-in 1h --label bot")
def token_create(ctx: click.Context, scope: str, budget_msat: int | None, expires_in: int | None,
                 label: str) -> None:
    """Issue a scoped token; the token string is printed once (the node keeps only its id)."""
    body: dict[str, Any] = {"scope": scope, "label": label}
    if budget_msat is not None:
        body["budget_msat"] = budget_msat
    if expires_in is not None:
        body["expires_in_s"] = expires_in
    _print(_call(ctx, "POST", "/v1/tokens", body))


@token_group.command("list")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice token list")
def token_list(ctx: click.Context) -> None:
    """Tokens issued: id, scope, label, budget spent and left, expiry, revocation."""
    _print(_call(ctx, "GET", "/v1/tokens"))


@token_group.command("revoke")
@click.argument("token_id")
@datadir_option
@click.pass_context
@_errors_to_exit
@with_example("lightspeed --datadir ~/.lightspeed/alice token revoke 3f9a0c2b7d1e4a65")
def token_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke TOKEN_ID (its id from `token create` or `token list`) for good, also across restarts."""
    _print(_call(ctx, "POST", f"/v1/tokens/{segment(token_id, 'TOKEN_ID')}/revoke"))
