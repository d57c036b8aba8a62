import assert from 'node:assert/strict';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { publishedReferenceGuest } from '../testing/published-guest.js';
import { consoleShell, grantsCli } from '../testing/grants-guest.js';
import { CacheDir } from '../runner/cache-dir.js';
import { startImage, type RunningImage } from '../runner/run-image.js';
import { applyGrantFlags } from './flags.js';
import { controlGrants } from './runtime.js';

// A published image run (startImage, as hostme run does) with two extra
// disks through the NBD server and their gates: data.img granted read-only,
// spare.img denied. The denied disk is present in the guest (same size, so
// the hardware never changes) and every I/O on it fails; hostme grant hands
// it over while the VM runs, revoke takes it back. Its writes go to the
// instance's overlay: the user's file is never written.
let dir: string;
let running: RunningImage | undefined;
const INSTANCE = 'xd';
const MIB = 1 << 20;

before(async () => { dir = await tempDir('hmxdisk-'); });
after(async () => {
  await running?.vm.shutdown().catch(() => {});
  await running?.finished.catch(() => {});
  await removeDir(dir);
});

function sh(command: string, timeoutMs = 120_000): Promise<{ out: string; rc: number }> {
  return consoleShell(running!.vm)(command, timeoutMs);
}

test('a denied extra disk is a stand-in: present, every I/O fails; granted at runtime it is the real disk, revoked it fails again; the file is never written', { timeout: 900_000 }, async () => {
  const published = await publishedReferenceGuest();
  const data = path.join(dir, 'data.img');
  const spare = path.join(dir, 'spare.img');
  const dataBytes = Buffer.alloc(4 * MIB);
  dataBytes.write('DATA-DISK', 0);
  const spareBytes = Buffer.alloc(8 * MIB);
  spareBytes.write('SPARE-DISK', 0);
  spareBytes.write('SPARE-LATER', 300 * 4096);
  await writeFile(data, dataBytes);
  await writeFile(spare, spareBytes);
  const cache = path.join(dir, 'cache');
  const cli = grantsCli(cache);
  const grants = applyGrantFlags([`--allow-disk=${data}:ro`, `--deny-disk=${spare}`], undefined, { cwd: dir, root: dir });
  assert.deepEqual(grants.disks.map((d) => d.mode), ['ro', 'none']);

  running = await startImage({
    link: { repo: published.repoDir, name: 'hello' }, cacheDir: cache, console: 'none', keepRunning: true, timeoutMs: 600_000,
    instance: INSTANCE, grants: async () => grants,
  });
  await running.vm.waitForConsole(/HOSTME-READY/, { timeoutMs: 300_000, since: 0 });
  const instanceDir = new CacheDir(cache).instanceDir(INSTANCE);
  const status = await controlGrants(instanceDir, { op: 'status' }) as { granted: { extraDisks?: Record<string, string> } };
  assert.deepEqual(status.granted.extraDisks, { data: 'ro', spare: 'none' });

  // Both disks are there, with their files' sizes (512-byte sectors): the guest's hardware is stable.
  const sizes = await sh('for d in /sys/block/nvme*n1; do echo "$d $(cat $d/size)"; done');
  assert.match(sizes.out, /nvme1n1 8192/);
  assert.match(sizes.out, /nvme2n1 16384/);
  const read = (dev: string, block: number) => sh(`dd if=/dev/${dev} bs=4096 skip=${block} count=1 iflag=direct 2>&1 | head -c 11; echo`);

  const fromData = await read('nvme1n1', 0);
  assert.equal(fromData.rc, 0, fromData.out);
  assert.match(fromData.out, /DATA-DISK/);
  const writeData = await sh('echo X | dd of=/dev/nvme1n1 bs=4096 seek=9 conv=sync,fsync oflag=direct');
  assert.notEqual(writeData.rc, 0, `a write to the read-only disk: ${writeData.out}`);

  const denied = await sh('dd if=/dev/nvme2n1 of=/dev/null bs=4096 count=1 iflag=direct');
  assert.notEqual(denied.rc, 0, `a read of the stand-in: ${denied.out}`);
  // Linux reports the failed open-time read as ENODATA or EIO.
  assert.match(denied.out, /Input\/output error|No data available/);

  assert.equal(await cli('grant', INSTANCE, 'disk', 'spare'), 0);
  const granted = await read('nvme2n1', 0);
  assert.equal(granted.rc, 0, granted.out);
  assert.match(granted.out, /SPARE-DISK/);
  const write = await sh('printf SPARE-WRITTEN | dd of=/dev/nvme2n1 bs=4096 seek=100 conv=sync,fsync oflag=direct');
  assert.equal(write.rc, 0, write.out);
  const back = await read('nvme2n1', 100);
  assert.match(back.out, /SPARE-WRITT/);

  assert.equal(await cli('revoke', INSTANCE, 'disk', 'spare'), 0);
  const revoked = await sh('dd if=/dev/nvme2n1 of=/dev/null bs=4096 skip=300 count=1 iflag=direct');
  assert.notEqual(revoked.rc, 0, `a read after revoke: ${revoked.out}`);
  assert.equal(await cli('grant', INSTANCE, 'disk', 'data:rw'), 2, 'a disk attached read-only cannot be granted rw');
  assert.equal(await cli('grant', INSTANCE, 'disk', 'nosuch'), 2);
  assert.equal((await running.vm.qmp.execute('query-status', {}, { timeoutMs: 5000 }) as { status: string }).status, 'running');

  await running.vm.shutdown();
  await running.finished;
  running = undefined;
  // The user's files are untouched; the guest's write is in the instance's overlay.
  assert.ok((await readFile(spare)).equals(spareBytes), 'spare.img was written');
  assert.ok((await readFile(data)).equals(dataBytes), 'data.img was written');
  assert.ok((await readdir(path.join(instanceDir, 'extra-spare'))).includes('overlay.data'));
  const audit = await readFile(path.join(instanceDir, 'audit.log'), 'utf8');
  assert.match(audit, /"op":"grant","kind":"disk","value":"spare"/);
  assert.match(audit, /"op":"revoke","kind":"disk","value":"spare"/);
});
