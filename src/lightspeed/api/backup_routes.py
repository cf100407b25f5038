"""``GET /v1/backup``: the node's static channel backup (see node.backup), base64 in JSON.

Base64 in a JSON object rather than raw bytes: every route of the API answers JSON, so a
client (the CLI, a script with curl and jq) needs nothing special, and the answer can say
how many channels the backup holds without the client decrypting it.
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request

from lightspeed.api.handlers import ApiContext
from lightspeed.api.openapi import Endpoint
from lightspeed.node.backup import VERSION


async def export_backup(ctx: ApiContext, request: Request, body: Any) -> tuple[int, Any]:
    data = ctx.node.channel_backup()
    return 200, {"backup": base64.b64encode(data).decode(), "version": VERSION,
                 "channels": len(ctx.node._backup_entries)}


def endpoints() -> tuple[Endpoint, ...]:
    return (
        Endpoint("GET", "/v1/backup", "exportBackup",
                 "The static channel backup (encrypted with a key from the node key): with the mnemonic, "
                 "what `node start --restore-backup` needs to recover the open channels' funds",
                 export_backup,
                 {"type": "object", "properties": {
                     "backup": {"type": "string", "description": "the backup file's bytes, base64"},
                     "version": {"type": "integer"}, "channels": {"type": "integer"}}}),
    )
