#!/usr/bin/env bash
# Builds the Debian package from the existing release binary (target/release/portico; built
# only if missing), installs it with dpkg -i, verifies the systemd unit, the shipped config and
# the man page, then purges it. Exits non-zero on the first failure. Needs root and the
# Debian packages dpkg, binutils, systemd (systemd-analyze) and man-db (man -w).
#
# Usage: scripts/package-test.sh [--bin PATH]   (e.g. a debug build for a quick run)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "package-test.sh: needs root (dpkg -i)" >&2
  exit 1
fi
for tool in systemd-analyze man dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "package-test.sh: needs $tool (Debian packages: systemd, man-db, dpkg)" >&2; exit 1; }
done
if dpkg-query -W -f='${Status}' portico 2>/dev/null | grep -q installed; then
  echo "package-test.sh: a portico package is already installed; not touching it" >&2
  exit 1
fi

deb=$(scripts/package.sh "$@")
echo "== built $deb" >&2
dpkg-deb --info "$deb" >&2

# The declared libc floor covers what the binary needs: its newest GLIBC_x.y symbol version,
# and 2.36 when it is linked with packed relocations (GLIBC_ABI_DT_RELR).
floor=$(dpkg-deb -f "$deb" Depends | sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p')
tmpbin=$(mktemp -d)
dpkg-deb -x "$deb" "$tmpbin"
need=$(objdump -T "$tmpbin/usr/bin/portico" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
if readelf -V "$tmpbin/usr/bin/portico" | grep -q GLIBC_ABI_DT_RELR; then
  need=$(printf '%s\n2.36\n' "$need" | sort -V | tail -1)
fi
rm -rf "$tmpbin"
if [ "$(printf '%s\n%s\n' "$need" "$floor" | sort -V | tail -1)" != "$floor" ]; then
  echo "package-test.sh: Depends says libc6 >= $floor, the binary needs $need" >&2
  exit 1
fi
echo "== libc6 >= $floor (binary needs $need)" >&2

cleanup() { dpkg --purge portico >/dev/null 2>&1 || true; }
trap cleanup EXIT

# Docker-style images may exclude /usr/share/man from dpkg; this test checks the page ships.
dpkg --path-include='/usr/share/man/*' -i "$deb"

echo "== systemd-analyze verify" >&2
# Only this unit's own problems count (not those of units it refers to on a minimal system).
verify=$(systemd-analyze verify /lib/systemd/system/portico.service 2>&1) || {
  echo "$verify" >&2
  exit 1
}
if printf '%s\n' "$verify" | grep -i 'portico.service' >&2; then
  echo "package-test.sh: systemd-analyze found problems in portico.service" >&2
  exit 1
fi
for directive in 'User=portico' 'AmbientCapabilities=CAP_NET_BIND_SERVICE' 'ExecReload=/bin/kill -HUP $MAINPID' \
  'ProtectSystem=strict' 'NoNewPrivileges=yes' 'Restart=on-failure' 'LimitNOFILE=1048576' 'StateDirectory=portico'; do
  grep -qxF "$directive" /lib/systemd/system/portico.service || { echo "unit lacks $directive" >&2; exit 1; }
done

echo "== portico check /etc/portico" >&2
portico check /etc/portico
getent passwd portico >/dev/null || { echo "no portico user" >&2; exit 1; }
grep -qx /etc/portico/portico.yaml /var/lib/dpkg/info/portico.conffiles

echo "== man -w portico" >&2
man -w portico
bash -n /usr/share/bash-completion/completions/portico
portico version

echo "== purge" >&2
trap - EXIT
dpkg --purge portico
if [ -e /usr/bin/portico ] || [ -e /etc/portico/portico.yaml ]; then
  echo "package-test.sh: files left after purge" >&2
  exit 1
fi
echo "package-test.sh: ok" >&2
