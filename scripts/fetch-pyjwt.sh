#!/usr/bin/env bash
# Installs PyJWT and cryptography from PyPI into target/pyjwt (a `pip install --target` dir,
# never the system Python) for the JWT end-to-end tests (crates/portico/tests/e2e/edge_auth.rs):
# the tests make RSA and EC keys and sign tokens with a real JWT library on the client side.
#
# On success prints the directory's absolute path on stdout (for PYJWT_DIR) and exits 0. On
# any failure explains why on stderr and exits 1. Run as root on a fresh Debian machine, it
# installs python3-pip first.
#
# Environment: PYTHON (default python3), PYJWT_DIR (default target/pyjwt).
set -uo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
dir="${PYJWT_DIR:-target/pyjwt}"

fail() {
  echo "fetch-pyjwt: $*" >&2
  exit 1
}

if ! PYTHONPATH="$dir" "$python" -c 'import jwt, cryptography' >/dev/null 2>&1; then
  if ! "$python" -m pip --version >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
      fail "'$python -m pip' does not work; install python3-pip (or run as root to have it installed)"
    fi
    echo "fetch-pyjwt: '$python -m pip' does not work; installing python3-pip" >&2
    apt-get update -qq || fail "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-upgrade python3-pip >&2 \
      || fail "apt-get install python3-pip failed"
  fi
  mkdir -p "$dir" || fail "cannot create $dir"
  echo "fetch-pyjwt: installing PyJWT and cryptography into $dir" >&2
  "$python" -m pip install -q --disable-pip-version-check --target "$dir" --upgrade \
    'PyJWT>=2.8' 'cryptography>=41' >&2 || fail "'pip install --target $dir PyJWT cryptography' failed (output above)"
  PYTHONPATH="$dir" "$python" -c 'import jwt, cryptography' >&2 \
    || fail "PyJWT or cryptography does not import from $dir"
fi
(cd "$dir" && pwd)
