import assert from 'node:assert/strict';
import { cp } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { packSmallImage, type SmallImage } from '../export/test-fixture.js';
import { loadPrivateKey } from '../pack/publisher-key.js';
import { packImage } from '../pack/pack-image.js';
import { openRepository } from '../repo/repository.js';
import { startRepoServer, type RunningRepoServer } from '../server/server.js';
import { runCli } from '../testing/published-guest.js';

/** A server that answers every request with headers and then one byte per second. */
async function startTrickle(): Promise<{ url: string; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '100000' });
    const timer = setInterval(() => res.write('{'), 1000);
    timers.add(timer);
    res.on('close', () => clearInterval(timer));
  });
  server.on('connection', (s) => sockets.add(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((r) => {
        for (const t of timers) clearInterval(t);
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A loopback port nothing listens on. */
async function deadUrl(): Promise<string> {
  const server = http.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return `http://127.0.0.1:${port}`;
}

const boot = (link: string, cache: string, extra: string[] = []) =>
  runCli(['run', link, ...extra, '--cache', cache, '--until', 'HOSTME-READY', '--timeout', '240', '--console', 'none'], { timeoutMs: 300_000 });

describe('metadata fails over like objects do; sources are asked in parallel; no rollback', () => {
  let img: SmallImage;
  let honest: RunningRepoServer;
  let stale: RunningRepoServer;
  let trickle: { url: string; close(): Promise<void> };
  let dead: string;

  before(async () => {
    img = await packSmallImage();
    // The stale mirror stops at version 1; the honest repository goes on to version 2.
    const staleDir = join(img.dir, 'stale-repo');
    await cp(img.repoDir, staleDir, { recursive: true });
    const key = await loadPrivateKey(join(img.dir, 'publisher.key'));
    await packImage({ repo: openRepository(img.repoDir), workDir: img.dir, key, disk: img.guest.disk, name: 'small', version: '2', kernel: img.guest.kernel, cmdline: img.guest.cmdline, memoryMiB: img.guest.memoryMiB, cpus: 1, description: 'version 2' });
    honest = await startRepoServer({ repoDir: img.repoDir });
    stale = await startRepoServer({ repoDir: staleDir });
    trickle = await startTrickle();
    dead = await deadUrl();
  });
  after(async () => {
    await honest?.close();
    await stale?.close();
    await trickle?.close();
    await img?.cleanup();
  });

  test('the link\'s server down, an honest --mirror, cold cache: boots from the mirror and names the dead source', { timeout: 320_000 }, async () => {
    const run = await boot(`${dead}/i/small`, join(img.dir, 'cache-a'), ['--mirror', honest.url]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, new RegExp(`source ${dead}: unreachable`));
  });

  test('the link\'s server trickling 1 byte/s plus an unreachable --mirror beside an honest one: boots, both bad sources named', { timeout: 320_000 }, async () => {
    const run = await boot(`${trickle.url}/i/small`, join(img.dir, 'cache-b'), ['--mirror', dead, honest.url]);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, new RegExp(`source ${trickle.url}: (unreachable or slow|no answer)`));
    assert.match(run.stderr, new RegExp(`source ${dead}: unreachable`));
  });

  test('a mirror offering a version older than one this machine has seen is not used for the manifest; alone, it is refused', { timeout: 320_000 }, async () => {
    // cache-a has seen small@2 through the link of the first test (the link's server is still down).
    const cache = join(img.dir, 'cache-a');
    // A new instance: the first test's instance keeps its own base version and would not look at the sources.
    const run = await boot(`${dead}/i/small`, cache, ['--mirror', stale.url, honest.url, '--instance', 'second']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, new RegExp(`source ${stale.url}: refused for the manifest: it offers small@1, older than small@2 already seen here \\(rollback\\)`));
    assert.match(run.stderr, /booting small@2/);
    const alone = await runCli(['run', `${dead}/i/small`, '--mirror', stale.url, '--instance', 'third', '--cache', cache, '--until', 'HOSTME-READY', '--timeout', '60', '--console', 'none'], { timeoutMs: 120_000 });
    assert.notEqual(alone.code, 0);
    assert.match(alone.stderr, /offers small@1 .*older than small@2 .*already seen on this machine: refusing to go back/);
  });
});
