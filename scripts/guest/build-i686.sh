#!/usr/bin/env bash
# Builds hostme's i686 reference guest (boots in v86, in the browser) from
# Debian i386 packages, reproducibly and cached.
#
#   scripts/guest/build-i686.sh            # build (or reuse) ${HOSTME_GUEST_DIR:-.cache/guest}/hello-i686
#   scripts/guest/build-i686.sh --force    # rebuild even if the stamp matches
#
# Outputs (in hello-i686/): vmlinuz (the Debian 686 bzImage, as shipped),
# initrd.img (gzip cpio: static busybox + the disk/ext4 modules, loaded in
# dependency order, then mounts /dev/sda and switch_root), disk.raw (64 MiB
# ext4 root: busybox, /init prints HOSTME-READY then a shell on the console,
# and /0filler/random.bin, 24 MiB of deterministic incompressible data the
# guest never reads),
# guest.json.
#
# Needs the i386 architecture enabled (dpkg --add-architecture i386 &&
# apt-get update; scripts/setup.sh does it). Packages are downloaded with
# apt-get download and unpacked with dpkg-deb -x, never installed.
#
# Inputs that decide the output: this script, the kernel and busybox-static:i386
# package versions, and the e2fsprogs/cpio/gzip versions. They are hashed into
# a stamp; when the stamp matches, the script does nothing and prints nothing.
set -euo pipefail
work=""

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPT="$REPO/scripts/guest/build-i686.sh"
GUEST_DIR="${HOSTME_GUEST_DIR:-$REPO/.cache/guest}"
mkdir -p "$GUEST_DIR" && GUEST_DIR="$(cd "$GUEST_DIR" && pwd)"   # guest.json holds absolute paths
OUT="$GUEST_DIR/hello-i686"
DEB_DIR="$GUEST_DIR/debs"

KERNEL_META=linux-image-686:i386
DISK_MIB=64
FS_UUID=6f737468-6d65-4000-8000-693638360030
FS_HASH_SEED=6f737468-6d65-4000-8000-693638366830
EPOCH=1700000000
# Incompressible filler the guest never reads, so "how much of the disk does a
# boot fetch" is measured against a disk with real content, not an empty one.
FILLER_BYTES=$((24 * 1024 * 1024))
FILLER_KEY=686f73746d652d693638362d66696c6c   # "hostme-i686-fill"
FILLER_IV=00000000000000000000000000000000
# Modules the initrd needs for an IDE disk (v86 emulates a PIIX controller) with ext4.
ROOT_MODULES="ata_piix sd_mod ext4 crc32c_generic"
CMDLINE="console=ttyS0 root=/dev/sda rootfstype=ext4 ro quiet loglevel=3 panic=-1 cryptomgr.notests tsc=reliable no_timer_check i8042.noaux"
MEMORY_MIB=128

force=0
while (($#)); do
  case "$1" in
    --force) force=1 ;;
    -h|--help) sed -n '2,20p' "$SCRIPT" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-i686: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "build-i686: $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { say "missing '$1' (Debian package: $2)"; exit 1; }; }
need apt-get apt; need dpkg-deb dpkg; need mke2fs e2fsprogs; need debugfs e2fsprogs
need cpio cpio; need gzip gzip; need sha256sum coreutils; need openssl openssl

# ---------------------------------------------------------------- inputs
kernel_pkg="$(apt-cache depends "$KERNEL_META" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)"
if [ -z "$kernel_pkg" ]; then
  if [ "$force" = 0 ] && [ -f "$OUT/stamp" ] && [ -f "$OUT/guest.json" ]; then exit 0; fi
  say "cannot resolve $KERNEL_META: run 'dpkg --add-architecture i386 && apt-get update'"; exit 1
fi
case "$kernel_pkg" in *:i386) ;; *) kernel_pkg="$kernel_pkg:i386" ;; esac
pkg_version() { apt-cache policy "$1" | sed -n 's/^ *Candidate: //p' | head -n1; }
kernel_ver="$(pkg_version "$kernel_pkg")"
busybox_ver="$(pkg_version busybox-static:i386)"
tools_ver="$(dpkg-query -W -f='${Package}=${Version} ' e2fsprogs cpio gzip 2>/dev/null || true)"
[ -n "$kernel_ver" ] && [ "$kernel_ver" != "(none)" ] || { say "no candidate version for $kernel_pkg"; exit 1; }
[ -n "$busybox_ver" ] && [ "$busybox_ver" != "(none)" ] || { say "no candidate version for busybox-static:i386"; exit 1; }

stamp_input="$(sha256sum "$SCRIPT" | cut -d' ' -f1) $kernel_pkg=$kernel_ver busybox-static:i386=$busybox_ver $tools_ver"
stamp="$(printf '%s\n' "$stamp_input" | sha256sum | cut -d' ' -f1)"

