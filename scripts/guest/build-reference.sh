#!/usr/bin/env bash
# Builds hostme's reference guest with `hostme build`, reproducibly and cached:
# examples/hello/hostme.json (busybox on Debian's cloud kernel, 64 MiB disk)
# and examples/hello-1g/hostme.json (the same files on a 1 GiB disk, plus
# /0filler/random.bin: 900 MiB of deterministic incompressible data that the
# guest never reads). Kernel extraction, modules and the reproducible ext4 are
# hostme build's (docs/build.md); this script only names the outputs.
#
#   scripts/guest/build-reference.sh              # build (or reuse) ${HOSTME_GUEST_DIR:-.cache/guest}/hello
#   scripts/guest/build-reference.sh --force      # rebuild even if the stamps match
#   scripts/guest/build-reference.sh --variant-dir DIR --extra-file /path/in/guest=content [...]
#       builds disk.raw and disk-1g.raw into DIR with the same content plus the
#       given files (added or replaced), and a guest.json for DIR; the kernel is
#       shared with the reference guest. Used to measure how many bytes change
#       when an image is rebuilt with one file changed.
#
# Outputs (in hello/): guest.json {kernel, disk, disk1g, cmdline, memoryMiB,
# cpus, arch} with absolute paths, and for scripts: vmlinux (the ELF kernel,
# booted through PVH with -kernel), disk.raw and disk-1g.raw. The builds live
# in hello/ and hello-1g/ (build-example.sh: a stamp of the inputs; when it
# matches, nothing is done and nothing printed).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPT="$REPO/scripts/guest/build-reference.sh"
GUEST_DIR="${HOSTME_GUEST_DIR:-$REPO/.cache/guest}"
mkdir -p "$GUEST_DIR" && GUEST_DIR="$(cd "$GUEST_DIR" && pwd)"   # guest.json holds absolute paths
OUT="$GUEST_DIR/hello"

force=()
variant_dir=""
extra_files=()
while (($#)); do
  case "$1" in
    --force) force=(--force) ;;
    --variant-dir) variant_dir="${2:?--variant-dir needs a directory}"; shift ;;
    --extra-file) extra_files+=("${2:?--extra-file needs path=content}"); shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SCRIPT"; exit 0 ;;
    *) echo "build-reference: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if ((${#extra_files[@]})) && [ -z "$variant_dir" ]; then
  echo "build-reference: --extra-file needs --variant-dir (the reference guest itself never changes)" >&2
  exit 2
fi
say() { echo "build-reference: $*" >&2; }

HOSTME_BUILD_WRAPPER="$SCRIPT" bash "$REPO/scripts/guest/build-example.sh" hello "${force[@]}"
HOSTME_BUILD_WRAPPER="$SCRIPT" bash "$REPO/scripts/guest/build-example.sh" hello-1g "${force[@]}"

# guest.json: the 64 MiB build's description plus the 1 GiB disk (loadReferenceGuest() reads it).
guest_json() { # DIR DISK DISK1G KERNEL
  node -e '
    const [dir, disk, disk1g, kernel] = process.argv.slice(1);
    const fs = require("fs");
    const image = JSON.parse(fs.readFileSync(process.env.IMAGE_JSON, "utf8"));
    const guest = { name: "hello", kernel, disk, disk1g, cmdline: image.cmdline, memoryMiB: image.memoryMiB, cpus: image.cpus, arch: image.arch, diskSha256: image.diskSha256 };
    fs.writeFileSync(`${dir}/guest.json.tmp`, JSON.stringify(guest, null, 2) + "\n");
    fs.renameSync(`${dir}/guest.json.tmp`, `${dir}/guest.json`);
  ' "$@"
}
IMAGE_JSON="$OUT/image.json" guest_json "$OUT" "$OUT/disk.raw" "$GUEST_DIR/hello-1g/disk.raw" "$OUT/kernel"
ln -sfn "$OUT/kernel" "$OUT/vmlinux"
ln -sfn "$GUEST_DIR/hello-1g/disk.raw" "$OUT/disk-1g.raw"

[ -n "$variant_dir" ] || exit 0
# The variant: copies of both examples with the extra files in hello's rootfs (hello-1g reads it too).
mkdir -p "$variant_dir" && variant_dir="$(cd "$variant_dir" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/hostme-variant.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -a "$REPO/examples/hello" "$REPO/examples/hello-1g" "$work/"
for spec in "${extra_files[@]}"; do
  p="${spec%%=*}"; c="${spec#*=}"
  [ "$p" != "$spec" ] && [ -n "$p" ] || { say "--extra-file wants path=content, got: $spec"; exit 2; }
  p="/${p#/}"
  mkdir -p "$work/hello/rootfs$(dirname "$p")"
  printf '%s\n' "$c" >"$work/hello/rootfs$p"
done
say "building variant in $variant_dir"
key="$work/publisher.key"
node "$REPO/bin/hostme.js" keygen "$key" >/dev/null
for name in hello hello-1g; do
  node "$REPO/bin/hostme.js" build "$work/$name/hostme.json" --repo "$work/repo-$name" --key "$key" \
    --cache-dir "${HOSTME_BUILD_CACHE:-$REPO/.cache/build}" --out "$work/out-$name" --json >/dev/null
done
mv -f "$work/out-hello/disk.raw" "$variant_dir/disk.raw"
mv -f "$work/out-hello-1g/disk.raw" "$variant_dir/disk-1g.raw"
IMAGE_JSON="$work/out-hello/image.json" guest_json "$variant_dir" "$variant_dir/disk.raw" "$variant_dir/disk-1g.raw" "$OUT/kernel"
