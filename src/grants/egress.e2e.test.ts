import assert from 'node:assert/strict';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { controlRequest } from '../net/control.js';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { bootGrantsGuest, grantsCli, type GrantsGuest } from '../testing/grants-guest.js';
import { EGRESS_PORT, EgressProxy } from './egress.js';
import { controlGrants } from './runtime.js';

// One reference guest (real QEMU, TCG) on an overlay network it is not a
// member of (isolated): it reaches only the gateway, where the egress proxy
// (the caretaker) lets it through to the allow-listed host:port. Loopback
// listeners stand for "the internet".
let dir: string;
let cache: string;
let guest: GrantsGuest | undefined;
let egress: EgressProxy | undefined;
const internet: net.Server[] = [];
const NETWORK = 'egress';
const INSTANCE = 'eg';

before(async () => {
  dir = await tempDir('hmegress-');
  cache = await tempDir('hmegress-cache-');
});
after(async () => {
  await guest?.close();
  await egress?.close();
  await controlRequest(dir, { op: 'stop' }).catch(() => {});
  for (const server of internet) server.close();
  await removeDir(dir);
  await removeDir(cache);
});

/** A loopback listener: says hello, or (stream) sends 1 KiB every 20 ms until closed. */
async function listener(name: string, stream = false): Promise<{ port: number; open: Set<net.Socket> }> {
  const open = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    open.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => open.delete(socket));
    if (!stream) return void socket.end(`HELLO-${name}\n`);
    const timer = setInterval(() => socket.write(Buffer.alloc(1024, 0x61)), 20);
    socket.on('close', () => clearInterval(timer));
  });
  internet.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, open };
}

async function sh(command: string, timeoutMs = 60_000): Promise<string> {
  return (await guest!.sh(command, timeoutMs)).out;
}

async function until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs / 1000} s`);
    await sleep(50);
  }
}

test('egress: denied by default, the allow-listed host:port reachable, granted and revoked at runtime; the NIC starts as a link-down stand-in', { timeout: 900_000 }, async () => {
  const allowed = await listener('A');
  const other = await listener('B');
  const streamer = await listener('C', true);
  const cli = grantsCli(cache);
  egress = await EgressProxy.listen(path.join(dir, 'egress.sock'), [{ host: '127.0.0.1', port: allowed.port }]);
  // Network not granted at start: the NIC is there, its link down (set before the switch dials).
  guest = await bootGrantsGuest({
    work: dir, cache, instance: INSTANCE, control: { net: false, egress },
    network: { name: NETWORK, isolated: true, services: [{ port: EGRESS_PORT, socket: egress.socketPath }] },
  });
  const { instanceDir } = guest;
  // The rc script's DHCP gave up on the carrier-less NIC; bring it up to read its carrier.
  const carrier = await sh('ls /sys/class/net; ifconfig eth0 up; sleep 1; echo "CARRIER $(cat /sys/class/net/eth0/carrier)"');
  assert.match(carrier, /CARRIER 0/, `the denied NIC has carrier: ${carrier}`);

  assert.equal(await cli('grant', INSTANCE, 'net'), 0);
  const dhcp = await sh('udhcpc -i eth0 -s /etc/hostme/udhcpc.script -q -n -t 10 -T 2');
  assert.match(dhcp, /HOSTME-NET eth0 \d+\.\d+\.\d+\.\d+/, dhcp);
  const gateway = guest.gateway!;
  const connect = (port: number, hold = 2) => `(printf 'CONNECT 127.0.0.1:${port} HTTP/1.1\\r\\n\\r\\n'; sleep ${hold}) | timeout 20 nc ${gateway} ${EGRESS_PORT}`;

  // Allowed host:port: through. Anything else: 403, and no other TCP port answers at the gateway.
  assert.match(await sh(connect(allowed.port)), /200 Connection established[\s\S]*HELLO-A/);
  const denied = await sh(connect(other.port));
  assert.match(denied, /403 Forbidden/);
  assert.doesNotMatch(denied, /HELLO-B/);
  assert.doesNotMatch(await sh(`echo x | timeout 10 nc ${gateway} 22; echo nc-done`), /SSH/);

  // Granted at runtime: the next connection goes through.
  assert.equal(await cli('grant', INSTANCE, 'egress', `127.0.0.1:${other.port}`), 0);
  assert.match(await sh(connect(other.port)), /HELLO-B/);

  // A running transfer, then revoked: the host side closes, the guest's copy stops growing.
  await cli('grant', INSTANCE, 'egress', `127.0.0.1:${streamer.port}`);
  await sh(`(${connect(streamer.port, 600).replace('timeout 20 ', '')} > /run/t.out &)`);
  await until('the transfer started', () => streamer.open.size === 1, 60_000);
  await until('data flowed', () => [...streamer.open][0]!.bytesWritten > 64 * 1024, 60_000);
  assert.equal(await cli('revoke', INSTANCE, 'egress', `127.0.0.1:${streamer.port}`), 0);
  await until('the revoked transfer closed at the host', () => streamer.open.size === 0, 10_000);
  const sizes = await sh('a=$(wc -c </run/t.out); sleep 3; b=$(wc -c </run/t.out); echo "SIZES $a $b"');
  const [, a, b] = /SIZES (\d+) (\d+)/.exec(sizes)!;
  assert.ok(Number(a) > 0, 'nothing arrived in the guest');
  assert.equal(a, b, 'the transfer kept going after revoke');
  assert.match(await sh(connect(streamer.port)), /403 Forbidden/);

  const status = await controlGrants(instanceDir, { op: 'status' });
  assert.deepEqual(status.granted, { net: true, egress: [`127.0.0.1:${allowed.port}`, `127.0.0.1:${other.port}`], dirs: [] });
  assert.equal(await cli('grant', INSTANCE, 'egress', 'no-port'), 2);
});
