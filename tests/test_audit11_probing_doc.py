"""docs/probing.md lists the probes that are really in the suite, each with a command to run it
(issue 11, "Done means": a "how we probe" section).

The documents test (tests/test_docs17_blocks.py) checks the paths in the ``sh no-run`` block
exist; this checks the other way round and the prose too: every test file the text names exists
and is run by one of the block's commands, every probe family the issue asks for has its
section, and every probe file in tests/ is named (a probe added later must be documented).
"""

from __future__ import annotations

import re
from pathlib import Path

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "probing.md"
# Files that are probes by their name, or by what they do (disk faults, kill -9, hostile clients).
PROBE_FILES = ["test_probe_*.py", "test_*faults*.py", "test_crash_*.py", "test_multihop_crash.py",
               "test_chain_locked.py", "test_micro_safety_*.py"]
SECTIONS = ["REST fuzz from the OpenAPI document", "Hostile peers", "Connection floods", "Disk faults",
            "A paid API under attack", "kill -9 loops"]


def _text() -> str:
    return DOC.read_text()


def _commands() -> list[str]:
    fences = [t for t in MarkdownIt("commonmark").parse(_text()) if t.type == "fence"]
    return [line for t in fences if t.info.split()[:2] == ["sh", "no-run"] for line in t.content.splitlines()]


def _named(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w./-])(tests/[\w./*-]+\.py)", text))


def test_the_probe_families_of_the_issue_each_have_a_section() -> None:
    headings = re.findall(r"^## (.+)$", _text(), flags=re.MULTILINE)
    assert [s for s in SECTIONS if s not in headings] == []


def test_every_test_file_the_text_names_exists_and_a_command_runs_it() -> None:
    commands = " ".join(_commands())
    run = {path for pattern in _named(commands) for path in map(str, ROOT.glob(pattern))}
    for name in _named(_text()):
        files = list(ROOT.glob(name))
        assert files, f"docs/probing.md names {name}, which does not exist"
        assert {str(f) for f in files} <= run, f"no command in docs/probing.md runs {name}"


def test_every_probe_in_the_suite_is_documented() -> None:
    named = {path.name for pattern in _named(_text()) for path in ROOT.glob(pattern)}
    probes = {path.name for pattern in PROBE_FILES for path in (ROOT / "tests").glob(pattern)}
    assert len(probes) >= 12
    assert sorted(probes - named) == []
