"""A small client for a running daemon's REST API, found through its datadir.

Used by the CLI subcommands; any tool can do the same with the token from
``DATADIR/api_token`` and the address from ``DATADIR/api_address``. With ``LIGHTSPEED_TOKEN``
set, that token (a scoped one from ``lightspeed token create``) is sent instead.

It speaks plain HTTP/1.1 to loopback through the standard library's ``http.client``, not httpx:
every CLI command is a new process, and importing httpx (with httpcore, its CLI's rich and
pygments) cost about as much CPU as the rest of the command together. The daemon's API is
always ``http://HOST:PORT`` (``Datadir.api_url``), so nothing of httpx's is missed.
"""

from __future__ import annotations

import http.client
import json
import os
from typing import Any
from urllib.parse import urlencode, urlsplit

from lightspeed.api.datadir import Datadir
from lightspeed.errors import LightspeedError, UsageError

TOKEN_VARIABLE = "LIGHTSPEED_TOKEN"  # a scoped token to use instead of the datadir's admin token


class ApiCallError(LightspeedError):
    """The daemon refused a request; ``field`` and ``reason`` come from its JSON error."""

    def __init__(self, status: int, reason: str, field: str | None = None) -> None:
        self.status, self.reason, self.field = status, reason, field
        super().__init__(f"{field}: {reason}" if field else reason)


DEFAULT_TIMEOUT_S = 120.0


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.base_url, self._token, self._timeout = base_url, token, timeout_s

    @classmethod
    def from_datadir(cls, path: str | Any, timeout_s: float = DEFAULT_TIMEOUT_S) -> ApiClient:
        datadir = Datadir(path)
        return cls(datadir.api_url(), os.environ.get(TOKEN_VARIABLE) or datadir.token(), timeout_s)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, str] | None = None) -> Any:
        """One request; ``timeout_s`` bounds each step (connect, send, every read), as httpx's did."""
        status, reason, raw = self._exchange(method, path, body, params)
        try:
            data = json.loads(raw)
        except ValueError:  # not JSON, or not UTF-8
            raise UsageError(f"the daemon answered {status} without JSON") from None
        if status >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise ApiCallError(status, str(error.get("reason", reason)), error.get("field"))
        return data

    def _exchange(self, method: str, path: str, body: dict[str, Any] | None,
                  params: dict[str, str] | None) -> tuple[int, str, bytes]:
        url = urlsplit(self.base_url)
        target = path + ("?" + urlencode(params) if params else "")  # spaces as "+", as httpx sent them
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        content = None
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection(url.hostname or "", url.port, timeout=self._timeout)
        try:
            try:
                connection.connect()
            except TimeoutError:
                raise UsageError(f"the daemon at {self.base_url} did not answer within {self._timeout:.0f} s") from None
            except OSError:  # refused, unreachable, no such host
                raise UsageError(f"the daemon is not running (nothing answers at {self.base_url}); "
                                 "start it with: lightspeed node start") from None
            connection.request(method, target, body=content, headers=headers)
            response = connection.getresponse()
            return response.status, response.reason, response.read()
        except TimeoutError:
            raise UsageError(f"the daemon at {self.base_url} did not answer within {self._timeout:.0f} s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise UsageError(f"cannot talk to the daemon at {self.base_url}: {exc or type(exc).__name__}") from None
        finally:
            connection.close()
