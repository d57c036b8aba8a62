import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decompress } from 'zstd-napi';
import { StaticServer } from '../store/testing/static-server.js';
import { publishedReferenceGuest, runCli, copyRepo, type PublishedGuest } from '../testing/published-guest.js';
import { tempDir, removeDir, mountTmpfs, skipUnlessCi } from '../testing/fixtures.js';
import { isObjectId } from '../format/digest.js';
import { sha256Hex } from '../format/node/codecs.js';
import { manifestPath } from '../repo/layout.js';
import type { RunStats } from './run-stats.js';
import { openRepository } from '../repo/repository.js';
import { isHole } from '../format/chunk-index.js';

// Faults around `hostme run`, each with real QEMU (TCG) over loopback HTTP.
let published: PublishedGuest;
let work: string;
const servers: StaticServer[] = [];

before(async () => {
  published = await publishedReferenceGuest();
  work = await tempDir('hostme-run-faults-');
});

after(async () => {
  for (const server of servers) await server.close().catch(() => {});
  await removeDir(work);
});

/** Requests a run makes before QEMU starts: listing, manifest, two indexes and the kernel's chunks. */
async function requestsBeforeBoot(): Promise<number> {
  const repo = openRepository(published.repoDir);
  const { manifest } = await repo.loadImage('hello', '1');
  if (manifest.boot.mode !== 'direct') throw new Error('expected a direct-boot image');
  const kernel = await repo.readIndex(manifest.boot.kernel);
  return 4 + new Set(kernel.ids.filter((id) => !isHole(id))).size;
}

async function serve(root = published.repoDir, behavior = {}): Promise<StaticServer> {
  const server = await StaticServer.start(root, behavior);
  servers.push(server);
  return server;
}

function runArgs(link: string[], cache: string, extra: string[] = []): string[] {
  return ['run', ...link, '--cache', cache, '--until', 'HOSTME-READY', '--timeout', '120', '--console', 'none', ...extra];
}

async function stats(file: string): Promise<RunStats> {
  return JSON.parse(await readFile(file, 'utf8')) as RunStats;
}

test('server unreachable at start with nothing cached: a clear error', async () => {
  const server = await serve();
  const url = server.url;
  await server.close();
  const out = await runCli(runArgs([url, 'hello'], join(work, 'cache-unreachable')));
  assert.equal(out.code, 1);
  assert.match(out.stderr, /cannot reach http:\/\/127\.0\.0\.1:\d+ .*nothing is cached/);
});

/** Object paths of the image's disk (not its kernel): what a server serves once the guest reads its disk. */
async function diskObjectPaths(): Promise<(path: string) => boolean> {
  const repo = openRepository(published.repoDir);
  const { manifest } = await repo.loadImage('hello', '1');
  const kernel = manifest.boot.mode === 'direct' ? new Set((await repo.readIndex(manifest.boot.kernel)).ids) : new Set<string>();
  return (path) => path.startsWith('objects/') && !kernel.has(path.slice(path.lastIndexOf('/') + 1));
}

test('server dies mid-boot with a second mirror: the boot fails over and completes', async () => {
  // It dies after 3 disk objects, whichever source the metadata and the kernel came from
  // (they are asked of both sources in parallel, so a request count would depend on luck).
  const dying = await serve(published.repoDir, { dropAfterMatching: { test: await diskObjectPaths(), count: 3 } });
  // A little slower, so the mirror group measures the dying server as the best one and starts there.
  const good = await serve(published.repoDir, { delayMs: 250 });
  const file = join(work, 'failover.json');
  const out = await runCli(runArgs([dying.url, 'hello'], join(work, 'cache-failover'), ['--mirror', good.url, '--stats-json', file]));
  assert.equal(out.code, 0, out.stderr);
  const s = await stats(file);
  assert.ok(dying.requests.some((r) => r.status === -1), 'the first server never died');
  assert.ok(good.count('objects/') > 0, 'the second mirror served nothing');
  assert.ok(s.errors.some((e) => /failover/.test(e)), `no failover reported: ${s.errors.join('; ')}`);
});

test('server dies mid-boot with no other mirror: the guest gets I/O errors and the run ends, never hangs', async () => {
  const dying = await serve(published.repoDir, { dropAfter: (await requestsBeforeBoot()) + 3 });
  const out = await runCli(runArgs([dying.url, 'hello'], join(work, 'cache-dying'), ['--timeout', '90']), { timeoutMs: 150_000 });
  assert.notEqual(out.code, null, 'hostme run had to be killed: it hung');
  assert.notEqual(out.code, 0);
  assert.match(out.stderr, /booting hello@1/, 'the server should have died after QEMU started');
  assert.match(out.stderr, /hostme: /);
});

test('a mirror serving wrong bytes is rejected, demoted and reported; the chunk comes from another mirror', async () => {
  const liar = await serve(published.repoDir, { lie: true });
  const good = await serve();
  const file = join(work, 'liar.json');
  // The listing and manifest come from the lying server (it only lies about objects).
  const out = await runCli(runArgs([liar.url, 'hello'], join(work, 'cache-liar'), ['--mirror', good.url, '--stats-json', file]));
  assert.equal(out.code, 0, out.stderr);
  const s = await stats(file);
  assert.ok(s.errors.some((e) => /wrong bytes.*demoted/.test(e)), `not reported: ${s.errors.join('; ')}`);
  await assertCacheIsSound(join(work, 'cache-liar'));
});

