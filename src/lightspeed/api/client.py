"""A small httpx client for a running daemon's REST API, found through its datadir.

Used by the CLI subcommands; any tool can do the same with the token from
``DATADIR/api_token`` and the address from ``DATADIR/api_address``. With ``LIGHTSPEED_TOKEN``
set, that token (a scoped one from ``lightspeed token create``) is sent instead.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

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
        try:
            response = httpx.request(method, self.base_url + path, json=body, params=params,
                                     headers={"Authorization": f"Bearer {self._token}"}, timeout=self._timeout)
        except httpx.ConnectError:
            raise UsageError(f"the daemon is not running (nothing answers at {self.base_url}); "
                             "start it with: lightspeed node start") from None
        except httpx.TimeoutException:
            raise UsageError(f"the daemon at {self.base_url} did not answer within {self._timeout:.0f} s") from None
        except httpx.HTTPError as exc:
            raise UsageError(f"cannot talk to the daemon at {self.base_url}: {exc}") from None
        try:
            data = response.json()
        except ValueError:
            raise UsageError(f"the daemon answered {response.status_code} without JSON") from None
        if response.status_code >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise ApiCallError(response.status_code, str(error.get("reason", response.reason_phrase)),
                               error.get("field"))
        return data
