import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { isHostmeError } from '../errors.js';
import { loadReferenceGuest, referenceGuestSpec, type ReferenceGuest } from '../testing/reference-guest.js';
import { buildQemuArgs, launchVm, type VmHandle, type VmSpec } from './qemu.js';

/** This suite checks the launcher, not the machine: TCG works everywhere. */
function guestSpec(guest: ReferenceGuest, extra: Partial<VmSpec> = {}): VmSpec {
  return referenceGuestSpec(guest, { accel: 'tcg', ...extra });
}

describe('buildQemuArgs', () => {
  test('NBD disks become blockdevs on NVMe, with user networking', () => {
    const args = buildQemuArgs(
      {
        kernel: '/k',
        cmdline: 'console=ttyS0',
        disks: [{ nbdSocket: '/tmp/x,y.sock', readOnly: true }, { file: '/img.qcow2', format: 'qcow2' }],
        memoryMiB: 128,
        cpus: 1,
        arch: 'x86_64',
        console: 'none',
        netdev: { hostfwd: [{ hostPort: 8080, guestPort: 80 }] },
      },
      'tcg',
      '/tmp/q.sock',
    );
    const blockdevs = args.flatMap((a, i) => (args[i - 1] === '-blockdev' ? [JSON.parse(a) as Record<string, unknown>] : []));
    assert.deepEqual(blockdevs[0], {
      driver: 'raw',
      'node-name': 'd0',
      'read-only': true,
      file: { driver: 'nbd', server: { type: 'unix', path: '/tmp/x,y.sock' }, 'read-only': true },
    });
    assert.equal((blockdevs[1] as { driver: string }).driver, 'qcow2');
    assert.ok(args.includes('nvme,drive=d0,serial=d0'));
    assert.ok(args.includes('nvme,drive=d1,serial=d1'));
    assert.ok(args.includes('user,id=n0,hostfwd=tcp:127.0.0.1:8080-:80'));
    assert.ok(args.includes('unix:/tmp/q.sock,server=on,wait=off'));
    assert.equal(args[args.indexOf('-machine') + 1], 'q35');
  });

  test('i686 guests get the PC machine with IDE, like v86; read-only disks become CD-ROMs; more than 4 disks is refused', () => {
    const spec: VmSpec = {
      kernel: '/k',
      disks: [{ nbdSocket: '/tmp/n.sock', nbdExport: 'disk0' }, { file: '/seed.img', readOnly: true }],
      memoryMiB: 128,
      cpus: 1,
      arch: 'i686',
      console: 'none',
    };
    const args = buildQemuArgs(spec, 'tcg', '/tmp/q.sock');
    assert.equal(args[args.indexOf('-machine') + 1], 'pc');
    assert.ok(args.includes('ide-hd,drive=d0,bus=ide.0,unit=0'), args.join(' '));
    assert.ok(args.includes('ide-cd,drive=d1,bus=ide.0,unit=1'), args.join(' '));
    assert.ok(!args.some((a) => a.startsWith('nvme')));
    const five = { ...spec, disks: Array.from({ length: 5 }, () => ({ file: '/x' })) };
    return assert.rejects(launchVm({ ...five, accel: 'tcg' }), /an IDE machine has 4 disk slots; 5 disks were given/);
  });
});

describe('launchVm', () => {
  test('a missing QEMU binary gives qemu-missing naming the Debian package', async () => {
    await assert.rejects(
      launchVm({ kernel: '/nonexistent', disks: [], memoryMiB: 64, cpus: 1, arch: 'x86_64', console: 'none', accel: 'tcg', qemuBinary: '/nonexistent/qemu-system-x86_64' }),
      (err: unknown) => isHostmeError(err, 'qemu-missing') && err.message.includes('qemu-system-x86'),
    );
  });

  test('QEMU failing at start reports its stderr', async () => {
    await assert.rejects(
      launchVm({ kernel: '/nonexistent/vmlinux', disks: [], memoryMiB: 64, cpus: 1, arch: 'x86_64', console: 'none', accel: 'tcg' }),
      (err: unknown) => isHostmeError(err, 'qemu-failed') && /nonexistent\/vmlinux/.test(err.message),
    );
  });
});

describe('reference guest under TCG', () => {
  let guest: ReferenceGuest;
  before(() => {
    guest = loadReferenceGuest();
  });

  test('boots to HOSTME-READY, shuts itself down after --until', async () => {
    const vm = await launchVm(guestSpec(guest, { until: /HOSTME-READY/, timeoutMs: 120_000 }));
    const ready = await vm.ready;
    assert.equal(ready.match, 'HOSTME-READY');
    assert.ok(ready.ms > 0);
    const exit = await vm.exited;
    assert.equal(exit.timedOut, false);
  });

  describe('interactive', () => {
    let vm: VmHandle;
    before(async () => {
      vm = await launchVm(guestSpec(guest, { until: /HOSTME-READY/, keepRunning: true, timeoutMs: 120_000 }));
      await vm.ready;
    });
    after(async () => {
      await vm?.shutdown();
    });

    test('QMP query-status says running', async () => {
      const status = await vm.qmp.execute<{ status: string; running: boolean }>('query-status');
      assert.equal(status.running, true);
      assert.equal(status.status, 'running');
    });

    test('typing into the console runs a shell command', async () => {
      await vm.waitForConsole(/hostme# /, { since: 0, timeoutMs: 60_000 });
      const since = vm.consoleLength;
      vm.sendConsole('echo $((6*7))\n');
      await vm.waitForConsole(/^42\r?$/m, { since, timeoutMs: 60_000 });
    });

    test('exiting the shell powers the guest off', async () => {
      vm.sendConsole('exit\n');
      const exit = await vm.exited;
      assert.equal(exit.code, 0);
      assert.equal(exit.timedOut, false);
    });
  });

  test('timeout kills QEMU and rejects with vm-timeout', async () => {
    const vm = await launchVm(guestSpec(guest, { until: /THIS-NEVER-APPEARS/, timeoutMs: 1500 }));
    await assert.rejects(vm.ready, (err: unknown) => isHostmeError(err, 'vm-timeout'));
    const exit = await vm.exited;
    assert.equal(exit.timedOut, true);
  });

  test('shutdown() of a running VM is prompt and idempotent', async () => {
    const vm = await launchVm(guestSpec(guest));
    const [a, b] = await Promise.all([vm.shutdown(), vm.shutdown()]);
    assert.equal(a, b);
    assert.equal(vm.qmp.closed, true);
  });

  test('QEMU does not outlive a hostme killed with SIGKILL', async () => {
    const qemuModule = new URL('./qemu.js', import.meta.url).href;
    const script = `
      const { launchVm } = await import(${JSON.stringify(qemuModule)});
      const vm = await launchVm(${JSON.stringify(guestSpec(guest, { keepRunning: true }))});
      process.stdout.write(String(vm.pid) + '\\n');
      setInterval(() => {}, 1000);
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const pid = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(Number(out.trim()));
      });
      child.once('exit', () => reject(new Error(`the launcher exited before printing QEMU's pid: ${out}`)));
    });
    assert.ok(alive(pid), 'QEMU runs while its parent does');
    child.kill('SIGKILL');
    for (let i = 0; i < 100 && alive(pid); i++) await sleep(100);
    assert.equal(alive(pid), false, `QEMU ${pid} outlived its killed parent`);
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.startsWith('Z');
  } catch {
    return false;
  }
}

