import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { loadReferenceGuest } from '../testing/reference-guest.js';
import { launchVm, type VmHandle } from './qemu.js';

// QEMU confined (issue #13): a real guest boots under the seccomp sandbox;
// as root, QEMU runs as an unprivileged user that reaches the files it was
// handed (a writable disk in a root-only folder) and nothing else.
let dir: string;
let vm: VmHandle | undefined;
before(async () => { dir = await tempDir('hmconfine-'); });
after(async () => {
  await vm?.shutdown();
  await removeDir(dir);
});

function statusField(status: string, name: string): string {
  const m = new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status);
  assert.ok(m, `no ${name} in /proc/PID/status`);
  return m[1]!;
}

test('the guest boots sandboxed, QEMU is not root and cannot open /etc/shadow', { timeout: 300_000 }, async () => {
  const guest = loadReferenceGuest();
  const scratch = path.join(dir, 'scratch.raw'); // in a 0700 folder owned by root
  await writeFile(scratch, Buffer.alloc(1 << 20));
  vm = await launchVm({
    kernel: guest.kernel, cmdline: guest.cmdline, memoryMiB: guest.memoryMiB, cpus: 1, arch: 'x86_64', accel: 'tcg', console: 'none', keepRunning: true,
    disks: [{ file: guest.disk, readOnly: true }, { file: scratch }],
  });
  assert.ok(vm.argv.includes('-sandbox'));
  await vm.waitForConsole(/HOSTME-READY/, { timeoutMs: 240_000, since: 0 });

  const status = await readFile(`/proc/${vm.pid}/status`, 'utf8');
  assert.equal(statusField(status, 'Seccomp'), '2', 'QEMU runs under a seccomp filter');
  const uids = statusField(status, 'Uid').split(/\s+/).map(Number);
  if (process.getuid?.() === 0) {
    assert.ok(uids.every((uid) => uid !== 0), `QEMU uids ${uids.join(' ')}`);
    assert.ok(statusField(status, 'Gid').split(/\s+/).every((gid) => gid !== '0'));
  }

  // The guest writes to the handed-over disk: QEMU holds it open read-write.
  const tag = 'WROTE-SCRATCH';
  vm.sendConsole(`echo hostme-was-here > /dev/nvme1n1 && sync; echo ${tag} rc=$?\n`);
  assert.equal((await vm.waitForConsole(new RegExp(`${tag} rc=(\\d+)`), { timeoutMs: 60_000 }))[1], '0');
  assert.match((await readFile(scratch)).subarray(0, 32).toString('latin1'), /^hostme-was-here/);

  // A host file nobody handed it: refused by the kernel, not by hostme.
  for (const filename of ['/etc/shadow', scratch]) {
    await assert.rejects(
      vm.qmp.execute('blockdev-add', { driver: 'file', 'node-name': `x${filename.length}`, filename, 'read-only': true }),
      (err: unknown) => /[Pp]ermission denied/.test(String((err as Error).message)),
      `QEMU opened ${filename}`,
    );
  }
});
