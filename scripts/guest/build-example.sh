#!/usr/bin/env bash
# Builds one of hostme's small example guests with `hostme build`, cached:
# scripts/guest/build-reference.sh, build-i686.sh and build-9p.sh call it with
# their example's name (their headers say what each guest is for). Outputs in
# ${HOSTME_GUEST_DIR:-.cache/guest}/NAME: kernel, initrd.img (when the example
# has one), disk.raw, image.json, guest.json, repo/. The inputs that decide the output (the example
# directory, hostme's build code, the kernel and busybox package versions, the
# e2fsprogs/cpio/gzip versions) are hashed into a stamp; when it matches, the
# script does nothing and prints nothing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NAME="${1:?usage: build-example.sh NAME (hello | hello-1g | hello-i686 | hello-9p | debian-systemd) [--force]}"
shift
# The calling wrapper (scripts/guest/build-NAME.sh) documents itself: --help prints its header.
SCRIPT="${HOSTME_BUILD_WRAPPER:-${BASH_SOURCE[0]}}"
EXAMPLE="$REPO/examples/$NAME"
# The kernel meta package and busybox of each example (the meta package stands for the kernel in the stamp),
# whether it has an initrd, and the example directories it reads (hello-1g takes hello's files).
INITRD=1
SOURCES="examples/$NAME"
case "$NAME" in
  hello) PACKAGES="linux-image-cloud-amd64 busybox-static"; KERNEL_META=linux-image-cloud-amd64; APT_HINT="run apt-get update"; INITRD=0 ;;
  hello-1g) PACKAGES="linux-image-cloud-amd64 busybox-static"; KERNEL_META=linux-image-cloud-amd64; APT_HINT="run apt-get update"; INITRD=0; SOURCES="examples/hello examples/hello-1g" ;;
  hello-i686) PACKAGES="linux-image-686:i386 busybox-static:i386"; KERNEL_META=linux-image-686; APT_HINT="run 'dpkg --add-architecture i386 && apt-get update'"; SOURCES="examples/hello/net examples/hello-i686" ;;
  hello-9p) PACKAGES="linux-image-amd64 busybox-static"; KERNEL_META=linux-image-amd64; APT_HINT="run apt-get update"; SOURCES="examples/hello/net examples/hello-9p" ;;
  # Debian 12 minbase + systemd (debootstrap from Debian's mirror, ~6 min): the realistic guest of bench:boot-debian.
  debian-systemd) PACKAGES="linux-image-cloud-amd64 busybox-static"; KERNEL_META=linux-image-cloud-amd64; APT_HINT="run apt-get update" ;;
  *) echo "build-example: unknown example $NAME" >&2; exit 2 ;;
esac
GUEST_DIR="${HOSTME_GUEST_DIR:-$REPO/.cache/guest}"
mkdir -p "$GUEST_DIR" && GUEST_DIR="$(cd "$GUEST_DIR" && pwd)"   # guest.json holds absolute paths
OUT="$GUEST_DIR/$NAME"
CACHE="${HOSTME_BUILD_CACHE:-$REPO/.cache/build}"

force=0
while (($#)); do
  case "$1" in
    --force) force=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SCRIPT"; exit 0 ;;
    *) echo "build-${NAME#hello-}: unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "build-${NAME#hello-}: $*" >&2; }
[ -f "$REPO/dist/build/build-image.js" ] || { say "hostme is not compiled: run npx tsc -p tsconfig.json (scripts/setup.sh does)"; exit 1; }

complete() { [ -f "$OUT/stamp" ] && [ -f "$OUT/guest.json" ] && [ -f "$OUT/kernel" ] && { [ "$INITRD" = 0 ] || [ -f "$OUT/initrd.img" ]; } && [ -f "$OUT/disk.raw" ]; }

# ---------------------------------------------------------------- stamp
# One apt-cache call (each one re-reads every package list where apt keeps no
# cache, as in Debian's docker images): the meta package's version changes
# with every kernel upload, so it stands for the kernel package.
# shellcheck disable=SC2086 # PACKAGES is a word list
candidates="$(apt-cache policy $PACKAGES 2>/dev/null |
  awk '/^[^ ]/ { pkg = $1; sub(/:$/, "", pkg) } /^ *Candidate:/ { printf "%s=%s ", pkg, $2 }')"
case "$candidates" in
  *"$KERNEL_META"*=[0-9]*busybox-static*=[0-9]*) ;;
  *)
    if [ "$force" = 0 ] && complete; then exit 0; fi   # no apt metadata: keep what is built
    say "apt knows no $PACKAGES: $APT_HINT"; exit 1 ;;
esac
# shellcheck disable=SC2086 # SOURCES is a word list
example_sum="$(cd "$REPO" && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf - $SOURCES | sha256sum | cut -d' ' -f1)"
code_sum="$(cd "$REPO/dist/build" && find . -name '*.js' ! -name '*.test.js' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)"
tools="$(dpkg-query -W -f='${Package}=${Version} ' e2fsprogs cpio gzip 2>/dev/null || true)"
stamp_input="example=$example_sum build=$code_sum $candidates$tools"
stamp="$(printf '%s\n' "$stamp_input" | sha256sum | cut -d' ' -f1)"
if [ "$force" = 0 ] && complete && [ "$(cat "$OUT/stamp")" = "$stamp" ]; then exit 0; fi

# ---------------------------------------------------------------- build
t0=$(date +%s)
say "building $OUT from examples/$NAME/hostme.json"
mkdir -p "$OUT"
rm -f "$OUT/stamp" "$OUT/vmlinuz"   # vmlinuz: what earlier versions of this script wrote
# A stale build's repository holds the same NAME@VERSION with other content: publishing never rewrites it.
rm -rf "$OUT/repo"
hostme() { node "$REPO/bin/hostme.js" "$@"; }
[ -f "$OUT/publisher.key" ] || hostme keygen "$OUT/publisher.key" >/dev/null
hostme build "$EXAMPLE/hostme.json" --repo "$OUT/repo" --key "$OUT/publisher.key" --cache-dir "$CACHE" --out "$OUT" >&2
cp "$OUT/image.json" "$OUT/guest.json.tmp" && mv -f "$OUT/guest.json.tmp" "$OUT/guest.json"
printf '%s\n' "$stamp" >"$OUT/stamp"
printf '%s\n' "$stamp_input" >"$OUT/stamp.inputs"
say "done in $(($(date +%s) - t0)) s"
