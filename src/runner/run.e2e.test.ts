import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startRepoServer, type RunningRepoServer } from '../server/server.js';
import { publishedReferenceGuest, runCli, copyRepo, type PublishedGuest } from '../testing/published-guest.js';
import { tempDir, removeDir, run } from '../testing/fixtures.js';
import { startImage } from './run-image.js';
import type { RunStats } from './run-stats.js';
import { DirStore } from '../store/node/dir-store.js';
import { isHole } from '../format/chunk-index.js';

// End to end over loopback HTTP with the 1 GiB reference guest, real QEMU (TCG).
let published: PublishedGuest;
let server: RunningRepoServer;
let work: string;

before(async () => {
  published = await publishedReferenceGuest();
  work = await tempDir('hostme-run-e2e-');
  server = await startRepoServer({ repoDir: published.repoDir, port: 0 });
});

after(async () => {
  await server?.close();
  await removeDir(work);
});

async function readStats(file: string): Promise<RunStats> {
  return JSON.parse(await readFile(file, 'utf8')) as RunStats;
}

test('cold boot from the landing page URL reaches HOSTME-READY fetching < 5% of the image, then boots offline from the cache', async () => {
  const cache = join(work, 'cache-cold');
  const stats1 = join(work, 'cold.json');
  const cold = await runCli(['run', `${server.url}/i/hello`, '--cache', cache, '--until', 'HOSTME-READY', '--timeout', '180', '--console', 'none', '--stats-json', stats1]);
  assert.equal(cold.code, 0, cold.stderr);
  const first = await readStats(stats1);
  assert.ok(first.msToReady !== null && first.msToReady > 0);
  assert.ok(first.chunksFetched > 0);
  const imageBytes = 1024 ** 3;
  assert.ok(first.bytesFetched < 0.05 * imageBytes, `fetched ${first.bytesFetched} bytes, more than 5% of the image`);
  assert.match(cold.stderr, /ready .* fetched/);

  // Server stopped: the manifest and every chunk the boot needs come from the cache.
  const offlineServer = await startRepoServer({ repoDir: published.repoDir, port: 0 });
  const url = offlineServer.url;
  const warmCache = join(work, 'cache-offline');
  const warmup = await runCli(['run', `${url}/i/hello`, '--cache', warmCache, '--until', 'HOSTME-READY', '--timeout', '180', '--console', 'none']);
  assert.equal(warmup.code, 0, warmup.stderr);
  await offlineServer.close();
  // The instance is pinned to hello@1, whose signed manifest is cached: no request at all.
  const stats2 = join(work, 'offline.json');
  const offline = await runCli(['run', `${url}/i/hello`, '--cache', warmCache, '--until', 'HOSTME-READY', '--timeout', '180', '--console', 'none', '--stats-json', stats2]);
  assert.equal(offline.code, 0, offline.stderr);
  const second = await readStats(stats2);
  assert.equal(second.bytesFetched, 0);
  assert.equal(second.requests, 0);
  assert.equal(second.chunksFetched, 0);
  assert.ok(second.chunksFromCache > 0);
  // --fresh asks for the latest version: the repository is tried, then the cache is used, and the user is told.
  const stats3 = join(work, 'offline-fresh.json');
  const fresh = await runCli(['run', `${url}/i/hello`, '--cache', warmCache, '--fresh', '--until', 'HOSTME-READY', '--timeout', '180', '--console', 'none', '--stats-json', stats3]);
  assert.equal(fresh.code, 0, fresh.stderr);
  assert.equal((await readStats(stats3)).bytesFetched, 0);
  assert.match(fresh.stderr, /unreachable.*starting from the local cache/);
});

