#!/usr/bin/env bash
# Dependency policy check (issue 9): licences, bans (wildcards, duplicates as warnings) and
# sources with cargo-deny and deny.toml. Works offline. Advisories need the RustSec database,
# cloned from GitHub: run `scripts/deny.sh --advisories` where GitHub is reachable.
# Not part of scripts/test.sh: installing cargo-deny from crates.io compiles it (~10 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deny >/dev/null 2>&1 || cargo install --locked cargo-deny
if [ "${1:-}" = "--advisories" ]; then
  exec cargo deny check
fi
exec cargo deny --offline check licenses bans sources
