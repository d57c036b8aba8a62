import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { BlockDevice } from '../device/block-device.js';
import { DiskGate } from './disk-gate.js';
import { applyGrantFlags, parseGrantText } from './flags.js';
import { describeGrants, parseDiskIo } from './grant-set.js';
import { isHostmeError } from '../errors.js';

// The disk caretaker's I/O limit, with an injected clock: no wall-clock timing.
const KIB = 1024;
const MIB = 1024 * KIB;

function memoryDisk(size = 16 * MIB): BlockDevice & { reads: number } {
  const data = new Uint8Array(size);
  const disk = {
    size, blockSize: 512, readOnly: false, reads: 0,
    read: async (offset: number, length: number) => { disk.reads++; return data.slice(offset, offset + length); },
    write: async (offset: number, bytes: Uint8Array) => { data.set(bytes, offset); },
    close: async () => {},
  };
  return disk;
}

function clocked(): { now: () => number; advance: (ms: number) => void } {
  let t = 0;
  return { now: () => t, advance: (ms) => { t += ms; } };
}

test('bytes per second: per 100 ms refill, 1 MiB/s admits about 102 KiB (one request of debt at most)', () => {
  const clock = clocked();
  const gate = new DiskGate(memoryDisk(), 'rw', 'd', clock.now);
  gate.setLimit({ bytesPerSec: MIB });
  // The first second's burst: the bucket starts full.
  let burst = 0;
  while (gate.tryAdmit(64 * KIB) === 0) burst += 64 * KIB;
  assert.ok(burst >= MIB && burst <= MIB + 64 * KIB, `burst ${burst}`);
  let total = 0;
  for (let step = 0; step < 50; step++) {
    clock.advance(100);
    let admitted = 0;
    while (gate.tryAdmit(64 * KIB) === 0) admitted += 64 * KIB;
    total += admitted;
    assert.ok(admitted <= 2 * 64 * KIB, `step ${step}: ${admitted} bytes in 100 ms`);
  }
  // 5 s at 1 MiB/s: 5 MiB, give or take one request.
  assert.ok(Math.abs(total - 5 * MIB) <= 64 * KIB, `admitted ${total} in 5 s`);
  // A refused request is told how long to wait, and waiting that long admits it.
  const wait = gate.tryAdmit(64 * KIB);
  assert.ok(wait > 0 && wait <= 100, `wait ${wait}`);
  clock.advance(wait);
  assert.equal(gate.tryAdmit(64 * KIB), 0);
});

test('operations per second count requests whatever their size', () => {
  const clock = clocked();
  const gate = new DiskGate(memoryDisk(), 'rw', 'd', clock.now);
  gate.setLimit({ opsPerSec: 100 });
  let ops = 0;
  while (gate.tryAdmit(512) === 0) ops++;
  assert.equal(ops, 100);
  clock.advance(500);
  ops = 0;
  while (gate.tryAdmit(4 * MIB) === 0) ops++;
  assert.equal(ops, 50);
});

test('a limit changed or lifted applies to the next request; no limit admits everything', async () => {
  const clock = clocked();
  const disk = memoryDisk();
  const slept: number[] = [];
  // The injected sleep advances the injected clock: requests wait without wall-clock time.
  const gate = new DiskGate(disk, 'rw', 'd', clock.now, async (ms) => { slept.push(ms); clock.advance(ms); });
  for (let i = 0; i < 100; i++) assert.equal(gate.tryAdmit(MIB), 0);
  gate.setLimit({ bytesPerSec: 256 * KIB });
  assert.deepEqual(gate.limit, { bytesPerSec: 256 * KIB });
  // 1 MiB through a 256 KiB/s gate in 64 KiB reads: the first 256 KiB is the burst, the rest waits ~3 s.
  await Promise.all(Array.from({ length: 16 }, (_, i) => gate.read(i * 64 * KIB, 64 * KIB)));
  assert.equal(disk.reads, 16);
  const waited = slept.reduce((a, b) => a + b, 0);
  assert.ok(waited >= 2750 && waited <= 3100, `waited ${waited} ms of the injected clock`);
  assert.ok(slept.every((ms) => ms <= 100), 'a sleep is at most 100 ms, so a changed limit applies soon');
  gate.setLimit({});
  slept.length = 0;
  await Promise.all(Array.from({ length: 16 }, (_, i) => gate.write!(i * 64 * KIB, new Uint8Array(64 * KIB))));
  assert.equal(slept.length, 0);
});

test('disk I/O rates: flags, grant file, refusals naming the field', () => {
  assert.deepEqual(parseDiskIo('4M'), { bytesPerSec: 4 * MIB });
  assert.deepEqual(parseDiskIo('512k:200'), { bytesPerSec: 512 * KIB, opsPerSec: 200 });
  assert.deepEqual(parseDiskIo(':50'), { opsPerSec: 50 });
  for (const bad of ['', 'fast', '1', '4M:0', '4T', '-1M']) assert.throws(() => parseDiskIo(bad), (err: unknown) => isHostmeError(err, 'usage'), bad);
  const set = applyGrantFlags(['--allow-disk-io=2M:100']);
  assert.deepEqual(set.resources.diskIo, { bytesPerSec: 2 * MIB, opsPerSec: 100 });
  assert.match(describeGrants(set).join('\n'), /resources: disk I\/O 2M:100\/s/);
  assert.equal(applyGrantFlags(['--allow-disk-io=2M', '--deny-disk-io']).resources.diskIo, undefined);
  assert.throws(() => applyGrantFlags(['--allow-disk-io=lots']), (err: unknown) => isHostmeError(err, 'grants-invalid') && /--allow-disk-io=lots/.test(err.message));
  const file = parseGrantText('resources:\n  diskIo: 8M:400\n', { source: 'g.yaml', base: '/srv', root: '/srv', yaml: true });
  assert.deepEqual(file.resources.diskIo, { bytesPerSec: 8 * MIB, opsPerSec: 400 });
  assert.throws(() => parseGrantText('{"resources":{"diskIo":"8X"}}', { source: 'g.json', base: '/srv', root: '/srv', yaml: false }),
    (err: unknown) => isHostmeError(err, 'grants-invalid') && /g\.json: grants\.resources\.diskIo: /.test(err.message));
});

test('bandwidth grants: flag, grant file, refusals naming the field', () => {
  assert.equal(applyGrantFlags(['--allow-bandwidth=10']).resources.bandwidthMbit, 10);
  assert.match(describeGrants(applyGrantFlags(['--allow-bandwidth=10'])).join('\n'), /10 Mbit\/s network/);
  assert.equal(applyGrantFlags(['--allow-bandwidth=10', '--deny-bandwidth']).resources.bandwidthMbit, undefined);
  assert.throws(() => applyGrantFlags(['--allow-bandwidth=0']), (err: unknown) => isHostmeError(err, 'grants-invalid') && /--allow-bandwidth=0/.test(err.message));
  assert.equal(parseGrantText('{"resources":{"bandwidthMbit":50}}', { source: 'g.json', base: '/srv', root: '/srv', yaml: false }).resources.bandwidthMbit, 50);
  assert.throws(() => parseGrantText('{"resources":{"bandwidthMbit":200000}}', { source: 'g.json', base: '/srv', root: '/srv', yaml: false }),
    (err: unknown) => isHostmeError(err, 'grants-invalid') && /grants\.resources\.bandwidthMbit: bandwidth is 1\.\.100000/.test(err.message));
});
