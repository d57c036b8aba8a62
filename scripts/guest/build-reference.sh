#!/usr/bin/env bash
# Builds hostme's reference guest from Debian packages, reproducibly and cached.
#
#   scripts/guest/build-reference.sh              # build (or reuse) ${HOSTME_GUEST_DIR:-.cache/guest}/hello
#   scripts/guest/build-reference.sh --force      # rebuild even if the stamp matches
#   scripts/guest/build-reference.sh --variant-dir DIR --extra-file /path/in/guest=content [...]
#       builds disk.raw and disk-1g.raw into DIR with the same content plus the
#       given files (added or replaced), and a guest.json for DIR; the kernel is
#       shared with the reference guest. Used to measure how many bytes change
#       when an image is rebuilt with one file changed.
#
# Outputs (in hello/): vmlinux (ELF, boots via PVH with -kernel), disk.raw
# (64 MiB ext4 root), disk-1g.raw (same files + /0filler/random.bin, 900 MiB of
# deterministic incompressible data that the guest never reads), guest.json.
#
# Inputs that decide the output: this script, the kernel and busybox-static
# package versions, and the e2fsprogs version (mke2fs). They are hashed into a
# stamp; when the stamp matches, the script does nothing and prints nothing.
set -euo pipefail
work=""

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPT="$REPO/scripts/guest/build-reference.sh"
GUEST_DIR="${HOSTME_GUEST_DIR:-$REPO/.cache/guest}"
mkdir -p "$GUEST_DIR" && GUEST_DIR="$(cd "$GUEST_DIR" && pwd)"   # guest.json holds absolute paths
OUT="$GUEST_DIR/hello"
DEB_DIR="$GUEST_DIR/debs"

KERNEL_META=linux-image-cloud-amd64
DISK_MIB=64
DISK1G_BYTES=$((1024 * 1024 * 1024))
FILLER_BYTES=$((900 * 1024 * 1024))
# Fixed identity so the filesystem bytes do not depend on when/where they are built.
FS_UUID=6f737468-6d65-4000-8000-68656c6c6f30
FS_HASH_SEED=6f737468-6d65-4000-8000-686173683030
FS_UUID_1G=6f737468-6d65-4000-8000-68656c6c6f31
EPOCH=1700000000
FILLER_KEY=686f73746d652d7265666572656e6365   # "hostme-reference"
FILLER_IV=00000000000000000000000000000000
CMDLINE="console=ttyS0 root=/dev/nvme0n1 rootfstype=ext4 ro quiet loglevel=3 panic=-1 i8042.noaux i8042.nokbd i8042.nopnp i8042.dumbkbd cryptomgr.notests tsc=reliable no_timer_check noreplace-smp"
MEMORY_MIB=256

