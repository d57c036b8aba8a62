import { test } from 'node:test';
import assert from 'node:assert/strict';
import { planStart } from './snapshot-restore.js';
import type { Manifest } from '../format/manifest.js';

const ref = { size: 1 << 20, chunkSize: 262144, index: 'a'.repeat(64) };
const manifest = (memorySnapshot?: Manifest['memorySnapshot']): Manifest => ({
  formatVersion: 1,
  kind: 'hostme-image',
  name: 'hello-i686',
  version: '2',
  created: '2026-11-23T00:00:00Z',
  hardware: { arch: 'i686', memoryMiB: 32, cpus: 1 },
  boot: { mode: 'direct', kernel: ref, initrd: { ...ref, size: 3 << 20 }, cmdline: 'console=ttyS0' },
  disks: [{ ...ref, name: 'disk0' }],
  mirrors: [],
  ...(memorySnapshot ? { memorySnapshot } : {}),
});
const snapshot = { ...ref, emulator: 'v86@0.5.462', memoryBytes: 128 << 20, vgaMemoryBytes: 2 << 20 };

test('a snapshot from this exact v86 build is restored with the machine sizes it recorded', () => {
  const plan = planStart(manifest(snapshot), '0.5.462', false);
  assert.equal(plan.kind, 'restore');
  assert.equal(plan.memoryBytes, 128 << 20);
  assert.equal(plan.vgaMemoryBytes, 2 << 20);
});

test('without a snapshot the page cold boots with memory above the initrd v86 loads at 64 MiB', () => {
  const plan = planStart(manifest(), '0.5.462', false);
  assert.deepEqual(plan, { kind: 'boot', memoryBytes: (64 + 3 + 8) << 20, vgaMemoryBytes: 2 << 20 });
});

test('another v86 build, missing machine sizes, or ?boot=cold give a cold boot; only the unusable snapshot gets a notice', () => {
  const other = planStart(manifest({ ...snapshot, emulator: 'v86@0.4.0' }), '0.5.462', false);
  assert.equal(other.kind, 'boot');
  assert.match(other.kind === 'boot' ? (other.notice ?? '') : '', /saved by v86@0\.4\.0 and this page runs v86@0\.5\.462: booting from scratch/);
  const { memoryBytes: _omit, ...noSizes } = snapshot;
  const sizeless = planStart(manifest(noSizes), '0.5.462', false);
  assert.match(sizeless.kind === 'boot' ? (sizeless.notice ?? '') : '', /does not record the machine's memory sizes/);
  const forced = planStart(manifest(snapshot), '0.5.462', true);
  assert.deepEqual(forced.kind === 'boot' ? forced.notice : 'restore', undefined);
});