complete() {
  [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$stamp" ] &&
    [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ] && [ -f "$OUT/disk.raw" ] && [ -f "$OUT/guest.json" ]
}
if [ "$force" = 0 ] && complete; then exit 0; fi

# ---------------------------------------------------------------- helpers
# Downloads a .deb into the cache (never installs it) and prints its path.
fetch_deb() {
  local pkg="$1" ver="$2" base f
  base="${pkg%%:*}"
  mkdir -p "$DEB_DIR"
  pick() {
    find "$DEB_DIR" -maxdepth 1 -name "${base}_*_i386.deb" -print | while read -r c; do
      [ "$(dpkg-deb -f "$c" Version)" = "$ver" ] && echo "$c"; done | head -n1
  }
  f="$(pick)"
  if [ -z "$f" ]; then
    (cd "$DEB_DIR" && apt-get download -q "$pkg=$ver" >/dev/null 2>&1) ||
      { say "apt-get download $pkg=$ver failed"; exit 1; }
    f="$(pick)"
  fi
  [ -n "$f" ] || { say "downloaded $pkg but cannot find the .deb"; exit 1; }
  echo "$f"
}

# Prints the given modules and everything they depend on, dependencies first
# (from each module's own .modinfo "depends=" list; no depmod needed).
declare -A MOD_PATH=() MOD_DONE=()
MOD_ORDER=()
index_modules() {
  local dir="$1" f b
  while read -r f; do
    b="$(basename "$f" .ko)"; b="${b//-/_}"
    MOD_PATH[$b]="$f"
  done < <(find "$dir" -name '*.ko' | LC_ALL=C sort)
}
resolve_module() {
  local m="${1//-/_}" d
  [ -n "${MOD_DONE[$m]:-}" ] && return 0
  [ -n "${MOD_PATH[$m]:-}" ] || { say "module $m not found in the kernel package"; exit 1; }
  MOD_DONE[$m]=1
  for d in $(tr '\0' '\n' <"${MOD_PATH[$m]}" | sed -n 's/^depends=//p' | tr ',' ' '); do
    resolve_module "$d"
  done
  MOD_ORDER+=("$m")
}

# mke2fs -d copies atime/mtime/ctime from the source tree; ctime cannot be set
# from userland, so every inode's times are pinned afterwards with debugfs.
make_ext4() {
  local root="$1" img="$2" size="$3" uuid="$4" cmds
  rm -f "$img"
  find "$root" -exec touch -h -d "@$EPOCH" {} +
  LC_ALL=C E2FSPROGS_FAKE_TIME=$EPOCH mke2fs -q -F -t ext4 -b 4096 -m 0 -L hostme \
    -U "$uuid" -E "hash_seed=$FS_HASH_SEED,root_owner=0:0" -d "$root" "$img" "$size" >/dev/null
  cmds="$(mktemp)"
  (cd "$root" && find . | LC_ALL=C sort | sed 's|^\.||; s|^$|/|') | while read -r p; do
    for field in atime mtime ctime crtime; do printf 'sif "%s" %s @%s\n' "$p" "$field" "$EPOCH"; done
  done >"$cmds"
  E2FSPROGS_FAKE_TIME=$EPOCH debugfs -w -f "$cmds" "$img" >/dev/null 2>&1
  rm -f "$cmds"
}

# The root filesystem: busybox, /etc, /init (same behaviour as the x86_64 reference guest).
make_rootdir() {
  local root="$1" bb="$2" applet
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/hostme/rc.d,proc,sys,dev,tmp,root,mnt,run,var/log}
  chmod 1777 "$root/tmp"; chmod 700 "$root/root"
  install -m 0755 "$bb" "$root/bin/busybox"
  for applet in $(cd "$root" && "$bb" --list-full 2>/dev/null | LC_ALL=C sort || true); do
    case "$applet" in sbin/init|linuxrc|bin/busybox) continue ;; esac
    [ -e "$root/$applet" ] || [ -L "$root/$applet" ] && continue
    mkdir -p "$root/$(dirname "$applet")"
    ln -s /bin/busybox "$root/$applet"
  done
  printf 'hostme\n' >"$root/etc/hostname"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\n' >"$root/etc/group"
  printf '127.0.0.1 localhost\n127.0.1.1 hostme\n' >"$root/etc/hosts"
  printf '/dev/root / ext4 defaults 0 1\n' >"$root/etc/fstab"
  cat >"$root/etc/profile" <<'EOF'
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
PS1='hostme# '
EOF
  cat >"$root/init" <<'EOF'
