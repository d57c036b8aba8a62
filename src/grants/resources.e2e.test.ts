import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { publishedReferenceGuest } from '../testing/published-guest.js';
import { grantsCli } from '../testing/grants-guest.js';
import { CacheDir } from '../runner/cache-dir.js';
import { startImage, type RunningImage } from '../runner/run-image.js';
import { applyGrantFlags } from './flags.js';
import { controlGrants } from './runtime.js';

// One reference guest (real QEMU, TCG): memory granted below what the image
// asks becomes QEMU's -m (the guest sees it); host CPU granted at runtime is
// a cgroup limit on QEMU that the host kernel enforces while the guest spins.
let dir: string;
let running: RunningImage | undefined;
const INSTANCE = 'rs';

before(async () => { dir = await tempDir('hmres-'); });
after(async () => {
  await running?.vm.shutdown().catch(() => {});
  await running?.finished.catch(() => {});
  await removeDir(dir);
});

test('resources: --allow-memory caps -m at start; hostme grant NAME cpus throttles QEMU through a cgroup, revoke lifts it', { timeout: 900_000 }, async () => {
  const published = await publishedReferenceGuest();
  const cache = path.join(dir, 'cache');
  const cli = grantsCli(cache);
  const asked = published.guest.memoryMiB;
  const grants = applyGrantFlags([`--allow-memory=${asked - 64}`, '--allow-cpus=8'], undefined, { cwd: dir, root: dir });
  running = await startImage({
    link: { repo: published.repoDir, name: 'hello' }, cacheDir: cache, console: 'none', keepRunning: true, timeoutMs: 600_000,
    instance: INSTANCE, grants: async () => grants,
  });
  const argv = running.vm.argv;
  assert.equal(argv[argv.indexOf('-m') + 1], String(asked - 64), 'memory below the ask is applied');
  assert.equal(argv[argv.indexOf('-smp') + 1], String(published.guest.cpus), 'cpus above the ask are capped at the ask');
  await running.vm.waitForConsole(/HOSTME-READY/, { timeoutMs: 300_000, since: 0 });
  const since = running.vm.consoleLength;
  running.vm.sendConsole("awk '/MemTotal/ {print \"MEM=\" $2 \"=KB\"}' /proc/meminfo\n");
  const [, kb] = await running.vm.waitForConsole(/MEM=(\d+)=KB/, { since, timeoutMs: 60_000 });
  assert.ok(Number(kb) <= (asked - 64) * 1024, `the guest sees ${kb} KiB`);

  const instanceDir = new CacheDir(cache).instanceDir(INSTANCE);
  assert.equal(await cli('grant', INSTANCE, 'cpus', '0.1'), 0);
  const status = await controlGrants(instanceDir, { op: 'status' }) as { granted: { cpuQuota?: number } };
  assert.equal(status.granted.cpuQuota, 0.1);
  // The QEMU process is in hostme's cgroup with a quota of 10 ms per 100 ms.
  const groups = await readFile(`/proc/${running.vm.pid}/cgroup`, 'utf8');
  const mine = /^\d+:[^:]*\bcpu\b[^:]*:(.*hostme-rs-\d+)$/m.exec(groups) ?? /^0::(.*hostme-rs-\d+)$/m.exec(groups);
  assert.ok(mine, `QEMU is not in a hostme cgroup:\n${groups}`);
  // The guest spins; the host kernel throttles QEMU (counted in cpu.stat), whatever the guest does.
  running.vm.sendConsole('i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo SPUN\n');
  const cgroupDir = await findCgroupDir(mine[1]!);
  const throttled = async () => Number(/nr_throttled (\d+)/.exec(await readFile(path.join(cgroupDir, 'cpu.stat'), 'utf8'))?.[1] ?? 0);
  for (let i = 0; i < 200 && (await throttled()) === 0; i++) await sleep(100);
  assert.ok((await throttled()) > 0, 'QEMU was never throttled');
  assert.equal(await cli('grant', INSTANCE, 'cpus', 'half'), 2);
  assert.equal(await cli('revoke', INSTANCE, 'cpus'), 0);
  const quota = await readFile(path.join(cgroupDir, cgroupDir.includes('/cpu/') || cgroupDir.includes('/cpu,') ? 'cpu.cfs_quota_us' : 'cpu.max'), 'utf8');
  assert.match(quota, /^(-1|max )/);
  await running.vm.waitForConsole(/^SPUN/m, { since, timeoutMs: 300_000 });
});

/** The cgroup folder (v1 cpu or v2) for a path from /proc/PID/cgroup. */
async function findCgroupDir(rel: string): Promise<string> {
  for (const base of ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/cpu,cpuacct', '/sys/fs/cgroup/unified', '/sys/fs/cgroup']) {
    const dir = path.join(base, rel);
    if (await readFile(path.join(dir, 'cpu.stat'), 'utf8').then(() => true, () => false)) return dir;
  }
  assert.fail(`no cgroup folder for ${rel}`);
}
