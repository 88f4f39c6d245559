#!/usr/bin/env bash
# Installs the real third-party HTTP/3 client for the HTTP/3 tests (crates/portico/tests/e2e/
# http3.rs): Python's `aioquic` from PyPI, once, into target/aioquic (`pip install --target`:
# nothing goes into any system Python). Run as root on a fresh Debian machine, it installs
# python3-pip first.
#
# On success prints the directory to put on PYTHONPATH (for AIOQUIC_PATH) and exits 0. On any
# failure explains why on stderr and exits 1.
#
# Environment: PYTHON (default python3), AIOQUIC_DIR (default target/aioquic).
set -uo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
dir="${AIOQUIC_DIR:-target/aioquic}"

fail() {
  echo "fetch-aioquic: $*" >&2
  exit 1
}

works() {
  PYTHONPATH="$dir" "$python" -c 'import aioquic.asyncio, aioquic.h3.connection' >/dev/null 2>&1
}

if ! works; then
  if ! "$python" -m pip --version >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      fail "'$python -m pip' does not work; install python3-pip (or run as root to have it installed)"
    fi
    echo "fetch-aioquic: '$python -m pip' does not work; installing python3-pip" >&2
    apt-get update -qq || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-upgrade \
      python3-pip >&2 || fail "apt-get install python3-pip failed"
    "$python" -m pip --version >/dev/null 2>&1 ||
      fail "'$python -m pip' still does not work after installing python3-pip"
  fi
  mkdir -p "$dir" || fail "cannot create $dir"
  echo "fetch-aioquic: installing aioquic from PyPI into $dir" >&2
  if ! "$python" -m pip install -q --disable-pip-version-check --only-binary=:all: \
      --target "$dir" --upgrade aioquic >&2; then
    fail "'pip install --target $dir aioquic' failed (output above)"
  fi
  works || fail "aioquic installed into $dir but does not import"
fi
echo "fetch-aioquic: $(PYTHONPATH="$dir" "$python" -c 'import aioquic; print("aioquic", aioquic.__version__)')" >&2
cd "$dir" && pwd
