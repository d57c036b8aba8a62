import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { packWithNewKey, removeDir, tempDir } from '../testing/fixtures.js';
import { runCli } from '../testing/published-guest.js';
import { loadReferenceGuest } from '../testing/reference-guest.js';
import { controlRequest } from './control.js';
import type { Lease } from './registry.js';

// `hostme run` as a user types it: the image's manifest names a network
// (network.join), --net overrides it, and the switch starts on demand.
let work: string;
let repoDir: string;
let netDir: string;

before(async () => {
  const guest = loadReferenceGuest();
  work = await tempDir('hmnet-run-');
  repoDir = path.join(work, 'repo');
  netDir = path.join(work, 'net');
  await packWithNewKey(work, repoDir, {
    disk: guest.disk,
    name: 'netdemo',
    version: '1',
    kernel: guest.kernel,
    cmdline: guest.cmdline,
    memoryMiB: guest.memoryMiB,
    cpus: guest.cpus,
    network: { join: 'demo' },
  });
});

after(async () => {
  await controlRequest(netDir, { op: 'stop' }).catch(() => {});
  await removeDir(work);
});

function hostmeRun(extra: string[]) {
  return runCli(['run', repoDir, 'netdemo', '--cache', path.join(work, 'cache'), '--until', 'HOSTME-NET eth0 100\\.', '--timeout', '300', '--console', 'none', ...extra], {
    env: { HOSTME_NET_DIR: netDir, HOSTME_ACCEL: 'tcg' },
    timeoutMs: 320_000,
  });
}

test('hostme run joins the network the image names, --net picks another, and hostme net shows both', { timeout: 700_000 }, async () => {
  // Deny by default: the image asks for network demo; --yes grants what it asks.
  const first = await hostmeRun(['--instance', 'web', '--yes']);
  assert.equal(first.code, 0, first.stderr);
  assert.match(first.stderr, /asks for, and --yes grants:\n {2}- join overlay network "demo"/);
  assert.match(first.stderr, /joined network demo \(100\.\d+\.\d+\.0\/24\) as web\.demo\.hostme/);
  const second = await hostmeRun(['--instance', 'web2', '--net', 'other']);
  assert.equal(second.code, 0, second.stderr);
  assert.match(second.stderr, /joined network other/);

  const leases = await runCli(['net', 'leases', 'demo', '--dir', netDir, '--json']);
  assert.equal(leases.code, 0, leases.stderr);
  const [lease] = JSON.parse(leases.stdout) as Lease[];
  assert.equal(lease?.instance, 'web');
  assert.equal(lease?.host, 'web');
  const ls = await runCli(['net', 'ls', '--dir', netDir, '--json']);
  const networks = JSON.parse(ls.stdout) as Array<{ name: string; subnet: string }>;
  assert.deepEqual(networks.map((n) => n.name), ['demo', 'other']);
  assert.notEqual(networks[0]!.subnet, networks[1]!.subnet);
  const token = await runCli(['net', 'token', 'demo', '--dir', netDir]);
  assert.match(token.stdout, /^hmn_demo_[A-Za-z0-9_-]{32}\n$/);
  const stop = await runCli(['net', 'stop', '--dir', netDir]);
  assert.equal(stop.stdout, 'switch stopped\n', stop.stderr);
  await assert.rejects(controlRequest(netDir, { op: 'ping' }), { code: 'net-switch-down' });
});

test('hostme run without a terminal refuses an image that asks for a network nobody granted, naming the flag', async () => {
  const refused = await runCli(['run', repoDir, 'netdemo', '--cache', path.join(work, 'cache-refused'), '--console', 'none'], { env: { HOSTME_NET_DIR: netDir } });
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /netdemo@1 asks for more than is granted: join overlay network "demo"/);
  assert.match(refused.stderr, /--allow-net=network:demo/);
  const badFlag = await runCli(['run', repoDir, 'netdemo', '--allow-port=70000', '--console', 'none'], { env: { HOSTME_NET_DIR: netDir } });
  assert.equal(badFlag.code, 1);
  assert.match(badFlag.stderr, /--allow-port=70000: port "70000" is not 1..65535/);
});

test('hostme run --net refuses bad names and hub links with a clear message', async () => {
  const bad = await runCli(['run', repoDir, 'netdemo', '--net', 'Not Valid', '--console', 'none'], { env: { HOSTME_NET_DIR: netDir } });
  assert.equal(bad.code, 2, 'a usage error exits 2');
  assert.match(bad.stderr, /--net Not Valid: a network name is lowercase letters/);
  const hub = await runCli(['run', repoDir, 'netdemo', '--net', 'demo@https://hub.example', '--console', 'none'], { env: { HOSTME_NET_DIR: netDir } });
  assert.match(hub.stderr, /joining through a hub needs a token \(--net-token/);
});
