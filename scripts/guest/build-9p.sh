#!/usr/bin/env bash
# Builds hostme's folder-grant test guest (x86_64, for QEMU) from its build
# manifest, examples/hello-9p/hostme.json, with `hostme build`, cached. The
# reference guest's cloud kernel has no 9P (CONFIG_NET_9P is not set), so
# this one boots Debian's generic amd64 kernel with a generated initrd that
# loads nvme, ext4, virtio-net and the 9P client over TCP (9p, 9pnet,
# 9pnet_fd, netfs, fscache); the root is the same busybox userland as hello-i686.
#
#   scripts/guest/build-9p.sh            # build (or reuse) ${HOSTME_GUEST_DIR:-.cache/guest}/hello-9p
#   scripts/guest/build-9p.sh --force    # rebuild even if the stamp matches
#
# Outputs (in hello-9p/, from `hostme build --out`): kernel, initrd.img,
# disk.raw, image.json and guest.json (the same description), repo/.
# Inputs hashed into the stamp: the example directory, hostme's build code,
# the linux-image-amd64 and busybox-static versions, e2fsprogs/cpio/gzip.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPT="$REPO/scripts/guest/build-9p.sh"
EXAMPLE="$REPO/examples/hello-9p"
GUEST_DIR="${HOSTME_GUEST_DIR:-$REPO/.cache/guest}"
mkdir -p "$GUEST_DIR" && GUEST_DIR="$(cd "$GUEST_DIR" && pwd)"   # guest.json holds absolute paths
OUT="$GUEST_DIR/hello-9p"
CACHE="${HOSTME_BUILD_CACHE:-$REPO/.cache/build}"

force=0
while (($#)); do
  case "$1" in
    --force) force=1 ;;
    -h|--help) sed -n '2,22p' "$SCRIPT" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-9p: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "build-9p: $*" >&2; }
[ -f "$REPO/dist/build/build-image.js" ] || { say "hostme is not compiled: run npx tsc -p tsconfig.json (scripts/setup.sh does)"; exit 1; }

complete() { [ -f "$OUT/stamp" ] && [ -f "$OUT/guest.json" ] && [ -f "$OUT/kernel" ] && [ -f "$OUT/initrd.img" ] && [ -f "$OUT/disk.raw" ]; }

# ---------------------------------------------------------------- stamp
# One apt-cache call (each one re-reads every package list where apt keeps no
# cache, as in Debian's docker images): the meta package's version changes
# with every kernel upload, so it stands for the kernel package.
candidates="$(apt-cache policy linux-image-amd64 busybox-static 2>/dev/null |
  awk '/^[^ ]/ { pkg = $1; sub(/:$/, "", pkg) } /^ *Candidate:/ { printf "%s=%s ", pkg, $2 }')"
case "$candidates" in
  *linux-image-amd64*=[0-9]*busybox-static*=[0-9]*) ;;
  *)
    if [ "$force" = 0 ] && complete; then exit 0; fi   # no apt metadata: keep what is built
    say "apt knows no linux-image-amd64 / busybox-static: run apt-get update"; exit 1 ;;
esac
example_sum="$(cd "$REPO" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - examples/hello-9p | sha256sum | cut -d' ' -f1)"
code_sum="$(cd "$REPO/dist/build" && find . -name '*.js' ! -name '*.test.js' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
tools="$(dpkg-query -W -f='${Package}=${Version} ' e2fsprogs cpio gzip 2>/dev/null || true)"
stamp_input="example=$example_sum build=$code_sum $candidates$tools"
stamp="$(printf '%s\n' "$stamp_input" | sha256sum | cut -d' ' -f1)"
if [ "$force" = 0 ] && complete && [ "$(cat "$OUT/stamp")" = "$stamp" ]; then exit 0; fi

# ---------------------------------------------------------------- build
t0=$(date +%s)
say "building $OUT from examples/hello-9p/hostme.json"
mkdir -p "$OUT"
rm -f "$OUT/stamp" "$OUT/vmlinuz"   # vmlinuz: what earlier versions of this script wrote
hostme() { node "$REPO/bin/hostme.js" "$@"; }
[ -f "$OUT/publisher.key" ] || hostme keygen "$OUT/publisher.key" >/dev/null
hostme build "$EXAMPLE/hostme.json" --repo "$OUT/repo" --key "$OUT/publisher.key" --cache-dir "$CACHE" --out "$OUT" >&2
cp "$OUT/image.json" "$OUT/guest.json.tmp" && mv -f "$OUT/guest.json.tmp" "$OUT/guest.json"
printf '%s\n' "$stamp" >"$OUT/stamp"
printf '%s\n' "$stamp_input" >"$OUT/stamp.inputs"
say "done in $(($(date +%s) - t0)) s"
