// Chooses how the run page starts an image: restore its memory snapshot when
// this page's v86 can load it, otherwise a cold boot with a visible notice.
// Browser-safe (no DOM, no Node): unit-tested under Node.
import type { Manifest } from '../format/manifest.js';
import { guestMemoryBytes, snapshotMismatch, VGA_MEMORY_BYTES } from './reader/v86-machine.js';

export type StartPlan =
  | { kind: 'restore'; snapshot: NonNullable<Manifest['memorySnapshot']>; memoryBytes: number; vgaMemoryBytes: number }
  | { kind: 'boot'; memoryBytes: number; vgaMemoryBytes: number; notice?: string };

/**
 * @param forceBoot the page was opened with ?boot=cold (benchmarks, debugging)
 */
export function planStart(manifest: Manifest, pageV86Version: string, forceBoot: boolean): StartPlan {
  const initrdBytes = manifest.boot.mode === 'direct' ? (manifest.boot.initrd?.size ?? 0) : 0;
  const cold = { kind: 'boot' as const, memoryBytes: guestMemoryBytes(manifest.hardware.memoryMiB, initrdBytes), vgaMemoryBytes: VGA_MEMORY_BYTES };
  const snapshot = manifest.memorySnapshot;
  if (!snapshot || forceBoot) return cold;
  const mismatch = snapshotMismatch(snapshot, pageV86Version);
  if (mismatch) return { ...cold, notice: `This image has a memory snapshot, but ${mismatch}: booting from scratch instead (slower).` };
  return { kind: 'restore', snapshot, memoryBytes: snapshot.memoryBytes!, vgaMemoryBytes: snapshot.vgaMemoryBytes! };
}
