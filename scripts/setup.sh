#!/usr/bin/env bash
# Installs everything hostme needs on a Debian 12 machine, idempotently:
# Debian packages (QEMU, qemu-img, e2fsprogs, busybox, nbd tools, casync...),
# npm packages, and the compiled TypeScript. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 qemu-utils qemu-block-extra e2fsprogs busybox-static
  nbdkit libnbd-bin casync seabios zstd cpio mtools iproute2 ca-certificates curl jq openssl lz4 xz-utils
  syslinux syslinux-common dosfstools fdisk
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "hostme setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=node_modules/.hostme-install-stamp
if [ ! -f "$stamp" ] || [ package.json -nt "$stamp" ] || { [ -f package-lock.json ] && [ package-lock.json -nt "$stamp" ]; }; then
  echo "hostme setup: installing npm packages"
  npm install --no-audit --no-fund --loglevel=error
  touch "$stamp"
fi

echo "hostme setup: compiling TypeScript"
npx tsc -p tsconfig.json
