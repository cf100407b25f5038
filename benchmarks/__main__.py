"""``python -m benchmarks NAME``: run ``benchmarks/NAME.py`` (``--list`` shows the names)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    names = sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "--list"):
        print("usage: python -m benchmarks NAME [ARGS...]\navailable: " + ", ".join(names))
        return
    name = sys.argv[1]
    if name not in names:
        sys.exit(f"error: unknown benchmark {name!r}; available: {', '.join(names)}")
    sys.argv = [str(HERE / f"{name}.py"), *sys.argv[2:]]
    runpy.run_path(str(HERE / f"{name}.py"), run_name="__main__")


if __name__ == "__main__":
    main()
