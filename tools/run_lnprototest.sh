#!/usr/bin/env bash
# Run lnprototest (the BOLT authors' conformance suite) against Lightspeed; fail below 32 passes.
#
# The suite runs in a virtualenv of its own, built from PyPI and cached between runs
# (rebuilt only when its requirements change): lnprototest 0.0.7 pins pyln-proto<24, older
# than the project's, but runs unchanged on today's pyln packages, so it is installed with
# --no-deps beside them. Lightspeed itself is not installed there: the run imports this
# checkout's src/ (PYTHONPATH), so the cache serves any clone.
#
# Environment: LNPROTOTEST_VENV (the cached venv), LNPROTOTEST_TESTS (the suite's tests,
# default: ../shared/interop/lnprototest/tests, else the vendored copy in interop/lnprototest/tests), LNPROTOTEST_MIN_PASS (32),
# LIGHTSPEED_LNPROTOTEST_TIMEOUT (seconds the runner waits for one message, 30).
# Extra arguments go to pytest (e.g. -k init, -x).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${LNPROTOTEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lightspeed/lnprototest-venv}"
# The unmodified suite from ../shared when it is beside the checkout (as in CI), else the vendored copy.
shared_tests="$root/../shared/interop/lnprototest/tests"
if [[ -d "$shared_tests" ]]; then default_tests="$(cd "$shared_tests" && pwd)"; else default_tests="$root/interop/lnprototest/tests"; fi
tests="${LNPROTOTEST_TESTS:-$default_tests}"
min_pass="${LNPROTOTEST_MIN_PASS:-32}"

# The project's own runtime dependencies (from pyproject.toml), then the suite's (its README).
project_deps="$(python3 - "$root/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
EOF
)"
suite_deps='pytest
pyln-proto>=24
pyln-client
pyln-testing
pyln-bolt1
pyln-bolt2
pyln-bolt4
pyln-bolt7
python-bitcoinlib
crc32c'
suite_pkg='lnprototest==0.0.7'
stamp_text="$(python3 --version)
$project_deps
$suite_deps
--no-deps $suite_pkg"

if [[ ! -x "$venv/bin/python" || ! -f "$venv/.lightspeed-stamp" || "$(cat "$venv/.lightspeed-stamp")" != "$stamp_text" ]]; then
    echo "== building the lnprototest virtualenv in $venv =="
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
    mapfile -t reqs < <(printf '%s\n%s\n' "$project_deps" "$suite_deps")
    "$venv/bin/pip" install -q "${reqs[@]}"
    "$venv/bin/pip" install -q --no-deps "$suite_pkg"
    printf '%s' "$stamp_text" > "$venv/.lightspeed-stamp"  # written last: a broken build is redone
else
    echo "== lnprototest virtualenv: $venv (cached) =="
fi

report="$(mktemp -d)/lnprototest.xml"
echo "== lnprototest: $tests =="
start=$(date +%s)
set +e
PYTHONPATH="$root/src" "$venv/bin/python" -m pytest "$tests" --runner=lightspeed.testing.lnprototest.Runner \
    -q -rs -p no:cacheprovider --junitxml="$report" "$@"
status=$?
set -e
elapsed=$(( $(date +%s) - start ))
passed="$(python3 - "$report" <<'EOF'
import sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
print(sum(1 for c in cases if not any(ch.tag in ("failure", "error", "skipped") for ch in c)))
EOF
)"
echo "lnprototest: $passed passed (at least $min_pass required) in ${elapsed}s"
if (( status != 0 )); then
    echo "lnprototest: pytest failed (exit $status)" >&2
    exit 1
fi
if (( passed < min_pass )); then
    echo "lnprototest: only $passed passed, $min_pass required" >&2
    exit 1
fi
