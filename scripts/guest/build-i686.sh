#!/usr/bin/env bash
# Builds hostme's i686 reference guest (boots in v86, in the browser) from its
# build manifest, examples/hello-i686/hostme.json, with `hostme build`, cached.
#
#   scripts/guest/build-i686.sh            # build (or reuse) ${HOSTME_GUEST_DIR:-.cache/guest}/hello-i686
#   scripts/guest/build-i686.sh --force    # rebuild even if the stamp matches
#
# Outputs (in hello-i686/, from `hostme build --out`): kernel (the Debian 686
# bzImage, as shipped), initrd.img (generated: static busybox + the disk and
# ext4 modules in dependency order), disk.raw (64 MiB ext4 root with the
# 24 MiB filler the guest never reads), image.json and guest.json (the same
# description: absolute paths, cmdline, memoryMiB, arch; guest.json is the
# name the tests read), repo/ (the image as published, signed with
# publisher.key: `hostme serve` it to try the run page).
#
# Inputs that decide the output: the example directory, hostme's build code
# (dist/build), the linux-image-686 and busybox-static:i386 versions and the
# e2fsprogs/cpio/gzip versions. They are hashed into a stamp; when the stamp
# matches, the script does nothing and prints nothing.
#
# Needs the i386 architecture enabled (dpkg --add-architecture i386 &&
# apt-get update; scripts/setup.sh does it) and the compiled TypeScript.
set -euo pipefail
HOSTME_BUILD_WRAPPER="${BASH_SOURCE[0]}" exec bash "$(dirname "${BASH_SOURCE[0]}")/build-example.sh" hello-i686 "$@"
