import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { bootGrantsGuest, grantsCli, type GrantsGuest } from '../testing/grants-guest.js';
import { NbdServer } from '../nbd/server.js';
import { FileDevice } from '../nbd/file-device.js';
import { DiskGate } from './disk-gate.js';

// A real guest (QEMU, TCG) with a data disk served by hostme's NBD server
// through the disk caretaker: revoked, the guest's reads and writes fail with
// I/O errors while QEMU and the server stay up and the file is untouched;
// granted again (read-only, then read-write), the same disk works.
let dir: string;
let guest: GrantsGuest | undefined;
let nbd: NbdServer | undefined;
const INSTANCE = 'dk';
const MIB = 1 << 20;

before(async () => { dir = await tempDir('hmdisk-'); });
after(async () => {
  await guest?.close();
  await nbd?.close();
  await removeDir(dir);
});

test('a disk revoked at runtime: the guest sees I/O errors, QEMU and the NBD server stay up, the data is intact; granted ro then rw it works again', { timeout: 900_000 }, async () => {
  const file = path.join(dir, 'data.img');
  const initial = Buffer.alloc(4 * MIB);
  initial.write('BEFORE-REVOKE', 0);
  await writeFile(file, initial);
  const gate = new DiskGate(await FileDevice.open(file), 'rw', 'data');
  nbd = new NbdServer({ exports: new Map([['data', gate]]) });
  const socket = path.join(dir, 'nbd.sock');
  await nbd.listen(socket);
  const cache = path.join(dir, 'cache');
  const cli = grantsCli(cache);
  guest = await bootGrantsGuest({ work: dir, cache, instance: INSTANCE, disks: [{ nbdSocket: socket, nbdExport: 'data' }], control: { net: false, disks: [gate] } });
  const { vm, sh, instanceDir } = guest;
  // Each read is of a block not read before, so it reaches the server (no page cache).
  const readBlock = (n: number) => sh(`dd if=/dev/nvme1n1 bs=4096 skip=${n} count=1 2>&1 | head -c 13; echo`);
  const writeBlock = (n: number, text: string) => sh(`printf ${text} | dd of=/dev/nvme1n1 bs=4096 seek=${n} conv=sync,fsync`);

  const first = await readBlock(0);
  assert.equal(first.rc, 0, first.out);
  assert.match(first.out, /BEFORE-REVOKE/);

  assert.equal(await cli('revoke', INSTANCE, 'disk'), 0);
  const readRevoked = await sh('dd if=/dev/nvme1n1 of=/dev/null bs=4096 skip=100 count=1');
  assert.notEqual(readRevoked.rc, 0, `read after revoke: ${readRevoked.out}`);
  assert.match(readRevoked.out, /Input\/output error/);
  const writeRevoked = await writeBlock(200, 'WRITTEN-WHILE-REVOKED');
  assert.notEqual(writeRevoked.rc, 0, `write after revoke: ${writeRevoked.out}`);
  assert.ok(gate.refused > 0);
  // Up: QEMU answers, the server took no harm.
  assert.equal((await vm.qmp.execute('query-status', {}, { timeoutMs: 5000 }) as { status: string }).status, 'running');

  assert.equal(await cli('grant', INSTANCE, 'disk', 'ro'), 0);
  const readRo = await sh('dd if=/dev/nvme1n1 of=/dev/null bs=4096 skip=300 count=1');
  assert.equal(readRo.rc, 0, readRo.out);
  const writeRo = await writeBlock(400, 'WRITTEN-WHILE-RO');
  assert.notEqual(writeRo.rc, 0, `write while read-only: ${writeRo.out}`);

  assert.equal(await cli('grant', INSTANCE, 'disk', 'rw'), 0);
  const writeRw = await writeBlock(500, 'WRITTEN-RW');
  assert.equal(writeRw.rc, 0, writeRw.out);

  const after = await readFile(file);
  assert.equal(after.subarray(0, 13).toString(), 'BEFORE-REVOKE');
  assert.equal(after.subarray(500 * 4096, 500 * 4096 + 10).toString(), 'WRITTEN-RW');
  assert.ok(after.subarray(200 * 4096, 201 * 4096).every((b) => b === 0), 'a write reached the disk while revoked');
  assert.ok(after.subarray(400 * 4096, 401 * 4096).every((b) => b === 0), 'a write reached the disk while read-only');
  assert.equal(await cli('grant', INSTANCE, 'disk', 'bogus'), 2);

  // Throttled to 256 KiB/s through the same gate, a 1 MiB direct read still completes.
  assert.equal(await cli('grant', INSTANCE, 'disk-io', '256K'), 0);
  assert.deepEqual(gate.limit, { bytesPerSec: 256 * 1024 });
  const throttledRead = await sh('dd if=/dev/nvme1n1 of=/dev/null bs=64k skip=32 count=16 iflag=direct');
  assert.equal(throttledRead.rc, 0, throttledRead.out);
  assert.ok(gate.throttled > 0, 'no request waited for the limit');
  assert.equal(await cli('grant', INSTANCE, 'disk-io', 'fast'), 2);
  assert.equal(await cli('revoke', INSTANCE, 'disk-io'), 0);
  assert.deepEqual(gate.limit, {});
  const status = await readFile(path.join(instanceDir, 'audit.log'), 'utf8');
  assert.match(status, /"kind":"disk-io","value":"256K"/);
});