force=0
variant_dir=""
extra_files=()
while (($#)); do
  case "$1" in
    --force) force=1 ;;
    --variant-dir) variant_dir="${2:?--variant-dir needs a directory}"; shift ;;
    --extra-file) extra_files+=("${2:?--extra-file needs path=content}"); shift ;;
    -h|--help) sed -n '2,18p' "$SCRIPT" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-reference: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if ((${#extra_files[@]})) && [ -z "$variant_dir" ]; then
  echo "build-reference: --extra-file needs --variant-dir (the reference guest itself never changes)" >&2
  exit 2
fi

say() { echo "build-reference: $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { say "missing '$1' (Debian package: $2)"; exit 1; }; }
need apt-get apt; need dpkg-deb dpkg; need mke2fs e2fsprogs; need debugfs e2fsprogs
need lz4 lz4; need xz xz-utils; need zstd zstd; need openssl openssl; need sha256sum coreutils

# ---------------------------------------------------------------- inputs
kernel_pkg="$(apt-cache depends "$KERNEL_META" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)"
if [ -z "$kernel_pkg" ]; then
  # No apt metadata (e.g. a fresh container): keep using a complete earlier build.
  if [ "$force" = 0 ] && [ -z "$variant_dir" ] && [ -f "$OUT/stamp" ] && [ -f "$OUT/guest.json" ]; then exit 0; fi
  say "cannot resolve $KERNEL_META: run apt-get update"; exit 1
fi
pkg_version() { apt-cache policy "$1" | sed -n 's/^ *Candidate: //p' | head -n1; }
kernel_ver="$(pkg_version "$kernel_pkg")"
busybox_ver="$(pkg_version busybox-static)"
e2fs_ver="$(dpkg-query -W -f='${Version}' e2fsprogs 2>/dev/null || mke2fs -V 2>&1 | head -n1)"
[ -n "$kernel_ver" ] && [ "$kernel_ver" != "(none)" ] || { say "no candidate version for $kernel_pkg"; exit 1; }
[ -n "$busybox_ver" ] && [ "$busybox_ver" != "(none)" ] || { say "no candidate version for busybox-static"; exit 1; }

stamp_input="$(sha256sum "$SCRIPT" | cut -d' ' -f1) $kernel_pkg=$kernel_ver busybox-static=$busybox_ver e2fsprogs=$e2fs_ver"
stamp="$(printf '%s\n' "$stamp_input" | sha256sum | cut -d' ' -f1)"

ref_complete() {
  [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$stamp" ] &&
    [ -f "$OUT/vmlinux" ] && [ -f "$OUT/disk.raw" ] && [ -f "$OUT/disk-1g.raw" ] && [ -f "$OUT/guest.json" ]
}

# ---------------------------------------------------------------- helpers
# Downloads a .deb into the cache (never installs it) and prints its path.
fetch_deb() {
  local pkg="$1" ver="$2" f
  mkdir -p "$DEB_DIR"
  f="$(find "$DEB_DIR" -maxdepth 1 -name "${pkg}_*.deb" -print | while read -r c; do
         [ "$(dpkg-deb -f "$c" Version)" = "$ver" ] && echo "$c"; done | head -n1)"
  if [ -z "$f" ]; then
    (cd "$DEB_DIR" && apt-get download -q "$pkg=$ver" >/dev/null 2>&1) ||
      { say "apt-get download $pkg=$ver failed"; exit 1; }
    f="$(find "$DEB_DIR" -maxdepth 1 -name "${pkg}_*.deb" -print | while read -r c; do
           [ "$(dpkg-deb -f "$c" Version)" = "$ver" ] && echo "$c"; done | head -n1)"
  fi
  [ -n "$f" ] || { say "downloaded $pkg but cannot find the .deb"; exit 1; }
  echo "$f"
}

le32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
u8() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }

# bzImage -> vmlinux: the boot protocol header says where the compressed
# payload is (payload_offset at 0x248, payload_length at 0x24c, relative to
# the protected-mode code that starts after (setup_sects+1) 512-byte sectors).
# The first bytes of the payload identify the compressor.
extract_vmlinux() {
  local bz="$1" dst="$2" setup_sects poff plen start magic
  [ "$(od -An -c -j $((0x202)) -N4 "$bz" | tr -d ' ')" = "HdrS" ] || { say "$bz is not a bzImage"; exit 1; }
  setup_sects="$(u8 "$bz" $((0x1f1)))"; [ "$setup_sects" -ne 0 ] || setup_sects=4
  poff="$(le32 "$bz" $((0x248)))"; plen="$(le32 "$bz" $((0x24c)))"
  start=$(((setup_sects + 1) * 512 + poff))
  magic="$(od -An -tx1 -j "$start" -N6 "$bz" | tr -d ' \n')"
  payload() { tail -c +"$((start + 1))" "$bz" | head -c "$plen"; }
  case "$magic" in
    02214c18*)     payload | lz4 -dc >"$dst" 2>/dev/null || true ;;   # lz4 legacy frame
    fd377a585a00*) payload | xz -dc --single-stream >"$dst" ;;
    28b52ffd*)     payload | zstd -dcq >"$dst" ;;
    1f8b*)         payload | gzip -dc >"$dst" 2>/dev/null || true ;;   # trailing size word
    *) say "unknown kernel payload compression (magic $magic)"; exit 1 ;;
  esac
  [ "$(od -An -tx1 -N4 "$dst" | tr -d ' ')" = "7f454c46" ] || { say "extracted kernel is not an ELF file"; exit 1; }
}

