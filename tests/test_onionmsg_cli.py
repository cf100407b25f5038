"""`lightspeed onion-message send` refuses what BOLT 4 would have the recipient ignore, before any call."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from lightspeed.cli.main import cli


@pytest.mark.parametrize(("tlvs", "reason"), [
    (["63=00"], "final-hop payload types are 64 and above"),
    (["64=zz"], "the value is not hex"),
    (["x=00"], "expected TYPE=HEX"),
    (["64=00", "66=00"], "an onion message carries one payload field"),
])
def test_send_refuses_bad_payload_fields_with_a_clear_error(tmp_path: Path, tlvs: list[str], reason: str) -> None:
    args = ["--datadir", str(tmp_path), "onion-message", "send", "02" + "11" * 32]
    for tlv in tlvs:
        args += ["--tlv", tlv]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and reason in result.stderr
    assert "Traceback" not in result.output


def test_send_without_a_daemon_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--datadir", str(tmp_path), "onion-message", "send", "02" + "11" * 32,
                                      "--tlv", "64=00"])
    assert result.exit_code == 1 and result.stderr.startswith("error: ")


def test_the_cli_ping_type_is_the_node_s() -> None:
    """The CLI repeats the ping type so that `--help` does not import the node: they must agree."""
    from lightspeed.cli import onion_cmd
    from lightspeed.node import onion_messenger

    assert onion_cmd.PING_TYPE == onion_messenger.PING_TYPE
