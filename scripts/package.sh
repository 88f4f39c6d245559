#!/usr/bin/env bash
# Builds the Debian package target/debian/portico_VERSION_ARCH.deb with dpkg-deb:
#   /usr/bin/portico (stripped), man pages, bash/zsh/fish completions, /etc/portico/portico.yaml
#   (conffile), the hardened systemd unit, a logrotate rule.
# dpkg-deb rather than cargo-deb: it is already on every Debian machine (no minutes-long
# `cargo install`), and the package's few files are listed here in one place.
#
# Usage: scripts/package.sh [--bin PATH] [--out DIR]
#   --bin  the binary to package (default target/release/portico, built if missing)
#   --out  where the .deb goes (default target/debian)
# Prints the path of the .deb on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=target/release/portico
out=target/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: scripts/package.sh [--bin PATH] [--out DIR]" >&2; exit 2 ;;
  esac
done
for tool in dpkg-deb strip objdump gzip; do
  command -v "$tool" >/dev/null || { echo "package.sh: needs $tool (Debian: dpkg, binutils, gzip)" >&2; exit 1; }
done
if [ ! -x "$bin" ]; then
  if [ "$bin" = target/release/portico ]; then
    echo "package.sh: no release binary; building it (cargo build --release -p portico)" >&2
    cargo build --release -p portico >&2
  else
    echo "package.sh: $bin is not an executable" >&2
    exit 1
  fi
fi

version=$("$bin" version | awk '{print $2}')
arch=$(dpkg --print-architecture)
[ -n "$version" ] || { echo "package.sh: cannot read the version from $bin" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
install -d "$root/DEBIAN" "$root/usr/bin" "$root/usr/share/man/man1" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/fish/vendor_completions.d" "$root/etc/portico" "$root/etc/logrotate.d" \
  "$root/lib/systemd/system" "$root/usr/share/doc/portico"

install -m 0755 "$bin" "$root/usr/bin/portico"
strip --strip-unneeded "$root/usr/bin/portico"
# Generated from the binary's own CLI definition, so they always match it.
"$bin" man "$stage/man"
for page in "$stage"/man/*.1; do
  gzip -9n < "$page" > "$root/usr/share/man/man1/$(basename "$page").gz"
done
"$bin" completions bash > "$root/usr/share/bash-completion/completions/portico"
"$bin" completions zsh > "$root/usr/share/zsh/vendor-completions/_portico"
"$bin" completions fish > "$root/usr/share/fish/vendor_completions.d/portico.fish"
install -m 0644 scripts/debian/portico.yaml "$root/etc/portico/portico.yaml"
install -m 0644 scripts/debian/logrotate "$root/etc/logrotate.d/portico"
install -m 0644 scripts/debian/portico.service "$root/lib/systemd/system/portico.service"
install -m 0755 scripts/debian/postinst scripts/debian/prerm scripts/debian/postrm "$root/DEBIAN/"
printf '/etc/portico/portico.yaml\n/etc/logrotate.d/portico\n' > "$root/DEBIAN/conffiles"
{
  echo "Portico $version, packaged from its source repository (see README.md)."
  echo
  echo "License: Apache-2.0"
  echo "On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0."
} > "$root/usr/share/doc/portico/copyright"
gzip -9n < README.md > "$root/usr/share/doc/portico/README.md.gz"

# Shared libraries: libc (the newest symbol version the binary uses) and libgcc_s.
glibc=$(objdump -T "$root/usr/bin/portico" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
# Packed relative relocations (crates/portico/build.rs) need the loader of glibc 2.36: the
# binary then requires the version GLIBC_ABI_DT_RELR, which names no number of its own.
if readelf -V "$root/usr/bin/portico" | grep -q 'GLIBC_ABI_DT_RELR'; then
  glibc=$(printf '%s\n2.36\n' "${glibc:-2.34}" | sort -V | tail -1)
fi
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: portico
Version: $version
Architecture: $arch
Maintainer: Portico maintainers <portico@localhost>
Installed-Size: $size
Depends: libc6 (>= ${glibc:-2.34}), libgcc-s1, passwd
Section: net
Priority: optional
Description: L7 edge proxy and its own control plane in one binary
 Portico terminates TLS, speaks HTTP/1.1, HTTP/2, gRPC and WebSocket, routes by host,
 path, method, headers and query, balances load, applies deadlines, retries, circuit
 breakers, health checks, outlier detection and rate limits, and reloads its declarative
 YAML configuration live without dropping requests.
CONTROL

mkdir -p "$out"
deb="$out/portico_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
