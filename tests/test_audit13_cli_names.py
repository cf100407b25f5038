"""The CLI names issue 13 gives: ``offer create AMOUNT_MSAT|any DESCRIPTION``, ``offer pay OFFER
[--amount-msat N] [--quantity Q] [--payer-note TEXT]``, ``offer decode STRING``, ``refund create
AMOUNT_MSAT`` / ``refund pay``; a bad amount is refused before any daemon is asked."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from lightspeed.cli.main import cli


def _help(*args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0, result.output
    return result.output


def test_the_usage_lines_are_the_issues() -> None:
    assert "offer create [OPTIONS] AMOUNT_MSAT|any DESCRIPTION" in _help("offer", "create")
    pay = _help("offer", "pay")
    assert "offer pay [OPTIONS] OFFER" in pay
    assert all(option in pay for option in ("--amount-msat", "--quantity", "--payer-note"))
    assert "offer decode [OPTIONS] STRING" in _help("offer", "decode")
    assert "refund create [OPTIONS] AMOUNT_MSAT" in _help("refund", "create")
    assert "refund pay [OPTIONS] LNR" in _help("refund", "pay")


def test_a_bad_offer_amount_names_amount_msat_and_exits_1(tmp_path: Path) -> None:
    for amount, reason in (("abc", "error: AMOUNT_MSAT: 'abc' is not an amount"),
                           ("0", "error: AMOUNT_MSAT '0': must be at least 1 msat, or 'any'")):
        result = CliRunner().invoke(cli, ["--datadir", str(tmp_path), "offer", "create", amount, "x"])
        assert result.exit_code == 1 and result.output.startswith(reason), result.output
    # 1 msat is the smallest price: it passes the check and only then needs the daemon.
    result = CliRunner().invoke(cli, ["--datadir", str(tmp_path), "offer", "create", "1", "x"])
    assert result.exit_code == 1 and "no daemon is running" in result.output, result.output
