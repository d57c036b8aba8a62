import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isHostmeError } from '../errors.js';
import { findOnPath, runTool, toolOverrideVariable } from './tool.js';
import { openDiskInput } from '../pack/disk-input.js';
import { imageInfo } from '../export/tools.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'hostme-tool-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function script(file: string, body: string): Promise<string> {
  await writeFile(file, `#!/bin/sh\n${body}\n`);
  await chmod(file, 0o755);
  return file;
}

function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

test('a missing tool is tool-missing and names the Debian package to install', async () => {
  await withDir(async (empty) => {
    for (const [tool, pkg] of [['qemu-img', 'qemu-utils'], ['debootstrap', 'debootstrap'], ['mke2fs', 'e2fsprogs'], ['xorriso', 'xorriso']] as const) {
      await assert.rejects(runTool(tool, ['--version'], { env: { PATH: empty } }), (err) => {
        assert.ok(isHostmeError(err, 'tool-missing'), String(err));
        assert.match(err.message, new RegExp(`apt-get install ${pkg}\\b`));
        assert.equal(err.context.package, pkg);
        return true;
      });
    }
    // An override pointing nowhere says which variable to fix.
    await assert.rejects(runTool('qemu-img', ['--version'], { env: { PATH: process.env.PATH, HOSTME_QEMU_IMG: join(empty, 'nope') } }), /HOSTME_QEMU_IMG=.*does not exist/);
  });
});

test('HOSTME_QEMU_IMG is honoured by pack (format detection and conversion) and export', async () => {
  const realQemuImg = await findOnPath('qemu-img');
  assert.ok(realQemuImg, 'qemu-img must be installed (scripts/setup.sh)');
  await withDir(async (dir) => {
    const record = join(dir, 'ran.log');
    const wrapper = await script(join(dir, 'fake-qemu-img'), `echo "$1" >> '${record}'\nexec '${realQemuImg}' "$@"`);
    const qcow2 = join(dir, 'disk.qcow2');
    await runTool('qemu-img', ['create', '-q', '-f', 'qcow2', qcow2, '4M']);
    assert.equal(toolOverrideVariable('qemu-img'), 'HOSTME_QEMU_IMG');
    const saved = process.env.HOSTME_QEMU_IMG;
    process.env.HOSTME_QEMU_IMG = wrapper;
    try {
      const input = await openDiskInput(qcow2, dir);
      try {
        assert.equal(input.format, 'qcow2');
        assert.equal(input.virtualSize, 4 << 20);
      } finally {
        await input.cleanup();
      }
      assert.equal((await imageInfo(qcow2)).format, 'qcow2');
    } finally {
      if (saved === undefined) delete process.env.HOSTME_QEMU_IMG;
      else process.env.HOSTME_QEMU_IMG = saved;
    }
    assert.deepEqual((await readFile(record, 'utf8')).trim().split('\n'), ['info', 'convert', 'info']);
  });
});

test('abort and timeout kill the child', async () => {
  await withDir(async (dir) => {
    const pidFile = join(dir, 'pid');
    // exec keeps the pid: the recorded pid is the sleeping process itself.
    const sleeper = await script(join(dir, 'sleeper'), `echo $$ > '${pidFile}'\nexec sleep 600`);
    const env = { ...process.env, HOSTME_SLEEPER: sleeper };
    const waitForPid = async () => {
      for (let i = 0; i < 500; i++) {
        const text = await readFile(pidFile, 'utf8').catch(() => '');
        if (text.trim()) return Number(text.trim());
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error('the sleeper never started');
    };

    const controller = new AbortController();
    const running = runTool('sleeper', [], { env, signal: controller.signal });
    const pid = await waitForPid();
    assert.equal(isGone(pid), false);
    controller.abort();
    await assert.rejects(running, (err) => isHostmeError(err, 'aborted'));
    assert.ok(isGone(pid), 'the aborted child is gone');

    await rm(pidFile);
    const timed = runTool('sleeper', [], { env, timeoutMs: 300 });
    await assert.rejects(timed, (err) => isHostmeError(err, 'tool-timeout'));
    assert.ok(isGone(await waitForPid()), 'the timed-out child is gone');

    await assert.rejects(runTool('sleeper', [], { env, signal: AbortSignal.abort() }), (err) => isHostmeError(err, 'aborted'));
  });
});

test('output is bounded, input is fed, failures carry the tail of stderr', async () => {
  const big = await runTool('head', ['-c', '100000', '/dev/zero'], { maxOutputBytes: 1000 });
  assert.equal(big.stdout.length, 1000);
  assert.equal(big.truncated, true);
  const echoed = await runTool('cat', [], { input: 'hello tool' });
  assert.equal(echoed.stdout, 'hello tool');
  assert.equal(echoed.truncated, false);
  await assert.rejects(runTool('sh', ['-c', 'echo broken >&2; exit 3'], { failureCode: 'disk-tool-failed' }), (err) => {
    assert.ok(isHostmeError(err, 'disk-tool-failed'));
    assert.match(err.message, /failed \(3\): broken/);
    return true;
  });
});

test('findOnPath finds executables only', async () => {
  await withDir(async (dir) => {
    await writeFile(join(dir, 'plain'), 'not executable');
    const exe = await script(join(dir, 'exe'), 'true');
    assert.equal(await findOnPath('exe', dir), exe);
    assert.equal(await findOnPath('plain', dir), undefined);
    assert.equal(await findOnPath('missing', dir), undefined);
    assert.equal(await findOnPath(exe, ''), exe);
  });
});

test('a binary the caller chose runs under the tool\'s name, and okExitCodes are success', async () => {
  await withDir(async (dir) => {
    const probe = await script(join(dir, 'probe'), 'echo 1K; exit 67');
    const result = await runTool('qemu-system-x86_64', [], { binary: probe, okExitCodes: [67] });
    assert.equal(result.exit, 67);
    assert.equal(result.stdout, '1K\n');
    await assert.rejects(runTool('qemu-system-x86_64', [], { binary: probe }), (err) => isHostmeError(err, 'tool-failed') && err.context.exit === 67);
    await assert.rejects(runTool('qemu-system-x86_64', [], { binary: join(dir, 'absent') }), (err) => {
      assert.ok(isHostmeError(err, 'tool-missing'), String(err));
      assert.match(err.message, /apt-get install qemu-system-x86\b/);
      assert.match(err.message, /absent does not exist/);
      return true;
    });
  });
});
