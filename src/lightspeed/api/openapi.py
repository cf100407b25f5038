"""The OpenAPI 3.1 document of the REST API, generated from the endpoint table.

Every route the app serves is an :class:`Endpoint`; this module turns the same
table into the document, so a route cannot exist without being described.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lightspeed import __version__
from lightspeed.api.schema import Schema

ERROR_SCHEMA: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["reason"],
        "properties": {"field": {"type": "string", "description": "the input that was wrong, if one was"},
                       "reason": {"type": "string", "description": "what was wrong, in words a user can act on"},
                       "payment_hash": {"type": "string",
                                        "description": "504 on a payment: it is still pending; look it up"}}}},
}

_ERRORS = {
    "400": "the request body or a parameter is invalid (field and reason say which and why)",
    "401": "missing, malformed, revoked or expired bearer token",
    "403": "the token's scope does not cover this route, or a pay token's budget cannot cover the payment",
    "404": "no such route or object",
    "409": "the node cannot do it now (not connected, no channel, insufficient funds, refused payment...)",
    "413": "the request body is larger than the API accepts (64 KiB)",
    "502": "the peer could not be reached or broke the protocol",
    "504": "the operation did not finish in time (it may still complete)",
}


@dataclass(frozen=True)
class Endpoint:
    """One route: method, path, the handler, and what it takes and returns."""

    method: str
    path: str
    operation_id: str
    summary: str
    handler: Callable[..., Awaitable[tuple[int, Any]]]
    response: Schema
    body: Schema | None = None
    status: int = 200
    path_params: Sequence[tuple[str, Schema]] = ()
    query_params: Sequence[tuple[str, Schema]] = ()


def openapi_document(endpoints: Sequence[Endpoint], scopes: Mapping[str, str] | None = None,
                     levels: Sequence[str] = ()) -> dict[str, Any]:
    """The document; with ``scopes`` (operation id -> scope) every operation says which token it needs.

    A client reading the document must see that a route needs, say, ``pay`` before a 403 tells it:
    the scope is in the operation's security requirement, in ``x-required-scope`` and in words.
    """
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "operationId": endpoint.operation_id,
            "summary": endpoint.summary,
            "responses": {
                str(endpoint.status): {"description": "success",
                                       "content": {"application/json": {"schema": endpoint.response}}},
                **{code: {"description": text, "content": {"application/json": {"schema": {
                    "$ref": "#/components/schemas/Error"}}}} for code, text in _ERRORS.items()},
            },
        }
        parameters = [{"name": name, "in": "path", "required": True, "schema": schema}
                      for name, schema in endpoint.path_params]
        parameters += [{"name": name, "in": "query", "required": False, "schema": schema}
                       for name, schema in endpoint.query_params]
        if parameters:
            operation["parameters"] = parameters
        if scopes is not None:
            scope = scopes[endpoint.operation_id]
            higher = levels[levels.index(scope) + 1:] if scope in levels else ()
            operation["x-required-scope"] = scope
            operation["security"] = [{"bearer": [scope]}]
            article = "an" if scope[0] in "aeiou" else "a"
            operation["description"] = (f"Needs {article} {scope} token" +
                                        (f" (or {', '.join(higher)}: scopes are levels)." if higher else "."))
        if endpoint.body is not None:
            operation["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": endpoint.body}}}
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Lightspeed node REST API", "version": __version__,
                 "description": "Control a running Lightspeed node (lightspeed node start). Every request "
                                "needs 'Authorization: Bearer <token>': the admin token from DATADIR/api_token, or a "
                                "scoped token (readonly, invoice, pay with a budget; lightspeed token create). "
                                "Amounts are integer millisatoshi (*_msat) or satoshi (*_sat); "
                                "binary values are lowercase hex."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {"schemas": {"Error": ERROR_SCHEMA},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
