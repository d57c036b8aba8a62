import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { packWithNewKey, removeDir, tempDir } from '../testing/fixtures.js';
import { runCli } from '../testing/published-guest.js';
import { loadReferenceGuest } from '../testing/reference-guest.js';
import { controlRequest } from '../net/control.js';

// hostme env create / ls / enter / rm, each a separate hostme process; enter
// boots the reference guest (real QEMU) with the environment's grants.
let work: string;
let repoDir: string;
let netDir: string;
let env: Record<string, string>;

before(async () => {
  work = await tempDir('hmenv-');
  repoDir = path.join(work, 'repo');
  netDir = path.join(work, 'net');
  await mkdir(path.join(work, 'src'));
  const guest = loadReferenceGuest();
  await packWithNewKey(work, repoDir, { disk: guest.disk, name: 'hello', version: '1', kernel: guest.kernel, cmdline: guest.cmdline, memoryMiB: guest.memoryMiB, cpus: guest.cpus });
  env = { HOSTME_NET_DIR: netDir, HOSTME_ACCEL: process.env.HOSTME_ACCEL ?? 'tcg', HOSTME_GRANT_ROOT: work, HOSTME_CACHE_DIR: path.join(work, 'cache') };
});
after(async () => {
  await controlRequest(netDir, { op: 'stop' }).catch(() => {});
  await removeDir(work);
});

test('hostme env: create records the grants (validated), ls lists, enter runs with them, rm forgets', { timeout: 600_000 }, async () => {
  const created = await runCli(['env', 'create', 'web', '--from', repoDir, '--image', 'hello', `--allow-dir=${path.join(work, 'src')}:ro`], { env });
  assert.equal(created.code, 0, created.stderr);
  assert.match(created.stdout, /dirs: .*\/src \(ro\)/);
  assert.match(created.stdout, /networks: none/);
  const outside = await runCli(['env', 'create', 'bad', '--from', repoDir, '--image', 'hello', '--allow-dir=/etc'], { env });
  assert.equal(outside.code, 1);
  assert.match(outside.stderr, /--allow-dir=\/etc: outside the allowed root/);
  const again = await runCli(['env', 'create', 'web', '--from', repoDir, '--image', 'hello'], { env });
  assert.match(again.stderr, /environment web exists/);

  const ls = await runCli(['env', 'ls', '--json'], { env });
  const rows = JSON.parse(ls.stdout) as Array<{ name: string; running: boolean; grants: { dirs: unknown[] } }>;
  assert.deepEqual(rows.map((r) => [r.name, r.running, r.grants.dirs.length]), [['web', false, 1]]);

  // A folder is granted: the NIC exists (gateway-only network "env", isolated), the folder server serves it.
  const entered = await runCli(['env', 'enter', 'web', '--console', 'none', '--until', 'HOSTME-READY', '--timeout', '300'], { env, timeoutMs: 320_000 });
  assert.equal(entered.code, 0, entered.stderr);
  assert.match(entered.stderr, /joined network env /);

  const removed = await runCli(['env', 'rm', 'web'], { env });
  assert.equal(removed.code, 0, removed.stderr);
  assert.equal((await runCli(['env', 'ls'], { env })).stdout, 'no environments (hostme env create NAME --from LINK)\n');
  assert.match((await runCli(['env', 'enter', 'web'], { env })).stderr, /no environment web/);
});
