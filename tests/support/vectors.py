"""Load spec test vectors from ``tests/vectors/*.json``.

Every file carries ``source`` (which BOLT and section) and ``commit`` (the
lightning/bolts commit it was taken from). A missing or unlabelled file fails
the test run: a vector test must never skip silently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTOR_DIR = Path(__file__).resolve().parent.parent / "vectors"
BOLTS_COMMIT = "a3772650d8ebc06acf457fcadf97968ebfc4dfff"


def load_vectors(name: str) -> Any:
    path = VECTOR_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"vector file {path} is missing")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "source" not in data or "commit" not in data:
        raise ValueError(f"vector file {path} must carry 'source' and 'commit'")
    return data
