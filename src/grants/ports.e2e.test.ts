import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { publishedReferenceGuest } from '../testing/published-guest.js';
import { freeLoopbackPort } from '../host/ports.js';
import { consoleShell, grantsCli } from '../testing/grants-guest.js';
import { CacheDir } from '../runner/cache-dir.js';
import { parsePublish } from '../runner/publish.js';
import { startImage, type RunningImage } from '../runner/run-image.js';
import { controlGrants } from './runtime.js';

// One reference guest (real QEMU, TCG) with busybox httpd listening on
// guest ports 80 and 8080. Port 80 is published at start, 8080 is granted
// while the VM runs; both pass hostme's port caretaker, so revoking one
// closes its listener and its open connections at once.
let dir: string;
let running: RunningImage | undefined;
const INSTANCE = 'pt';

before(async () => { dir = await tempDir('hmports-'); });
after(async () => {
  await running?.vm.shutdown().catch(() => {});
  await running?.finished.catch(() => {});
  await removeDir(dir);
});

async function sh(command: string, timeoutMs = 60_000): Promise<string> {
  const { out, rc } = await consoleShell(running!.vm)(command, timeoutMs);
  assert.equal(rc, 0, `${command}:
${out}`);
  return out;
}

async function get(port: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${port}/index.html`, { signal: AbortSignal.timeout(30_000) });
  return response.text();
}

async function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => { s.destroy(); resolve(false); });
    s.on('error', () => resolve(true));
  });
}

test('published ports through the caretaker: one at start, one granted at runtime, each revoked with its open connections', { timeout: 900_000 }, async () => {
  const published = await publishedReferenceGuest();
  const cache = path.join(dir, 'cache');
  const cli = grantsCli(cache);
  const atStart = await freeLoopbackPort();
  const later = await freeLoopbackPort();
  running = await startImage({
    link: { repo: published.repoDir, name: 'hello' }, cacheDir: cache, console: 'none', keepRunning: true, timeoutMs: 600_000,
    instance: INSTANCE, publish: [parsePublish(`${atStart}:80`)],
  });
  // QEMU was not handed the TCP forward: hostme listens.
  assert.ok(!running.vm.argv.some((a) => a.includes(`hostfwd=tcp`)), running.vm.argv.join(' '));
  await running.vm.waitForConsole(/HOSTME-NET eth0 \d+/, { timeoutMs: 300_000, since: 0 });
  await running.vm.waitForConsole(/HOSTME-READY/, { timeoutMs: 300_000, since: 0 });
  await sh('mkdir -p /run/www && echo GUEST-PAGE > /run/www/index.html && httpd -p 80 -h /run/www && httpd -p 8080 -h /run/www');

  assert.match(await get(atStart), /GUEST-PAGE/);
  assert.ok(await refused(later), 'the later port answers before it was granted');

  assert.equal(await cli('grant', INSTANCE, 'port', `${later}:8080`), 0);
  assert.match(await get(later), /GUEST-PAGE/);
  const instanceDir = new CacheDir(cache).instanceDir(INSTANCE);
  const status = await controlGrants(instanceDir, { op: 'status' }) as { granted: { ports?: string[] } };
  assert.deepEqual(status.granted.ports, [`127.0.0.1:${atStart}->80/tcp`, `127.0.0.1:${later}->8080/tcp`]);

  // An open connection (httpd waits for the request) is cut by the revoke.
  const open = net.connect(later, '127.0.0.1');
  let closed = false;
  open.on('close', () => { closed = true; });
  open.on('error', () => {});
  await new Promise((resolve) => open.once('connect', resolve));
  await sleep(200);
  assert.equal(closed, false, 'the connection ended before the revoke');
  assert.equal(await cli('revoke', INSTANCE, 'port', String(later)), 0);
  for (let i = 0; i < 100 && !closed; i++) await sleep(50);
  assert.ok(closed, 'the open connection survived the revoke');
  assert.ok(await refused(later), 'the revoked port still answers');

  assert.equal(await cli('revoke', INSTANCE, 'port', String(atStart)), 0);
  assert.ok(await refused(atStart), 'the port published at start still answers after revoke');
  assert.equal(await cli('revoke', INSTANCE, 'port', String(atStart)), 2, 'revoking a port not published is a usage error');
  assert.equal(await cli('grant', INSTANCE, 'port', '70000'), 2);
  // Given back: the same guest listener answers again.
  assert.equal(await cli('grant', INSTANCE, 'port', `${atStart}:80`), 0);
  assert.match(await get(atStart), /GUEST-PAGE/);

  const audit = await readFile(path.join(instanceDir, 'audit.log'), 'utf8');
  assert.match(audit, new RegExp(`"op":"revoke","kind":"port","value":"${later}"`));
});