# Builds the root directory tree (busybox + /etc + /init) in $1.
make_rootdir() {
  local root="$1" bb="$2" applet
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/hostme/rc.d,proc,sys,dev,tmp,root,mnt,run,var/log}
  chmod 1777 "$root/tmp"; chmod 700 "$root/root"
  install -m 0755 "$bb" "$root/bin/busybox"
  # Applet links where busybox says they live; /sbin/init is ours, not busybox init.
  for applet in $("$bb" --list-full | LC_ALL=C sort); do
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
# hostme reference guest init (PID 1). The kernel starts it with no open fds
# (no device nodes on disk, the cloud kernel does not automount devtmpfs):
# mount devtmpfs first, then attach the console.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
# No redirection here: /dev/null does not exist yet.
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
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
  add_network_client "$root"
}

# The overlay network client (hostme run --net, docs/net.md): the cloud
# kernel has virtio-net as modules, so the rc script loads them (a few ms
# without a NIC), then busybox udhcpc asks every NIC for an address and the
# script prints it on the console ("HOSTME-NET eth0 100.64.7.2 web.demo.hostme").
# /etc is read-only: resolv.conf lives on a tmpfs /run.
NET_MODULES="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
add_network_client() {
  local root="$1"
  ln -s /run/resolv.conf "$root/etc/resolv.conf"
  cat >"$root/etc/hostme/rc.d/50-net" <<EOF
#!/bin/sh
for m in $NET_MODULES; do
  [ -f /lib/modules/net/\$m.ko ] && insmod /lib/modules/net/\$m.ko 2>/dev/null
done
grep -q ' /run ' /proc/mounts || mount -t tmpfs -o mode=0755,size=1m tmpfs /run
ifconfig lo 127.0.0.1 up
for dev in /sys/class/net/eth*; do
  [ -e "\$dev" ] || continue
  udhcpc -i "\${dev##*/}" -s /etc/hostme/udhcpc.script -q -n -t 5 -T 2 2>/dev/null || echo "HOSTME-NET \${dev##*/} no address"
done
EOF
  chmod 0755 "$root/etc/hostme/rc.d/50-net"
  cat >"$root/etc/hostme/udhcpc.script" <<'EOF'
#!/bin/sh
# busybox udhcpc event script: configure the NIC from the lease, print it.
case "$1" in
  deconfig) ifconfig "$interface" 0.0.0.0 up ;;
  bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
    for r in $router; do route add default gw "$r" dev "$interface" 2>/dev/null; break; done
    { [ -n "$domain" ] && echo "search $domain"; for s in $dns; do echo "nameserver $s"; done; } >/run/resolv.conf
    [ -n "$hostname" ] && [ -n "$domain" ] && name="$hostname.$domain" || name="${hostname:-}"
    echo "HOSTME-NET $interface $ip $name"
    ;;
esac
exit 0
EOF
  chmod 0755 "$root/etc/hostme/udhcpc.script"
}

# Copies the virtio-net modules (flat, uncompressed in Debian's cloud kernel) from the kernel .deb.
add_net_modules() {
  local root="$1" kdeb="$2" m tmp
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/hostme-kmod.XXXXXX")"
  dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$tmp" --wildcards './lib/modules/*/kernel/drivers/net/*failover.ko' './lib/modules/*/kernel/net/core/failover.ko' \
    './lib/modules/*/kernel/drivers/net/virtio_net.ko' './lib/modules/*/kernel/drivers/virtio/virtio*.ko'
  mkdir -p "$root/lib/modules/net"
  for m in $NET_MODULES; do
    install -m 0644 "$(find "$tmp" -name "$m.ko" | head -n1)" "$root/lib/modules/net/$m.ko"
  done
  rm -rf "$tmp"
}

