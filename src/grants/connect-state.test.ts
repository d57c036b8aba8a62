import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { attachGuest, controlRequest, ensureSwitch } from '../net/control.js';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { CacheDir } from '../runner/cache-dir.js';
import { main } from '../cli/main.js';
import { readConnections } from './connections.js';

// hostme connect survives a restart of the switch (a separate process): the
// switch keeps it in its state folder and applies it again once both ports
// are back; each instance's folder lists it, and hostme grants shows it.
// QEMU's side of the overlay is played by unix sockets that accept the
// switch's dial (no frames are needed to test the policy's state).
let dir: string;
const fakeQemus: net.Server[] = [];
const conns: net.Socket[] = [];

before(async () => { dir = await tempDir('hmconnstate-'); });
after(async () => {
  await controlRequest(dir, { op: 'stop' }).catch(() => {});
  for (const c of conns) c.destroy();
  for (const s of fakeQemus) s.close();
  await removeDir(dir);
});

async function fakeQemu(name: string): Promise<string> {
  const socket = path.join(dir, `${name}.sock`);
  const server = net.createServer((c) => { conns.push(c); c.on('error', () => {}); });
  fakeQemus.push(server);
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return socket;
}

type Ls = { networks: Array<{ name: string; connections: Array<{ from: string; to: string; port: number }> }> };
const connectionsOn = async (network: string) => ((await controlRequest(dir, { op: 'ls' })) as unknown as Ls).networks.find((n) => n.name === network)?.connections ?? [];

test('hostme connect is kept across a switch restart, in both instances\' state, and shown by hostme grants', { timeout: 120_000 }, async () => {
  const cache = path.join(dir, 'cache');
  for (const name of ['app', 'db']) await mkdir(new CacheDir(cache).instanceDir(name), { recursive: true });
  for (const name of ['app', 'db']) await attachGuest({ dir, network: 'pair', instance: name, socket: await fakeQemu(name), isolated: true });
  const cli = (...args: string[]) => main(['node', 'hostme', ...args, '--dir', dir, '--cache', cache]);
  assert.equal(await cli('connect', 'app', 'db', '--port', '5432'), 0);
  assert.deepEqual(await connectionsOn('pair'), [{ from: 'app', to: 'db', port: 5432 }]);

  await controlRequest(dir, { op: 'stop' });
  let stopped = false;
  for (let i = 0; i < 100 && !stopped; i++) {
    stopped = await controlRequest(dir, { op: 'ping' }).then(() => false, () => true);
    if (!stopped) await sleep(50);
  }
  assert.ok(stopped, 'the switch did not stop');
  await ensureSwitch(dir);
  // The restarted switch dials both again (its ports.json) and applies the saved connection.
  let after: Array<{ from: string; to: string; port: number }> = [];
  for (let i = 0; i < 100 && after.length === 0; i++) {
    after = await connectionsOn('pair');
    if (after.length === 0) await sleep(100);
  }
  assert.deepEqual(after, [{ from: 'app', to: 'db', port: 5432 }]);
  assert.match(await readFile(path.join(dir, 'connections.json'), 'utf8'), /"port": 5432/);

  for (const name of ['app', 'db']) assert.deepEqual(await readConnections(new CacheDir(cache).instanceDir(name)), [{ from: 'app', to: 'db', port: 5432 }]);
  let printed = '';
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string) => { printed += chunk; return true; }) as typeof process.stdout.write;
  try {
    assert.equal(await main(['node', 'hostme', 'grants', 'db', '--cache', cache]), 0);
  } finally {
    process.stdout.write = write;
  }
  assert.match(printed, /connections: from app on port 5432/);

  assert.equal(await cli('disconnect', 'app', 'db', '--port', '5432'), 0);
  assert.deepEqual(await connectionsOn('pair'), []);
  assert.deepEqual(await readConnections(new CacheDir(cache).instanceDir('app')), []);
});
