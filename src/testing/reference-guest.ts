/**
 * Locates the reference guest built by scripts/guest/build-reference.sh (hostme build of examples/hello)
 * (${HOSTME_GUEST_DIR:-<repo>/.cache/guest}/hello/guest.json).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HostmeError } from '../errors.js';
import type { VmSpec } from '../vm/qemu.js';

export interface ReferenceGuest {
  name: string;
  /** ELF vmlinux (boots via PVH with -kernel), extracted by hostme build. */
  kernel: string;
  /** 64 MiB ext4 root filesystem. */
  disk: string;
  /** 1 GiB variant: same files plus ~900 MiB the guest never reads. */
  disk1g: string;
  cmdline: string;
  memoryMiB: number;
  cpus: number;
  arch: 'x86_64';
  kernelPackage?: string;
  busyboxPackage?: string;
}

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function referenceGuestDir(): string {
  return path.join(process.env.HOSTME_GUEST_DIR || path.join(repoRoot, '.cache', 'guest'), 'hello');
}

/** Where scripts/guest/build-example.sh keeps hostme build's .debs and kernels. */
export function guestBuildCacheDir(): string {
  return process.env.HOSTME_BUILD_CACHE || path.join(repoRoot, '.cache', 'build');
}

/** Reads guest.json; throws HostmeError 'guest-missing' telling how to build it. */
export function loadReferenceGuest(): ReferenceGuest {
  const file = path.join(referenceGuestDir(), 'guest.json');
  let parsed: ReferenceGuest;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as ReferenceGuest;
  } catch (err) {
    throw new HostmeError(
      'guest-missing',
      `Reference guest not found (${file}): run scripts/guest/build-reference.sh first`,
      { file },
      { cause: err },
    );
  }
  return parsed;
}

/**
 * A QEMU spec that direct-boots the reference guest from its read-only disk, console muted,
 * under `accel` (default: the test run's, HOSTME_ACCEL, decided once by scripts/test.sh).
 */
export function referenceGuestSpec(guest: ReferenceGuest, extra: Partial<VmSpec> = {}): VmSpec {
  return {
    kernel: guest.kernel,
    cmdline: guest.cmdline,
    disks: [{ file: guest.disk, readOnly: true }],
    memoryMiB: guest.memoryMiB,
    cpus: guest.cpus,
    arch: 'x86_64',
    accel: testRunAccel(),
    console: 'none',
    ...extra,
  };
}

/** The accelerator of this test run: HOSTME_ACCEL when set to kvm, else TCG (works everywhere). */
export function testRunAccel(): 'kvm' | 'tcg' {
  return process.env.HOSTME_ACCEL === 'kvm' ? 'kvm' : 'tcg';
}
