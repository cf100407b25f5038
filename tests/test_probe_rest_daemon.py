"""Oversized request bodies against a real daemon's HTTP server (issue 11, item 11).

The body limit must hold where it matters: uvicorn on a real socket, where a
client decides how fast and how much it sends. A body announced too large is
refused from its headers, before a byte of it is sent; a chunked body (no
length announced) is refused as soon as what arrived passes the limit; and a
10 MB body does not stall the daemon for other clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lightspeed.api.datadir import Datadir
from lightspeed.api.guard import MAX_BODY_BYTES

TEN_MB = 10 * 1024 * 1024


@dataclass
class Api:
    host: str
    port: int
    token: str

    def head(self, extra: str) -> bytes:
        return (f"POST /v1/invoices HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer {self.token}\r\n"
                f"Content-Type: application/json\r\n{extra}\r\n").encode()

    def getinfo_seconds(self) -> float:
        started = time.monotonic()
        response = httpx.get(f"http://{self.host}:{self.port}/v1/getinfo",
                             headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        assert response.status_code == 200
        return time.monotonic() - started


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root: Path = tmp_path_factory.mktemp("rest-daemon")
    process = subprocess.Popen(
        [sys.executable, "-m", "lightspeed", "node", "start", "--datadir", str(root / "node"), "--listen",
         "127.0.0.1:0", "--api", "127.0.0.1:0", "--chain", str(root / "chain.sqlite")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        host, port = ready["api"].rsplit(":", 1)
        yield Api(host, int(port), Datadir(root / "node").token())
    finally:
        process.terminate()
        process.wait(10)


def response_within(sock: socket.socket, seconds: float) -> bytes:
    """The start of a response if one arrives within ``seconds``, else b""."""
    readable, _, _ = select.select([sock], [], [], seconds)
    return sock.recv(65536) if readable else b""


def whole_response(sock: socket.socket, start: bytes) -> tuple[bytes, bytes]:
    """(head, body) of a response whose first bytes are ``start``."""
    data = start
    sock.settimeout(5)
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def test_a_body_announced_too_large_is_refused_before_it_is_sent(api: Api) -> None:
    with socket.create_connection((api.host, api.port)) as sock:
        sock.sendall(api.head(f"Content-Length: {TEN_MB}\r\n"))  # the headers only
        answer = response_within(sock, 3)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
        body = json.loads(whole_response(sock, answer)[1])
    assert body == {"error": {"field": "body", "reason": f"is larger than {MAX_BODY_BYTES} bytes"}}


def test_a_chunked_body_is_refused_as_it_passes_the_limit(api: Api) -> None:
    chunk = b" " * 16384
    with socket.create_connection((api.host, api.port)) as sock:
        sock.sendall(api.head("Transfer-Encoding: chunked\r\n"))
        answer, sent = b"", 0
        while not answer and sent < 40:  # 640 KB: ten times the limit
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += 1
            answer = response_within(sock, 0.2)
    assert answer.startswith(b"HTTP/1.1 413 "), (sent, answer[:100])
    assert sent * len(chunk) <= MAX_BODY_BYTES + 3 * len(chunk)  # refused as the limit passed, not at the end


def test_a_ten_megabyte_body_does_not_stall_other_clients(api: Api) -> None:
    payload = json.dumps({"amount_msat": 1, "description": "x" * TEN_MB}).encode()
    answers: list[bytes] = []

    def upload() -> None:
        with socket.create_connection((api.host, api.port)) as sock:
            sock.sendall(api.head(f"Content-Length: {len(payload)}\r\n"))
            with contextlib.suppress(OSError):  # the server answered and closed: the rest is not wanted
                sock.sendall(payload)
            answers.append(response_within(sock, 5))

    uploader = threading.Thread(target=upload)
    uploader.start()
    worst = max(api.getinfo_seconds() for _ in range(20))
    uploader.join(10)
    assert answers and answers[0].startswith(b"HTTP/1.1 413 "), answers
    assert worst < 0.5, f"getinfo took {worst:.2f} s while a 10 MB body came in"