# Adds "path=content" files to a root tree.
add_extra_files() {
  local root="$1" spec p c
  shift
  for spec in "$@"; do
    p="${spec%%=*}"; c="${spec#*=}"
    [ "$p" != "$spec" ] && [ -n "$p" ] || { say "--extra-file wants path=content, got: $spec"; exit 2; }
    p="/${p#/}"
    mkdir -p "$root$(dirname "$p")"
    rm -f "$root$p"
    printf '%s\n' "$c" >"$root$p"
  done
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

write_guest_json() {
  local dir="$1" kernel="$2"
  cat >"$dir/guest.json" <<EOF
{
  "name": "hello",
  "kernel": "$kernel",
  "disk": "$dir/disk.raw",
  "disk1g": "$dir/disk-1g.raw",
  "cmdline": "$CMDLINE",
  "memoryMiB": $MEMORY_MIB,
  "cpus": 1,
  "arch": "x86_64",
  "kernelPackage": "$kernel_pkg=$kernel_ver",
  "busyboxPackage": "busybox-static=$busybox_ver"
}
EOF
}

# Builds disk.raw and disk-1g.raw into $1 (extra files from $extra_files).
build_disks() {
  local dst="$1" work="$2" bbdeb
  bbdeb="$(fetch_deb busybox-static "$busybox_ver")"
  mkdir -p "$work/bb"
  dpkg-deb -x "$bbdeb" "$work/bb"
  make_rootdir "$work/root" "$work/bb/bin/busybox"
  add_net_modules "$work/root" "$(fetch_deb "$kernel_pkg" "$kernel_ver")"
  if ((${#extra_files[@]})); then add_extra_files "$work/root" "${extra_files[@]}"; fi
  make_ext4 "$work/root" "$dst/disk.raw.tmp" "${DISK_MIB}M" "$FS_UUID"
  # The 1 GiB variant: same tree plus incompressible filler the guest never reads.
  # mke2fs -d (1.47) populates in sorted name order, so /0filler is allocated
  # right after lost+found: a changed file elsewhere does not shift its blocks.
  mkdir -p "$work/root/0filler"
  { openssl enc -aes-128-ctr -nosalt -K "$FILLER_KEY" -iv "$FILLER_IV" </dev/zero 2>/dev/null || true; } |
    head -c "$FILLER_BYTES" >"$work/root/0filler/random.bin"
  [ "$(stat -c %s "$work/root/0filler/random.bin")" = "$FILLER_BYTES" ] || { say "filler generation failed"; exit 1; }
  make_ext4 "$work/root" "$dst/disk-1g.raw.tmp" "$((DISK1G_BYTES / 1024))k" "$FS_UUID_1G"
  mv -f "$dst/disk.raw.tmp" "$dst/disk.raw"
  mv -f "$dst/disk-1g.raw.tmp" "$dst/disk-1g.raw"
}

build_reference() {
  local kdeb t0
  t0=$(date +%s)
  say "building reference guest in $OUT ($kernel_pkg $kernel_ver, busybox-static $busybox_ver)"
  mkdir -p "$OUT"
  rm -f "$OUT/stamp"
  work="$(mktemp -d "${TMPDIR:-/tmp}/hostme-guest.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  kdeb="$(fetch_deb "$kernel_pkg" "$kernel_ver")"
  mkdir -p "$work/kernel"
  dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$work/kernel" --wildcards './boot/vmlinuz-*'
  extract_vmlinux "$(ls "$work"/kernel/boot/vmlinuz-*)" "$OUT/vmlinux.tmp"
  mv -f "$OUT/vmlinux.tmp" "$OUT/vmlinux"
  build_disks "$OUT" "$work"
  write_guest_json "$OUT" "$OUT/vmlinux"
  printf '%s\n' "$stamp" >"$OUT/stamp"
  printf '%s\n' "$stamp_input" >"$OUT/stamp.inputs"
  rm -rf "$work"; trap - EXIT
  say "done in $(($(date +%s) - t0)) s"
}

if [ "$force" = 1 ] || ! ref_complete; then
  build_reference
fi

if [ -n "$variant_dir" ]; then
  mkdir -p "$variant_dir"
  variant_dir="$(cd "$variant_dir" && pwd)"
  work="$(mktemp -d "${TMPDIR:-/tmp}/hostme-variant.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  say "building variant in $variant_dir"
  build_disks "$variant_dir" "$work"
  write_guest_json "$variant_dir" "$OUT/vmlinux"
  rm -rf "$work"; trap - EXIT
fi