#!/bin/sh
# hostme i686 reference guest init (PID 1), started by the initrd's switch_root.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
# The initrd hands over a mounted /dev; mount it when started without one.
[ -c /dev/console ] || mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/kernel ] || mount -t sysfs sysfs /sys
[ -r /etc/hostname ] && hostname -F /etc/hostname
for rc in /etc/hostme/rc.d/*; do
  [ -f "$rc" ] && [ -x "$rc" ] && "$rc"
done
echo HOSTME-READY
setsid cttyhack sh -l
sync
poweroff -f
EOF
  chmod 0755 "$root/init"
  ln -s /init "$root/sbin/init"
}

# The initrd: busybox, the modules (flat, in load order) and an /init that
# loads them, waits for the root disk and switches to it.
make_initrd() {
  local dir="$1" bb="$2" moddir="$3" out="$4" m i=0
  mkdir -p "$dir"/{bin,dev,proc,sys,newroot,lib/modules}
  install -m 0755 "$bb" "$dir/bin/busybox"
  ln -s busybox "$dir/bin/sh"
  : >"$dir/lib/modules/order"
  for m in "${MOD_ORDER[@]}"; do
    i=$((i + 1))
    cp "${MOD_PATH[$m]}" "$dir/lib/modules/$(printf '%02d' "$i")-$m.ko"
    printf '%02d-%s.ko\n' "$i" "$m" >>"$dir/lib/modules/order"
  done
  cat >"$dir/init" <<'EOF'
#!/bin/sh
# hostme i686 initrd: load the disk and ext4 modules, mount root, switch_root.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "initrd: loading modules"
while read -r m; do
  insmod "/lib/modules/$m" || echo "initrd: insmod $m failed"
done </lib/modules/order
root=/dev/sda; fstype=ext4; mode=ro
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=/dev/*) root="${arg#root=}" ;;
    rootfstype=*) fstype="${arg#rootfstype=}" ;;
    rw) mode=rw ;;
    ro) mode=ro ;;
  esac
done
n=0
while [ ! -b "$root" ] && [ "$n" -lt 300 ]; do sleep 0.1; n=$((n + 1)); done
echo "initrd: mounting $root"
if ! mount -t "$fstype" -o "$mode" "$root" /newroot; then
  echo "initrd: cannot mount $root; dropping to a shell"
  exec sh
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /init
echo "initrd: switch_root failed"
exec sh
EOF
  chmod 0755 "$dir/init"
  find "$dir" -exec touch -h -d "@$EPOCH" {} +
  (cd "$dir" && find . -mindepth 1 | LC_ALL=C sort |
    cpio --quiet -o -H newc -R 0:0 --reproducible) | gzip -n -9 >"$out"
}

# ---------------------------------------------------------------- build
t0=$(date +%s)
say "building i686 guest in $OUT ($kernel_pkg $kernel_ver, busybox-static:i386 $busybox_ver)"
mkdir -p "$OUT"
rm -f "$OUT/stamp"
work="$(mktemp -d "${TMPDIR:-/tmp}/hostme-i686.XXXXXX")"
trap 'rm -rf "$work"' EXIT
kdeb="$(fetch_deb "$kernel_pkg" "$kernel_ver")"
bbdeb="$(fetch_deb busybox-static:i386 "$busybox_ver")"
mkdir -p "$work/kernel" "$work/bb"
dpkg-deb -x "$kdeb" "$work/kernel"
dpkg-deb -x "$bbdeb" "$work/bb"
bb="$work/bb/bin/busybox"
kimg="$(ls "$work"/kernel/boot/vmlinuz-*)"
moddir="$(ls -d "$work"/kernel/lib/modules/*)"
index_modules "$moddir"
for m in $ROOT_MODULES; do resolve_module "$m"; done
say "initrd modules: ${MOD_ORDER[*]}"

make_initrd "$work/initrd" "$bb" "$moddir" "$OUT/initrd.img.tmp"
make_rootdir "$work/root" "$bb"
mkdir -p "$work/root/0filler"
{ openssl enc -aes-128-ctr -nosalt -K "$FILLER_KEY" -iv "$FILLER_IV" </dev/zero 2>/dev/null || true; } |
  head -c "$FILLER_BYTES" >"$work/root/0filler/random.bin"
[ "$(stat -c %s "$work/root/0filler/random.bin")" = "$FILLER_BYTES" ] || { say "filler generation failed"; exit 1; }
make_ext4 "$work/root" "$OUT/disk.raw.tmp" "${DISK_MIB}M" "$FS_UUID"
cp "$kimg" "$OUT/vmlinuz.tmp"
touch -d "@$EPOCH" "$OUT/vmlinuz.tmp"
mv -f "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
mv -f "$OUT/initrd.img.tmp" "$OUT/initrd.img"
mv -f "$OUT/disk.raw.tmp" "$OUT/disk.raw"
cat >"$OUT/guest.json" <<EOF
{
  "name": "hello-i686",
  "kernel": "$OUT/vmlinuz",
  "initrd": "$OUT/initrd.img",
  "disk": "$OUT/disk.raw",
  "cmdline": "$CMDLINE",
  "memoryMiB": $MEMORY_MIB,
  "cpus": 1,
  "arch": "i686",
  "kernelPackage": "$kernel_pkg=$kernel_ver",
  "busyboxPackage": "busybox-static:i386=$busybox_ver"
}
EOF
printf '%s\n' "$stamp" >"$OUT/stamp"
printf '%s\n' "$stamp_input" >"$OUT/stamp.inputs"
rm -rf "$work"; trap - EXIT
say "done in $(($(date +%s) - t0)) s"
