"""The forwarding policy an operator set (``updatechanpolicy``), kept in ``DATADIR/forwarding_policy.json``.

Written (atomically, fsynced) before the node takes the new terms, so the channel_updates that
announce them never promise fees a restart would forget; read by the daemon when it starts.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lightspeed.api.datadir import _write_private
from lightspeed.errors import UsageError
from lightspeed.payments.forward import ForwardingPolicy

POLICY_FILE = "forwarding_policy.json"
_FIELDS = {f.name for f in dataclasses.fields(ForwardingPolicy)}


def save_policy(datadir: Path, policy: ForwardingPolicy) -> None:
    _write_private(datadir / POLICY_FILE, json.dumps(dataclasses.asdict(policy), indent=2).encode())


def load_policy(datadir: Path) -> ForwardingPolicy | None:
    """The saved policy, or None if the operator never set one."""
    path = datadir / POLICY_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot be read as a forwarding policy ({exc})") from None
    if not isinstance(data, dict) or set(data) != _FIELDS or not all(
            isinstance(data[k], bool) if k == "enabled" else type(data[k]) is int and data[k] >= 0 for k in _FIELDS):
        raise UsageError(f"{path}: not a forwarding policy (expected integer fields {sorted(_FIELDS)})")
    return ForwardingPolicy(**data)
