"""Every code block in README.md and docs/*.md runs, as written (issue 17).

The blocks are read with a CommonMark parser (markdown-it, which rich already brings), in order:

* ```` ```python ````: the block is a program, run in a subprocess (its own temporary directory).
* ```` ```sh ```` / ```` ```bash ````: run by ``bash -e -o pipefail`` from the checkout's root.
* ```` ```sh background ````: what the text says runs "in another terminal": every command line
  starts as a background process; the document's next blocks run once each has printed its
  first line on stdout (a daemon's ready line: what it says on stderr first, such as a new
  wallet's words, does not count), and the processes are stopped after the document's last
  block.
* ```` ```sh no-run ````: cannot run here by nature (installs from PyPI, runs the whole suite, needs
  a network or a venv of its own). Counted below so they cannot silently grow; each must still
  parse (``bash -n``) and every repository path it names must exist.
* ```` ```text ```` and ```` ```json ````: not code (diagrams, formats); JSON must parse.

Anything else, an unlabelled fence or an indented code block, fails: a reader cannot tell
whether it runs. Blocks of one document share ``HOME`` (a temporary directory, so ``~`` is
fresh), ``PATH`` starts with this Python's bin directory (``lightspeed`` and ``python3`` are
this checkout's) and ``PYTHONPATH`` is inherited.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"python", "sh", "bash"}
NOT_CODE = {"text", "json"}
FLAGS = {"no-run", "background"}
# Blocks that cannot run by nature, per document: change this only with the reason in the text.
EXPECTED_NO_RUN = {
    "README.md": 3,              # pip install from PyPI into a fresh venv; the whole test suite; the onion-message
                                 # tour (needs a four-node network: tests/test_onionmsg_daemons.py runs it)
    "docs/lnprototest.md": 1,    # builds its own venv from PyPI, then ~45 s of conformance tests
    "docs/interop-electrum.md": 1,  # starts Electrum daemons: the interop suite itself (minutes)
    "docs/probing.md": 1,        # runs the probe families of this very suite
    "docs/networks.md": 1,       # a node on signet through a public Electrum server (the Internet)
    "docs/wallet.md": 1,         # a restore from a backup needs a lost node and its peer (tests/test_channel_backup.py)
}
BLOCK_TIMEOUT_S = 180
READY_TIMEOUT_S = 60


@dataclass(frozen=True)
class Block:
    document: str
    line: int
    lang: str | None
    flags: frozenset[str]
    code: str

    def __str__(self) -> str:
        return f"{self.document}:{self.line} ({self.lang or 'no language'})"


def blocks(document: Path) -> list[Block]:
    name = str(document.relative_to(ROOT))
    found = []
    for token in MarkdownIt("commonmark").parse(document.read_text()):
        if token.type not in ("fence", "code_block"):
            continue
        words = token.info.split() if token.type == "fence" else []
        line = (token.map[0] + 1) if token.map else 0
        found.append(Block(name, line, words[0] if words else None, frozenset(words[1:]), token.content))
    return found


ALL_BLOCKS = [block for document in DOCUMENTS for block in blocks(document)]


def test_the_documents_have_blocks_and_every_block_says_what_it_is() -> None:
    assert sum(1 for b in ALL_BLOCKS if b.lang == "python" and b.document == "README.md") >= 4
    unlabelled = [str(b) for b in ALL_BLOCKS if b.lang not in RUNNABLE | NOT_CODE or not b.flags <= FLAGS]
    assert unlabelled == [], "label each block: python, sh, sh background, sh no-run, text or json"
    assert [str(b) for b in ALL_BLOCKS if b.flags and b.lang not in ("sh", "bash")] == []


def test_no_run_blocks_are_counted_parse_and_name_real_paths() -> None:
    counts: dict[str, int] = {}
    for block in ALL_BLOCKS:
        if "no-run" not in block.flags:
            continue
        counts[block.document] = counts.get(block.document, 0) + 1
        checked = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True, check=False)
        assert checked.returncode == 0, f"{block}: {checked.stderr}"
        for path in re.findall(r"(?<![\w./-])((?:tests|tools|docs|src|interop|benchmarks)/[\w./*-]+)", block.code):
            assert list(ROOT.glob(path.rstrip("."))), f"{block} names {path}, which does not exist"
    assert counts == EXPECTED_NO_RUN


def test_documents_that_run_side_by_side_listen_on_ports_of_their_own() -> None:
    """The documents run in parallel (pytest-xdist): two daemons told to listen on one port collide."""
    owners: dict[str, set[str]] = {}
    for block in ALL_BLOCKS:
        if block.lang in RUNNABLE and "no-run" not in block.flags:
            for port in re.findall(r"--listen \S*?:(\d+)", block.code):
                owners.setdefault(port, set()).add(block.document)
    assert owners, "no --listen found: the pattern is stale"
    assert {port: docs for port, docs in owners.items() if len(docs) > 1} == {}


def test_json_blocks_parse() -> None:
    for block in ALL_BLOCKS:
        if block.lang == "json":
            json.loads(block.code)


# -- running a document ----------------------------------------------------------------------------

@dataclass
class Session:
    """What the blocks of one document share: a fresh HOME, a work directory, background processes."""

    home: Path
    work: Path
    env: dict[str, str]
    background: list[subprocess.Popen[str]]

    def run(self, block: Block) -> None:
        if block.lang == "python":
            script = self.work / f"block_{block.line}.py"
            script.write_text(block.code)
            command, cwd = [sys.executable, str(script)], self.work
        else:
            command, cwd = ["bash", "-e", "-o", "pipefail", "-c", block.code], ROOT
        process = subprocess.Popen(command, cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
        try:
            out, err = process.communicate(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{block} did not finish within {BLOCK_TIMEOUT_S} s") from None
        finally:  # whatever the block started goes with it
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
        assert process.returncode == 0, f"{block} failed ({process.returncode}):\n{out}\n{err}"
        assert "Traceback" not in err, f"{block}:\n{err}"

    def start(self, block: Block) -> None:
        for number, line in enumerate(block.code.splitlines()):
            command = line.split("#", 1)[0].strip()
            if not command:
                continue
            log = self.work / f"background_{block.line}_{number}.stderr"
            with log.open("w") as stderr:  # the child keeps its own copy of the descriptor
                process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=ROOT, env=self.env, text=True,
                                           stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
            self.background.append(process)
            assert process.stdout is not None
            first = _first_line(process, READY_TIMEOUT_S)
            assert first, (f"{block}: `{command}` printed no ready line within {READY_TIMEOUT_S} s "
                           f"(exit {process.poll()}):\n{log.read_text()}")

    def stop(self) -> None:
        for process in reversed(self.background):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.background:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
            if process.stdout:
                process.stdout.close()


def _first_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if selector.select(timeout=0.2):
                return process.stdout.readline()
            if process.poll() is not None:
                return ""
    return ""


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("LIGHTSPEED_")}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONUNBUFFERED="1", COLUMNS="100")
    running = Session(home, work, env, [])
    try:
        yield running
    finally:
        running.stop()


def _documents_that_run() -> list[object]:
    params: list[object] = []
    for document in DOCUMENTS:
        name = str(document.relative_to(ROOT))
        if any(b.lang in RUNNABLE and "no-run" not in b.flags for b in blocks(document)):
            marks = [pytest.mark.slow] if name == "README.md" else []
            params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("document", _documents_that_run())
def test_the_blocks_of_a_document_run_as_written(document: str, session: Session) -> None:
    for block in blocks(ROOT / document):
        if block.lang not in RUNNABLE or "no-run" in block.flags:
            continue
        if "background" in block.flags:
            session.start(block)
        else:
            session.run(block)
