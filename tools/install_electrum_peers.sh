#!/usr/bin/env bash
# Install the two Electrum versions the interop suite (tests/interop/) runs as live Lightning peers.
#
#  - Electrum 4.3.4 (static_remotekey channels): Debian's `electrum` + `python3-electrum`, run by
#    Debian's /usr/bin/python3. Installed with apt-get when missing (with libsecp256k1-1).
#  - Electrum 4.8.1 (anchor channels): the unmodified release tarball in ../shared/interop/ (no
#    registry serves it), unpacked into .cache/electrum-4.8.1/ with its own virtualenv holding its
#    dependencies from PyPI (pinned below; electrum-ecc uses Debian's libsecp256k1).
#
# Idempotent: a finished install leaves a stamp (tarball checksum + pinned requirements); a
# second run with the same inputs does nothing. Prints the two Electrum commands at the end.
# Usage: tools/install_electrum_peers.sh [CACHE_DIR]      (default: REPO/.cache)
# The tests look for 4.8.1 at REPO/.cache/electrum-4.8.1/ (or $LIGHTSPEED_ELECTRUM_481).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${1:-$repo/.cache}"
version=4.8.1
dest="$cache/electrum-$version"

# Pinned: the versions this suite was run with (Electrum 4.8.1's own requirements allow them).
requirements=(
    "aiorpcX==0.25.0" "aiohttp==3.14.5" "aiohttp_socks==0.12.0" "dnspython==2.9.2" "jsonpatch==1.48"
    "protobuf==7.36.2" "qrcode==8.2" "certifi==2026.10.19.post1" "attrs==26.1.0" "cryptography==51.0.1"
    "electrum-aionostr==0.1.0" "electrum-ecc==0.0.8"
)

# -- Debian's Electrum 4.3.4 -----------------------------------------------------------------------
need=()
for pkg in electrum python3-electrum libsecp256k1-1; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
    echo "== installing ${need[*]} (apt) =="
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
fi
/usr/bin/python3 -c "import electrum, electrum.version as v; assert v.ELECTRUM_VERSION == '4.3.4', v.ELECTRUM_VERSION"

# -- Electrum 4.8.1 from the release tarball ------------------------------------------------------
tarball="${LIGHTSPEED_ELECTRUM_TARBALL:-}"
if [[ -z "$tarball" ]]; then
    # CI: shared/ lies beside the clone. A git worktree: beside the main checkout.
    common="$(cd "$repo" && git rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)"
    for candidate in "$repo/../shared/interop/electrum-$version.tar.gz" \
                     ${common:+"$(dirname "$common")/../shared/interop/electrum-$version.tar.gz"}; do
        if [[ -f "$candidate" ]]; then tarball="$candidate"; break; fi
    done
fi
if [[ -z "$tarball" || ! -f "$tarball" ]]; then
    echo "error: electrum-$version.tar.gz not found in ../shared/interop/ (set LIGHTSPEED_ELECTRUM_TARBALL)" >&2
    exit 1
fi
stamp="$(sha256sum "$tarball" | cut -d' ' -f1) ${requirements[*]}"
if [[ -f "$dest/.installed" && "$(cat "$dest/.installed")" == "$stamp" ]]; then
    echo "electrum $version: cached in $dest"
else
    echo "== unpacking electrum $version into $dest =="
    rm -rf "$dest" && mkdir -p "$dest"   # the stamp is written last: an interrupted install is redone
    tar xzf "$tarball" -C "$dest"
    [[ -x "$dest/electrum-$version/run_electrum" ]] || { echo "error: no run_electrum in $tarball" >&2; exit 1; }
    python3 -m venv "$dest/venv"
    ELECTRUM_ECC_DONT_COMPILE=1 "$dest/venv/bin/pip" install -q --disable-pip-version-check "${requirements[@]}" 2>&1 \
        | { grep -v "^WARNING: Location .* is ignored" || true; }
    echo "$stamp" > "$dest/.installed"
fi
"$dest/venv/bin/python" -W ignore -c "import sys; sys.path.insert(0, '$dest/electrum-$version'); import electrum_ecc, electrum.version as v; assert v.ELECTRUM_VERSION == '$version', v.ELECTRUM_VERSION"
echo "electrum 4.3.4: /usr/bin/python3 /usr/bin/electrum"
echo "electrum $version: $dest/venv/bin/python $dest/electrum-$version/run_electrum"
