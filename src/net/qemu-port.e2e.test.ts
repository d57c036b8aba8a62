import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { after, before, test } from 'node:test';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { removeDir, run, tempDir } from '../testing/fixtures.js';
import { runCli } from '../testing/published-guest.js';
import { controlRequest, ensureSwitch } from './control.js';
import type { Lease } from './registry.js';
import type { PortInfo } from './switch.js';

// A QEMU with no disk and only a virtio NIC runs SeaBIOS → iPXE, which asks
// for an address by DHCP: the switch (a separate process started on demand)
// must hand one out, capture it as pcap that tcpdump reads, and dial the
// guest again after being killed.
let dir: string;
const children: ChildProcess[] = [];

before(async () => {
  dir = await tempDir('hmnet-');
});

after(async () => {
  for (const child of children) child.kill('SIGKILL');
  await controlRequest(dir, { op: 'stop' }).catch(() => {});
  await removeDir(dir);
});

function startIpxeGuest(socket: string, mac: string): ChildProcess {
  const qemu = spawn(
    'qemu-system-x86_64',
    ['-nodefaults', '-no-user-config', '-display', 'none', '-accel', 'tcg', '-m', '64', '-serial', 'none', '-netdev', `stream,id=ov0,server=on,addr.type=unix,addr.path=${socket}`, '-device', `virtio-net-pci,netdev=ov0,mac=${mac}`],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  children.push(qemu);
  return qemu;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 180_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await sleep(500);
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function ports(network: string): Promise<PortInfo[]> {
  const reply = await controlRequest(dir, { op: 'ls' });
  return (reply.networks as Array<{ name: string; ports: PortInfo[] }>).find((n) => n.name === network)?.ports ?? [];
}

test('iPXE gets an address from the on-demand switch, the capture is a pcap tcpdump reads, and a restarted switch dials the guest again', { timeout: 400_000 }, async () => {
  await ensureSwitch(dir);
  const { pid: firstPid } = await controlRequest(dir, { op: 'ping' });
  const socket = path.join(dir, 'pxe1.sock');
  startIpxeGuest(socket, '52:54:00:aa:00:01');
  await until('QEMU socket', async () => (existsSync(socket) ? true : undefined), 30_000);

  const pcap = path.join(dir, 'pxe.pcap');
  const capture = spawn(process.execPath, [new URL('../../bin/hostme.js', import.meta.url).pathname, 'net', 'capture', 'pxe', '--dir', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(capture);
  capture.stdout!.pipe(createWriteStream(pcap));
  await until('capture attached', async () => (existsSync(pcap) ? true : undefined), 30_000);
  await sleep(1000);

  const attached = await controlRequest(dir, { op: 'attach', network: 'pxe', instance: 'pxe1', socket });
  assert.match(String(attached.subnet), /^100\.\d+\.\d+\.0\/24$/);

  // DISCOVER → OFFER → REQUEST → ACK, read back from the pcap by tcpdump.
  const decoded = await until('a DHCP ACK in the capture', async () => {
    const { stdout } = await run('tcpdump', ['-nv', '-r', pcap]).catch(() => ({ stdout: '' }));
    return /DHCP-Message[^\n]*\n?[^\n]*ACK/.test(stdout) || /Option 53[^:]*: ACK/.test(stdout) ? stdout : undefined;
  });
  const leases = (await controlRequest(dir, { op: 'leases', network: 'pxe' })).leases as Lease[];
  assert.equal(leases.length, 1);
  assert.equal(leases[0]!.instance, 'pxe1');
  assert.ok(decoded.includes(`Your-IP ${leases[0]!.ip}`), decoded);
  const [port] = await ports('pxe');
  assert.equal(port?.ip, leases[0]!.ip);
  assert.ok(port!.counters.txFrames >= 2 && port!.counters.rxFrames >= 2);

  // The CLI reads the same state.
  const cliLeases = await runCli(['net', 'leases', 'pxe', '--dir', dir, '--json']);
  assert.equal(cliLeases.code, 0, cliLeases.stderr);
  assert.equal((JSON.parse(cliLeases.stdout) as Lease[])[0]!.ip, leases[0]!.ip);

  // Kill the switch hard; the next command starts another that dials the guest again.
  capture.kill('SIGKILL');
  process.kill(firstPid as number, 'SIGKILL');
  await until('the old switch to be gone', async () => (await controlRequest(dir, { op: 'ping' }).then(() => undefined, () => true)), 30_000);
  await ensureSwitch(dir);
  const { pid: secondPid } = await controlRequest(dir, { op: 'ping' });
  assert.notEqual(secondPid, firstPid);
  const [back] = await ports('pxe');
  assert.equal(back?.instance, 'pxe1');
  const again = (await controlRequest(dir, { op: 'leases', network: 'pxe' })).leases as Lease[];
  assert.deepEqual(again.map((l) => l.ip), [leases[0]!.ip]);
});

test('the control socket refuses bad requests with a clear message', async () => {
  await ensureSwitch(dir);
  await assert.rejects(controlRequest(dir, { op: 'attach', network: 'Bad Name', instance: 'x', socket: '/tmp/x' }), { code: 'usage' });
  await assert.rejects(controlRequest(dir, { op: 'attach', network: 'ok', instance: 'x', socket: '/etc/passwd' }), /unix socket/);
  await assert.rejects(controlRequest(dir, { op: 'leases', network: '../etc' }), { code: 'usage' });
});
