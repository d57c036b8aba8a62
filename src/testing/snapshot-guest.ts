import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HostmeError } from '../errors.js';
import { fetchDeb, moduleLoadOrder, readKernelPackage } from '../build/debian.js';
import { kernelIdentity } from '../export/boot-kit.js';
import { makeInitrd } from '../build/initrd.js';
import type { PublisherKey } from '../format/node/keys.js';
import { packWithNewKey } from './fixtures.js';
import { guestBuildCacheDir, loadReferenceGuest, type ReferenceGuest } from './reference-guest.js';

export interface SnapshotGuest {
  guest: ReferenceGuest;
  /** Repository holding hello@1: the reference kernel and disk plus an initrd that loads virtio-blk. */
  repoDir: string;
  keyFile: string;
  key: PublisherKey;
  initrd: string;
}

/**
 * The reference guest made snapshottable under QEMU: QEMU 7.2 cannot migrate
 * NVMe, and the Debian cloud kernel drives virtio-blk only as a module, so
 * the image gets a generated initrd (hostme build's) with virtio_pci and
 * virtio_blk. It still cold-boots from NVMe (root=/dev/nvme0n1); the snapshot
 * boot appends root=/dev/vda.
 */
export async function snapshotReferenceGuest(dir: string, options: { disk1g?: boolean } = {}): Promise<SnapshotGuest> {
  const guest = loadReferenceGuest();
  // The kernel's banner names its Debian package; hostme build left the .deb in its cache.
  const { release, debianVersion } = kernelIdentity(await readFile(guest.kernel));
  if (!release || !debianVersion) throw new HostmeError('guest-missing', `the reference kernel ${guest.kernel} names no Debian package: run scripts/guest/build-reference.sh --force`, { kernel: guest.kernel });
  const deb = await fetchDeb(`linux-image-${release}=${debianVersion}`, guestBuildCacheDir(), { arch: 'amd64' });
  const kernel = await readKernelPackage(deb.file, true);
  await mkdir(dir, { recursive: true });
  const initrd = join(dir, 'initrd.gz');
  await makeInitrd({ busybox: await readFile('/bin/busybox'), modules: moduleLoadOrder(['virtio_pci', 'virtio_blk'], kernel), out: initrd, work: join(dir, 'initrd-tree') });
  const repoDir = join(dir, 'repo');
  const { keyFile, key } = await packWithNewKey(dir, repoDir, {
    disk: options.disk1g ? guest.disk1g : guest.disk,
    name: 'hello',
    version: '1',
    kernel: guest.kernel,
    initrd,
    cmdline: guest.cmdline,
    memoryMiB: guest.memoryMiB,
    cpus: guest.cpus,
    description: 'hostme reference guest with a virtio-blk initrd (QEMU snapshots)',
  });
  return { guest, repoDir, keyFile, key, initrd };
}