test('tampered and unsigned manifests are refused', async () => {
  const repo = await copyRepo(published.repoDir, join(work, 'tampered-repo'));
  const file = join(repo, manifestPath('hello', '1'));
  const envelope = JSON.parse(await readFile(file, 'utf8')) as { payload: string; signatures: unknown[] };
  const manifest = JSON.parse(Buffer.from(envelope.payload, 'base64').toString()) as { hardware: { memoryMiB: number } };
  manifest.hardware.memoryMiB = 4096;
  envelope.payload = Buffer.from(JSON.stringify(manifest)).toString('base64');
  await writeFile(file, JSON.stringify(envelope));
  const server = await serve(repo);
  const tampered = await runCli(runArgs([server.url, 'hello@1'], join(work, 'cache-tampered')));
  assert.equal(tampered.code, 1);
  assert.match(tampered.stderr, /does not match the content \(tampered\)/);

  envelope.signatures = [];
  await writeFile(file, JSON.stringify(envelope));
  const unsigned = await runCli(runArgs([server.url, 'hello@1'], join(work, 'cache-unsigned')));
  assert.equal(unsigned.code, 1);
  assert.match(unsigned.stderr, /not signed/);
});

test('a full cache directory: the VM still boots, uncached, and says so', async (t) => {
  const cache = join(work, 'cache-full');
  const unmount = await mountTmpfs(cache, '3m');
  if (!unmount) return t.skip(skipUnlessCi('mounting a tmpfs is not permitted here'));
  try {
    const server = await serve();
    const file = join(work, 'full.json');
    const out = await runCli(runArgs([server.url, 'hello'], cache, ['--stats-json', file]));
    assert.equal(out.code, 0, out.stderr);
    const s = await stats(file);
    assert.ok(s.errors.some((e) => /cache not persisting/.test(e)), `not reported: ${s.errors.join('; ')}`);
    await assertCacheIsSound(cache);
  } finally {
    await unmount();
  }
});

test('a read-only cache directory: the VM still boots and the changes are kept for this run only', async (t) => {
  const cache = join(work, 'cache-ro');
  const unmount = await mountTmpfs(cache, '1m,ro');
  if (!unmount) return t.skip(skipUnlessCi('mounting a tmpfs is not permitted here'));
  try {
    const server = await serve();
    const out = await runCli(runArgs([server.url, 'hello'], cache));
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stderr, /running without caching/);
    assert.match(out.stderr, /changes will be discarded/);
  } finally {
    await unmount();
  }
});

test('kill -9 of hostme run mid-boot, then a second run succeeds and the cache holds no bad object', async () => {
  const server = await serve();
  const cache = join(work, 'cache-killed');
  const first = runCli(['run', server.url, 'hello', '--cache', cache, '--timeout', '120', '--console', 'none']);
  for (let i = 0; i < 300 && server.count('objects/') < 40; i++) await new Promise((r) => setTimeout(r, 50));
  first.kill('SIGKILL');
  await first;
  const second = await runCli(runArgs([server.url, 'hello'], cache));
  assert.equal(second.code, 0, second.stderr);
  await assertCacheIsSound(cache);
});

test('two runs of the same instance at once: the second refuses, the first is unharmed', async () => {
  const server = await serve();
  const cache = join(work, 'cache-twice');
  const first = runCli(['run', server.url, 'hello', '--cache', cache, '--timeout', '120', '--console', 'none']);
  for (let i = 0; i < 300 && server.count('objects/') < 5; i++) await new Promise((r) => setTimeout(r, 50));
  const second = await runCli(runArgs([server.url, 'hello'], cache));
  assert.equal(second.code, 1);
  assert.match(second.stderr, /already running/);
  first.kill('SIGTERM');
  await first;
  const third = await runCli(runArgs([server.url, 'hello'], cache));
  assert.equal(third.code, 0, third.stderr);
});

test('QEMU missing: a clear message naming the package to install', async () => {
  const server = await serve();
  const out = await runCli(runArgs([server.url, 'hello'], join(work, 'cache-noqemu')), { env: { HOSTME_QEMU: '/nonexistent/qemu-system-x86_64' } });
  assert.equal(out.code, 1);
  assert.match(out.stderr, /install the Debian package qemu-system-x86/);
});

/** Every object in a cache must hash to its name (zstd frames decoded). */
async function assertCacheIsSound(cache: string): Promise<void> {
  const objects = join(cache, 'objects');
  for (const prefix of await readdir(objects).catch(() => [] as string[])) {
    for (const name of await readdir(join(objects, prefix))) {
      assert.ok(isObjectId(name), `stray file in the cache: ${prefix}/${name}`);
      const stored = await readFile(join(objects, prefix, name));
      const zstd = stored.readUInt32LE(0) === 0xfd2fb528;
      const candidates = zstd ? [stored, decompressOrNull(stored)] : [stored];
      assert.ok(candidates.some((c) => c && sha256Hex(c) === name), `cached object ${name} fails its hash`);
    }
  }
}

function decompressOrNull(data: Uint8Array): Uint8Array | null {
  try {
    return decompress(data);
  } catch {
    return null;
  }
}
