import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { hostmeBin, runCli } from '../testing/published-guest.js';
import { bootNetGuest, guestShell, type NetGuest } from '../testing/net-guest.js';
import type { VmHandle } from '../vm/qemu.js';
import { attachGuest, controlRequest } from './control.js';
import type { Lease } from './registry.js';
import type { PortInfo } from './switch.js';

// Two switches in two processes standing for two machines: the hub
// (`hostme serve --net`) and this machine's switch, joined by a trunk. A
// guest on each side; they resolve and ping each other; the hub is killed
// and restarted on the same port: the trunk comes back, addresses stay.
let work: string;
let repo: string;
let hubDir: string;
let leafDir: string;
let hub: ChildProcessWithoutNullStreams | undefined;
let hubUrl = '';
const vms: VmHandle[] = [];

async function startHub(port: number): Promise<string> {
  const child = spawn(process.execPath, [hostmeBin, 'serve', repo, '--port', String(port), '--net', '--json', '--quiet']);
  hub = child;
  child.stderr.on('data', (d: Buffer) => process.stderr.write(`hub: ${d.toString()}`));
  let out = '';
  return new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      try {
        hubUrl = (JSON.parse(out) as { url: string }).url;
        resolve(hubUrl);
      } catch {
        // not complete yet
      }
    });
    child.once('exit', (code) => reject(new Error(`hostme serve exited ${code}`)));
  });
}

before(async () => {
  work = await tempDir('hmnet-trunk-');
  repo = path.join(work, 'repo');
  await mkdir(repo);
  hubDir = path.join(repo, '.net');
  leafDir = path.join(work, 'leaf');
});

after(async () => {
  await Promise.all(vms.map((vm) => vm.shutdown().catch(() => {})));
  await controlRequest(leafDir, { op: 'stop' }).catch(() => {});
  hub?.kill('SIGKILL');
  await removeDir(work);
});

function boot(instance: string, join: { dir: string; hub?: string; token?: string }): Promise<NetGuest> {
  return bootNetGuest({ work, network: 'demo', instance, join, onLaunch: (vm) => vms.push(vm) });
}

async function shell(vm: VmHandle, command: string): Promise<void> {
  await guestShell(vm, command, 90_000);
}

async function trunkUp(): Promise<boolean> {
  const reply = await controlRequest(leafDir, { op: 'ls' });
  const networks = reply.networks as Array<{ name: string; ports: PortInfo[] }>;
  return networks.some((n) => n.name === 'demo' && n.ports.some((p) => p.kind === 'trunk'));
}

test('guests behind two switches joined by a trunk reach each other by name, and again after the hub restarts', { timeout: 900_000 }, async () => {
  const url = await startHub(0);
  const port = Number(new URL(url).port);
  const issued = await runCli(['net', 'token', 'demo', '--dir', hubDir]);
  assert.equal(issued.code, 0, issued.stderr);
  const token = issued.stdout.trim();

  const [a, b] = await Promise.all([boot('a', { dir: hubDir }), boot('b', { dir: leafDir, hub: url, token })]);
  assert.notEqual(a.ip, b.ip);
  assert.equal(a.ip.split('.').slice(0, 3).join('.'), b.ip.split('.').slice(0, 3).join('.'), 'one subnet, decided by the hub');
  await shell(b.vm, 'ping -c 2 -W 5 a.demo.hostme');
  await shell(a.vm, 'ping -c 2 -W 5 b.demo.hostme');

  // The hub dies and comes back on the same port: the trunk dials again.
  hub!.kill('SIGKILL');
  await new Promise((r) => hub!.once('exit', r));
  await startHub(port);
  for (let i = 0; i < 120 && !(await trunkUp()); i++) await sleep(500);
  assert.ok(await trunkUp(), 'the trunk came back');
  // The restarted hub also re-dials guest a's port and relearns MACs: allow the
  // segment a bounded time (at most 15 tries of 2 s) to converge.
  const pingUntil = (target: string) => `ok=1; for i in $(seq 15); do if ping -c 1 -W 2 ${target}; then ok=0; break; fi; done; [ $ok = 0 ]`;
  await shell(b.vm, pingUntil('a.demo.hostme'));
  await shell(a.vm, pingUntil(b.ip));

  const leases = (await controlRequest(hubDir, { op: 'leases', network: 'demo' })).leases as Lease[];
  assert.deepEqual(leases.map((l) => [l.instance, l.ip]).sort(), [['a', a.ip], ['b', b.ip]]);
});

test('a trunk with a wrong token is refused with the hub message', async () => {
  const socket = path.join(work, 'dummy.sock');
  const server = net.createServer(() => {});
  await new Promise<void>((r) => server.listen(socket, r));
  try {
    await assert.rejects(attachGuest({ dir: leafDir, network: 'other', instance: 'x', socket, hub: hubUrl, token: 'hmn_other_wrong' }), /no valid join token for network other/);
  } finally {
    server.close();
  }
});
