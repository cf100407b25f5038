"""The CLI's REST client (``lightspeed.api.client``) on the standard library, and what CLI commands import.

Every CLI command is a new Python process, and the daemon tests run hundreds of them: importing
httpx (httpcore, trio, and httpx's own command line with rich and pygments) was most of a
command's CPU, and ``chain mine`` imported the whole daemon and node to open a chain file. These
tests keep those imports out, and hold the client to what it answered with httpx: the request
it sends (token, JSON body, query), the daemon's JSON errors, and a clear line for a daemon that
is not there, answers garbage, hangs up, or does not answer in time. The servers are real
loopback sockets; the daemon paths themselves run in tests/test_daemon.py and the CLI tests.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lightspeed.api.client import ApiCallError, ApiClient
from lightspeed.errors import UsageError

TOKEN = "cd" * 16


def _imported_by(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code`` (a command's own imports)."""
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_a_cli_command_calling_the_daemon_imports_neither_httpx_nor_the_node() -> None:
    modules = _imported_by("import lightspeed.cli.main, lightspeed.api.client")
    assert not {"httpx", "httpcore", "rich", "lightspeed.node", "lightspeed.api.daemon"} & modules


def test_the_chain_commands_open_the_chain_file_without_the_daemon() -> None:
    modules = _imported_by("from lightspeed.api.chain_file import open_chain")
    assert "lightspeed.chain.regtest" in modules
    assert not {"lightspeed.api.daemon", "lightspeed.api.app", "lightspeed.node", "uvicorn", "httpx"} & modules


Reply = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]], list[Reply]]]:
    """A loopback HTTP server: each request is recorded, then answered by the next reply given."""
    seen: list[dict[str, Any]] = []
    replies: list[Reply] = []

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            seen.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                         "body": self.rfile.read(length)})
            replies.pop(0)(self)

        do_GET = do_POST = do_DELETE = _any

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", seen, replies
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _answer(status: int, body: bytes, content_type: str = "application/json") -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return reply


def test_the_request_carries_the_token_the_json_body_and_the_query(
        server: tuple[str, list[dict[str, Any]], list[Reply]]) -> None:
    url, seen, replies = server
    replies += [_answer(200, b'{"ok": true, "label": "caf\xc3\xa9"}'), _answer(200, b"[]")]
    client = ApiClient(url, TOKEN, timeout_s=10)
    assert client.call("POST", "/v1/invoices", {"amount_msat": 5, "description": "a book & café"}) == {
        "ok": True, "label": "café"}
    assert client.call("GET", "/v1/payments", params={"direction": "sent out", "x": "a&b=c"}) == []
    post, get = seen
    assert post["method"] == "POST" and post["path"] == "/v1/invoices"
    assert post["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert post["headers"]["Content-Type"] == "application/json"
    assert json.loads(post["body"]) == {"amount_msat": 5, "description": "a book & café"}
    assert get["method"] == "GET" and get["body"] == b""
    assert get["path"] == "/v1/payments?direction=sent+out&x=a%26b%3Dc"


def test_the_daemon_s_json_error_names_its_field_and_reason(
        server: tuple[str, list[dict[str, Any]], list[Reply]]) -> None:
    url, _seen, replies = server
    replies += [_answer(400, b'{"error": {"field": "amount_msat", "reason": "must be positive"}}'),
                _answer(503, b'{"detail": "busy"}')]
    client = ApiClient(url, TOKEN, timeout_s=10)
    with pytest.raises(ApiCallError) as refused:
        client.call("POST", "/v1/invoices", {"amount_msat": 0})
    assert (refused.value.status, refused.value.field, refused.value.reason) == (400, "amount_msat", "must be positive")
    assert str(refused.value) == "amount_msat: must be positive"
    with pytest.raises(ApiCallError) as unavailable:  # no error object: the status line's reason
        client.call("GET", "/v1/getinfo")
    assert (unavailable.value.status, unavailable.value.field, unavailable.value.reason) == (
        503, None, "Service Unavailable")


def test_an_answer_that_is_not_json_is_one_clear_line(server: tuple[str, list[dict[str, Any]], list[Reply]]) -> None:
    url, _seen, replies = server
    replies += [_answer(502, b"<html>bad gateway</html>", "text/html"), _answer(200, b"\xff\xfe not utf-8")]
    client = ApiClient(url, TOKEN, timeout_s=10)
    with pytest.raises(UsageError, match=r"^the daemon answered 502 without JSON$"):
        client.call("GET", "/v1/getinfo")
    with pytest.raises(UsageError, match=r"^the daemon answered 200 without JSON$"):
        client.call("GET", "/v1/getinfo")


def test_a_daemon_that_hangs_up_or_is_not_there(server: tuple[str, list[dict[str, Any]], list[Reply]]) -> None:
    url, _seen, replies = server

    def hang_up(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        handler.connection.shutdown(socket.SHUT_RDWR)

    replies.append(hang_up)
    with pytest.raises(UsageError, match=rf"^cannot talk to the daemon at {url}: \S"):
        ApiClient(url, TOKEN, timeout_s=10).call("GET", "/v1/getinfo")
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(UsageError, match=r"^the daemon is not running \(nothing answers at http://127\.0\.0\.1:\d+\); "
                                         r"start it with: lightspeed node start$"):
        ApiClient(f"http://127.0.0.1:{port}", TOKEN, timeout_s=10).call("GET", "/v1/getinfo")


def test_a_silent_daemon_is_given_up_after_the_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the kernel's backlog), never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(UsageError, match=rf"^the daemon at {url} did not answer within 1 s$"):
            ApiClient(url, TOKEN, timeout_s=1).call("GET", "/v1/getinfo")


def test_an_ipv6_daemon_is_reached_through_its_bracketed_address(tmp_path: Path) -> None:
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    body = b'{"node_id": "02ab"}'

    def answer_once() -> None:
        connection, _ = listener.accept()
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            assert request.startswith(b"GET /v1/getinfo HTTP/1.1\r\n")
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                               + str(len(body)).encode() + b"\r\n\r\n" + body)

    with listener:
        thread = threading.Thread(target=answer_once, daemon=True)
        thread.start()
        datadir = tmp_path / "node"
        datadir.mkdir()
        (datadir / "api_address").write_text(f"::1:{listener.getsockname()[1]}")  # as an older daemon wrote it
        (datadir / "api_token").write_text(TOKEN)
        assert ApiClient.from_datadir(datadir).call("GET", "/v1/getinfo") == {"node_id": "02ab"}
        thread.join(5)
