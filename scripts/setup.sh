#!/usr/bin/env bash
# Installs everything hostme needs on a Debian 12 machine, idempotently:
# Debian packages (QEMU, qemu-img, e2fsprogs, busybox, nbd tools, casync...),
# npm packages, and the compiled TypeScript. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  qemu-system-x86 qemu-utils qemu-block-extra e2fsprogs busybox-static
  nbdkit libnbd-bin casync seabios zstd cpio mtools iproute2 ca-certificates curl jq openssl lz4 xz-utils
  syslinux syslinux-common dosfstools fdisk chromium debootstrap tcpdump vde2 xdg-utils shared-mime-info
  xorriso isolinux aria2 ovmf grub-efi-amd64-bin grub-common
  wrk nginx-light fio
  # virt-v2v and a host kernel for its libguestfs appliance (src/export/v2v.test.ts)
  virt-v2v linux-image-amd64
)
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"

# The i686 guest (examples/hello-i686, built by scripts/guest/build-i686.sh)
# downloads i386 .debs (linux-image-686, busybox-static:i386) with apt-get
# download: they are unpacked, never installed, but apt must know the
# architecture.
need_update=0
if ! dpkg --print-foreign-architectures | grep -qx i386; then
  echo "hostme setup: enabling the i386 architecture for the i686 guest packages"
  $SUDO dpkg --add-architecture i386
  need_update=1
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})) || [ "$need_update" = 1 ]; then
  $SUDO apt-get update -qq || echo "hostme setup: apt-get update reported errors (continuing with the indexes it has)"
fi
if ((${#missing[@]})); then
  echo "hostme setup: installing Debian packages: ${missing[*]}"
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

echo "hostme setup: bundling the run page (dist-web/)"
bash scripts/build-web.sh
