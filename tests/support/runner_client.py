"""Drive a :mod:`tests.support.node_runner` process: JSON commands in, answers by id, kill -9."""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port free right now (the runner binds it again after each restart)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunnerProcess:
    def __init__(self, datadir: Path, chain: Path, port: int = 0, fsync: bool = False,
                 profile: Path | None = None) -> None:
        self.datadir, self.chain, self.port, self.fsync = datadir, chain, port, fsync
        self.profile = profile  # cProfile stats file written by the runner at a clean stop
        self._ids = itertools.count()
        self.start()

    def start(self) -> None:
        cmd = [sys.executable, "-m", "tests.support.node_runner", "--datadir", str(self.datadir),
               "--chain", str(self.chain), "--port", str(self.port)]
        if not self.fsync:
            cmd.append("--no-fsync")
        if self.profile is not None:
            cmd += ["--profile", str(self.profile)]
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env,
                                     text=True, bufsize=1)
        self._answers: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.unanswered: list[dict[str, Any]] = []
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        ready = self._queue("ready").get(timeout=30)
        self.node_id, self.port = ready["node_id"], ready["port"]

    def _queue(self, request_id: str) -> queue.Queue[dict[str, Any]]:
        with self._lock:
            return self._answers.setdefault(request_id, queue.Queue())

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            answer = json.loads(line)
            self._queue(str(answer["id"])).put(answer)

    def send(self, cmd: str, **fields: Any) -> str:
        """Send a command without waiting; returns its id."""
        request_id = str(next(self._ids))
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": request_id, "cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        return request_id

    def answer(self, request_id: str, timeout: float = 30) -> dict[str, Any]:
        return self._queue(request_id).get(timeout=timeout)

    def call(self, cmd: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        answer = self.answer(self.send(cmd, **fields), timeout)
        if "error" in answer:
            raise AssertionError(f"{cmd}: {answer['error']}")
        return answer

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def restart(self) -> None:
        self.start()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_until(check: Any, timeout: float = 20, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {getattr(check, '__name__', check)}")
        time.sleep(interval)