test('the guest\'s writes persist across runs, commit publishes them as a new version, --fresh discards them', async () => {
  const cache = join(work, 'cache-persist');
  const link = { repo: server.url, name: 'hello' };
  const boot = async (fresh: boolean) => {
    const running = await startImage({ link, cacheDir: cache, console: 'none', until: /HOSTME-READY/, keepRunning: true, timeoutMs: 180_000, fresh });
    await running.vm.ready;
    return running;
  };
  const command = async (running: Awaited<ReturnType<typeof boot>>, text: string, done: RegExp) => {
    const since = running.vm.consoleLength;
    running.vm.sendConsole(text + '\n');
    await running.vm.waitForConsole(done, { since, timeoutMs: 60_000 });
    return running.vm.console.slice(-4000);
  };

  const first = await boot(true);
  await command(first, 'mount -o remount,rw / && echo persisted-$((6*7)) > /note.txt && sync && echo WROTE-$((40+2))', /WROTE-42/);
  await first.vm.shutdown();
  await first.finished;

  const second = await boot(false);
  const seen = await command(second, 'cat /note.txt; echo CHECK-$((1+1))', /CHECK-2/);
  assert.match(seen, /persisted-42/);
  await second.vm.shutdown();
  await second.finished;

  // hostme commit: image + the guest's writes as a new version; unchanged chunks reused.
  const commitRepo = await copyRepo(published.repoDir, join(work, 'commit-repo'));
  const committed = await runCli(['commit', 'hello', '--repo', commitRepo, '--key', published.keyFile, '--cache', cache, '--json']);
  assert.equal(committed.code, 0, committed.stderr);
  const summary = JSON.parse(committed.stdout) as { version: string; changedChunks: number; reusedChunks: number };
  assert.equal(summary.version, '2');
  assert.ok(summary.changedChunks > 0 && summary.changedChunks < 50, `changed ${summary.changedChunks} chunks`);
  assert.ok(summary.reusedChunks > 3000);
  const verified = await runCli(['verify', commitRepo, 'hello@2', '--pubkey', `${published.keyFile}.pub`]);
  assert.equal(verified.code, 0, verified.stderr);
  const fromCommit = await startImage({ link: { repo: commitRepo, name: 'hello', version: '2' }, cacheDir: join(work, 'cache-commit'), console: 'none', until: /HOSTME-READY/, keepRunning: true, timeoutMs: 180_000 });
  await fromCommit.vm.ready;
  const inCommit = await command(fromCommit, 'cat /note.txt; echo CHECK-$((3+3))', /CHECK-6/);
  assert.match(inCommit, /persisted-42/);
  await fromCommit.vm.shutdown();
  await fromCommit.finished;

  const third = await boot(true);
  const fresh = await command(third, 'cat /note.txt; echo CHECK-$((2+1))', /CHECK-3/);
  assert.doesNotMatch(fresh, /persisted-42/);
  assert.match(fresh, /No such file/);
  await third.vm.shutdown();
  await third.finished;
});

test('a profiled image needs fewer demand round trips on a cold boot', async () => {
  const repo = await copyRepo(published.repoDir, join(work, 'profile-repo'));
  const profiled = await runCli(['profile', 'hello', '--repo', repo, '--key', published.keyFile, '--json']);
  assert.equal(profiled.code, 0, profiled.stderr);
  const result = JSON.parse(profiled.stdout) as { version: string; chunks: number };
  assert.equal(result.version, '2');
  assert.ok(result.chunks > 0);

  const profServer = await startRepoServer({ repoDir: repo, port: 0 });
  try {
    const coldRun = async (spec: string, name: string) => {
      const file = join(work, `${name}.json`);
      const out = await runCli(['run', profServer.url, spec, '--cache', join(work, `cache-${name}`), '--until', 'HOSTME-READY', '--timeout', '180', '--console', 'none', '--stats-json', file]);
      assert.equal(out.code, 0, out.stderr);
      return readStats(file);
    };
    const without = await coldRun('hello@1', 'noprofile');
    const withProfile = await coldRun('hello@2', 'profile');
    assert.ok(withProfile.chunksPrefetched > 0, 'the profile was not used');
    assert.ok(
      withProfile.demandFetches < without.demandFetches,
      `demand fetches with profile ${withProfile.demandFetches} should be fewer than without ${without.demandFetches}`,
    );
  } finally {
    await profServer.close();
  }
});

test('--fill fetches the whole image in the background while the guest runs', async () => {
  const cache = join(work, 'cache-fill');
  const running = await startImage({ link: { repo: server.url, name: 'hello' }, cacheDir: cache, console: 'none', until: /HOSTME-READY/, keepRunning: true, timeoutMs: 180_000, fill: true, instance: 'fill' });
  try {
    await running.vm.ready;
    assert.equal(await running.filled, true);
  } finally {
    await running.vm.shutdown();
    await running.finished;
  }
  const objects = new DirStore(cache);
  const ids = new Set(running.devices[0]!.index.ids.filter((id) => !isHole(id)));
  const present = await Promise.all([...ids].map((id) => objects.has(id)));
  assert.equal(present.filter(Boolean).length, ids.size, 'some chunks are not in the cache after --fill');
});

test('nbdcopy and qemu-img convert of the exported image equal the original disk byte for byte', async () => {
  const socket = join(work, 'export.sock');
  const exporter = runCli(['nbd', `${server.url}/i/hello`, '--socket', socket, '--cache', join(work, 'cache-nbd')]);
  try {
    for (let i = 0; i < 100; i++) {
      const up = await run('nbdinfo', ['--size', `nbd+unix:///?socket=${socket}`]).then(() => true, () => false);
      if (up) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    const expected = await sha256File(published.guest.disk1g);
    const viaNbdcopy = join(work, 'nbdcopy.raw');
    await run('nbdcopy', [`nbd+unix:///disk0?socket=${socket}`, viaNbdcopy]);
    assert.equal(await sha256File(viaNbdcopy), expected);
    await removeDir(viaNbdcopy);
    const viaQemuImg = join(work, 'qemu-img.raw');
    await run('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', `nbd+unix:///disk0?socket=${socket}`, viaQemuImg]);
    assert.equal(await sha256File(viaQemuImg), expected);
    await removeDir(viaQemuImg);
  } finally {
    exporter.kill('SIGTERM');
    await exporter;
  }
});

async function sha256File(path: string): Promise<string> {
  const { stdout } = await run('sha256sum', [path], { maxBuffer: 1 << 20 });
  return stdout.split(' ')[0]!;
}

