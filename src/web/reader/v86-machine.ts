// The v86 machine hostme builds for an image, shared by the run page (which
// boots or restores it) and `hostme snapshot` (which saves it under Node).
// A saved state only loads into a machine with the same v86 build and the
// same memory sizes, so both sides must compute them here, and a snapshot
// records them (docs/format.md, memorySnapshot).

/** v86 loads the initrd at 64 MiB: guest memory must exceed that plus the initrd. */
const INITRD_LOAD_ADDRESS = 64 * 1048576;
const MIB = 1048576;
export const VGA_MEMORY_BYTES = 2 * MIB;

export function guestMemoryBytes(memoryMiB: number, initrdBytes: number): number {
  return Math.max(memoryMiB, Math.ceil((INITRD_LOAD_ADDRESS + initrdBytes) / MIB) + 8) * MIB;
}

/** The `emulator` string a snapshot carries: "v86@" + the npm package version. */
export function v86EmulatorId(packageVersion: string): string {
  return `v86@${packageVersion}`;
}

/**
 * Appended to the kernel command line for the boot that is saved: Linux then
 * zeroes pages as they are freed (the unpacked initrd, boot-time buffers), so
 * the saved memory compresses about twice as well (docs/web.md, measured).
 */
export const SNAPSHOT_CMDLINE_EXTRA = 'init_on_free=1';

export interface SnapshotMachine {
  emulator: string;
  memoryBytes?: number;
  vgaMemoryBytes?: number;
}

/** Why a snapshot cannot be restored by this page, or undefined when it can. */
export function snapshotMismatch(snapshot: SnapshotMachine, pageV86Version: string): string | undefined {
  const ours = v86EmulatorId(pageV86Version);
  if (snapshot.emulator !== ours) return `it was saved by ${snapshot.emulator} and this page runs ${ours}`;
  if (!snapshot.memoryBytes || snapshot.vgaMemoryBytes === undefined) return 'it does not record the machine\'s memory sizes';
  return undefined;
}
