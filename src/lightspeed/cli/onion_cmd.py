"""``lightspeed onion-message send|stats|blinded-path``: onion messages through a running daemon.

Each subcommand makes one REST call to the daemon on ``--datadir`` and prints its JSON answer.
``send DESTINATION --tlv TYPE=HEX`` takes a node id or a blinded path (hex); with
``--reply-path`` it waits for the reply (``"reply": null`` if none came in time).
"""

from __future__ import annotations

import click

from lightspeed.cli.common import datadir_option, with_example
from lightspeed.cli.node_cmd import _call, _errors_to_exit, _print
from lightspeed.errors import UsageError

#: Lightspeed's ping payload type (odd: other nodes ignore it); node.onion_messenger.PING_TYPE,
#: repeated here so that `--help` does not import the node.
PING_TYPE = 77701


def parse_tlv(text: str) -> tuple[int, str]:
    """``TYPE=HEX`` -> (type, hex); UsageError naming what is wrong."""
    tlv_type, sep, value = text.partition("=")
    if not sep or not tlv_type.strip().isdigit():
        raise UsageError(f"--tlv {text!r}: expected TYPE=HEX, TYPE a decimal number")
    try:
        bytes.fromhex(value)
    except ValueError:
        raise UsageError(f"--tlv {text!r}: the value is not hex") from None
    if int(tlv_type) < 64:
        # BOLT #4: Field numbers 64 and above are reserved for payloads for the final hop.
        raise UsageError(f"--tlv {text!r}: final-hop payload types are 64 and above")
    return int(tlv_type), value


@click.group("onion-message")
@with_example("lightspeed onion-message send $NODE_ID --reply-path")
def onion_message() -> None:
    """Send onion messages (BOLT 4) and see what the node received, relayed and dropped."""


@onion_message.command("send")
@with_example("lightspeed onion-message send $NODE_ID --reply-path",
              "lightspeed onion-message send $NODE_ID --tlv 77701=6869")
@click.argument("destination")
@click.option("--tlv", "tlvs", multiple=True, metavar="TYPE=HEX",
              help=f"The payload field (type >= 64; one per message). Default: a ping ({PING_TYPE}=) that "
                   "Lightspeed nodes answer over the reply path.")
@click.option("--reply-path", is_flag=True, help="Add a reply path through one of our peers and wait for the reply.")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 120), default=10, show_default=True,
              help="Seconds to wait for a reply, all attempts together.")
@click.option("--attempts", type=click.IntRange(1, 10), default=2, show_default=True,
              help="Messages sent (each with a new reply path) until one is answered.")
@datadir_option
@click.pass_context
@_errors_to_exit
def send(ctx: click.Context, destination: str, tlvs: tuple[str, ...], reply_path: bool, timeout_s: int,
         attempts: int) -> None:
    """Send an onion message to DESTINATION: a node id or a blinded path, in hex."""
    records = [parse_tlv(t) for t in tlvs] or [(PING_TYPE, b"lightspeed".hex())]
    if len(records) != 1:
        # BOLT #4: if the `onionmsg_tlv` contains more than one payload field: MUST ignore the message.
        raise UsageError(f"--tlv is given {len(records)} times: an onion message carries one payload field")
    body = {"destination": destination.strip().lower(), "tlv_type": records[0][0], "value": records[0][1],
            "reply_path": reply_path, "timeout_s": timeout_s, "attempts": attempts}
    _print(_call(ctx, "POST", "/v1/onion-messages", body, wait_s=timeout_s))


@onion_message.command("stats")
@with_example("lightspeed onion-message stats --datadir ~/.lightspeed/alice")
@datadir_option
@click.pass_context
@_errors_to_exit
def stats(ctx: click.Context) -> None:
    """Onion messages received, relayed, sent and dropped (by reason, and rate-limited by peer)."""
    _print(_call(ctx, "GET", "/v1/onion-messages/stats"))


@onion_message.command("blinded-path")
@with_example("lightspeed onion-message blinded-path --datadir ~/.lightspeed/bob")
@datadir_option
@click.pass_context
@_errors_to_exit
def blinded_path(ctx: click.Context) -> None:
    """A blinded path to this node through one of its peers (hand it out; send to it with `send`)."""
    _print(_call(ctx, "POST", "/v1/onion-messages/blinded-path"))
