import { mkdir, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { HostmeError } from '../errors.js';
import { moduleLoadOrder, readKernelPackage } from '../build/debian.js';
import { makeInitrd } from '../build/initrd.js';
import type { PublisherKey } from '../format/node/keys.js';
import { packWithNewKey } from './fixtures.js';
import { loadReferenceGuest, referenceGuestDir, type ReferenceGuest } from './reference-guest.js';

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
  const debDir = join(referenceGuestDir(), '..', 'debs');
  const deb = (await readdir(debDir).catch(() => [] as string[])).find((f) => f.startsWith('linux-image-') && f.endsWith('.deb'));
  if (!deb) throw new HostmeError('guest-missing', `no kernel package in ${debDir}: run scripts/guest/build-reference.sh first`, { debDir });
  const kernel = await readKernelPackage(join(debDir, deb), true);
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
