/** Shared by the export tests: a small image (the 64 MiB reference disk + kernel) packed into a temporary repository. */
import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { packWithNewKey } from '../testing/fixtures.js';
import { loadReferenceGuest, referenceGuestDir, testRunAccel, type ReferenceGuest } from '../testing/reference-guest.js';
import { launchVm, type VmHandle, type VmSpec } from '../vm/qemu.js';

export interface SmallImage {
  guest: ReferenceGuest;
  dir: string;
  repoDir: string;
  name: string;
  version: string;
  cleanup(): Promise<void>;
}

/**
 * The Debian package cache of the reference guest build (<guest dir>/debs):
 * exports that write a bootloader match the image's ELF kernel to its
 * package there, without the network.
 */
export function guestDebCache(): string {
  return join(referenceGuestDir(), '..');
}

export async function packSmallImage(): Promise<SmallImage> {
  const guest = loadReferenceGuest();
  // Child processes (the CLI tests) inherit it: hostme build's cache is where exports look for kernel packages.
  process.env.HOSTME_BUILD_CACHE ??= guestDebCache();
  const dir = await mkdtemp(join(tmpdir(), 'hostme-export-test-'));
  const repoDir = join(dir, 'repo');
  await packWithNewKey(dir, repoDir, {
    disk: guest.disk,
    name: 'small',
    version: '1',
    kernel: guest.kernel,
    cmdline: guest.cmdline,
    memoryMiB: guest.memoryMiB,
    cpus: guest.cpus,
    description: 'reference guest, 64 MiB disk <test & "quotes">',
  });
  return { guest, dir, repoDir, name: 'small', version: '1', cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/**
 * Boot an exported file (or a QEMU spec around it) to HOSTME-READY with the reference guest's
 * memory and CPUs, under the test run's accelerator; a failure names `what` and shows the
 * console's tail. The VM is left running only when `keepRunning` is set.
 */
export async function bootExportToReady(
  what: string,
  guest: ReferenceGuest,
  spec: Pick<VmSpec, 'disks'> & Partial<VmSpec>,
): Promise<VmHandle> {
  const vm = await launchVm({
    memoryMiB: guest.memoryMiB,
    cpus: guest.cpus,
    arch: 'x86_64',
    accel: testRunAccel(),
    console: 'none',
    until: /HOSTME-READY/,
    timeoutMs: 300_000,
    ...spec,
  });
  await vm.ready.catch((err: unknown) => {
    throw new Error(`${what}: ${String(err)}\n${vm.console.slice(-3000)}`);
  });
  return vm;
}

const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

/**
 * QEMU arguments for UEFI firmware (OVMF from Debian's ovmf, no Secure
 * Boot). The variable store is Debian's pristine template, read-only: the
 * boot uses the removable-media path, so nothing needs to be saved (and the
 * confined QEMU needs no writable file outside what hostme hands it).
 * Fails (never skips) when ovmf is not installed.
 */
export async function ovmfArgs(): Promise<string[]> {
  for (const file of [OVMF_CODE, OVMF_VARS]) {
    await access(file).catch(() => {
      throw new Error(`UEFI tests need OVMF (${file}): apt-get install ovmf`);
    });
  }
  return ['-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${OVMF_CODE}`, '-drive', `if=pflash,format=raw,unit=1,readonly=on,file=${OVMF_VARS}`];
}
