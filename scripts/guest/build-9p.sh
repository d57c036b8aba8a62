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
HOSTME_BUILD_WRAPPER="${BASH_SOURCE[0]}" exec bash "$(dirname "${BASH_SOURCE[0]}")/build-example.sh" hello-9p "$@"
