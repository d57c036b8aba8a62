import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openRepository, Repository } from './repository.js';
import { verifyImage } from './verify.js';
import { inspectImage } from './inspect.js';
import { manifestPath } from './layout.js';
import { packImage } from '../pack/pack-image.js';
import { storeIndex } from '../pack/chunker.js';
import { isHole, indexStats } from '../format/chunk-index.js';
import { HOLE_ID, objectPath } from '../format/digest.js';
import { signEnvelope } from '../format/node/keys.js';
import { serializeManifest } from '../format/manifest.js';
import { StaticServer } from '../store/testing/static-server.js';
import { HttpTransport } from '../store/http-transport.js';
import { MirrorGroup } from '../store/mirror-group.js';
import { CacheStore } from '../store/cache-store.js';
import { DirStore } from '../store/node/dir-store.js';
import { hasCode, makeDiskBytes, newKey, patchFile, pseudoRandom, removeDir, tempDir, writeDisk } from '../testing/fixtures.js';

const CHUNK = 64 * 1024;
const key = newKey();

describe('repository: verify, trust and inspect', () => {
  let work: string;
  let pristine: string;
  let copies = 0;
  const servers: StaticServer[] = [];

  /** A fresh copy of the packed repository that a test may damage. */
  async function copyRepo(): Promise<string> {
    const dir = join(work, `copy-${++copies}`);
    await cp(pristine, dir, { recursive: true });
    return dir;
  }

  async function serve(dir: string, behavior = {}): Promise<StaticServer> {
    const server = await StaticServer.start(dir, behavior);
    servers.push(server);
    return server;
  }

  const httpRepo = (url: string) => new Repository(new HttpTransport(url, { retries: 0, backoffMs: 1 }));

  before(async () => {
    work = await tempDir('hostme-repo-');
    pristine = join(work, 'repo');
    const repo = openRepository(pristine);
    const disk = await writeDisk(join(work, 'disk.raw'), makeDiskBytes(2, 3));
    await packImage({ repo, workDir: work, disk, name: 'demo', version: '1', key, chunkSize: CHUNK });
    await patchFile(disk, 8192, pseudoRandom(4096, 42));
    await packImage({ repo, workDir: work, disk, name: 'demo', version: '2', key, chunkSize: CHUNK });
  });
  after(async () => {
    for (const s of servers) await s.close();
    await removeDir(work);
  });

  /** Corrupt one object and delete another of demo@1; returns what was damaged. */
  async function damage(dir: string) {
    const repo = openRepository(dir);
    const image = await repo.loadImage('demo', '1');
    const index = await repo.readIndex(image.manifest.disks[0]!);
    const data = index.ids.map((id, i) => ({ id, i })).filter(({ id }) => !isHole(id));
    const corrupt = data[2]!;
    const gone = data[data.length - 1]!;
    const file = join(dir, objectPath(corrupt.id));
    const bytes = await readFile(file);
    bytes[bytes.length >> 1] ^= 0x5a;
    await writeFile(file, bytes);
    await rm(join(dir, objectPath(gone.id)));
    return { corrupt, gone };
  }

  function checkReport(report: Awaited<ReturnType<typeof verifyImage>>, damaged: Awaited<ReturnType<typeof damage>>, location: string) {
    assert.equal(report.ok, false);
    assert.equal(report.bad.length, 2, JSON.stringify(report.bad, null, 2));
    const invalid = report.bad.find((b) => b.id === damaged.corrupt.id);
    const missing = report.bad.find((b) => b.id === damaged.gone.id);
    assert.ok(invalid && missing, JSON.stringify(report.bad));
    assert.equal(invalid.problem, 'invalid');
    assert.equal(missing.problem, 'missing');
    for (const [bad, { id, i }] of [[invalid, damaged.corrupt], [missing, damaged.gone]] as const) {
      assert.equal(bad.blob, 'disk disk0');
      assert.ok(bad.chunks.includes(i), `chunk ${i} in ${bad.chunks}`);
      assert.equal(bad.where, `${location}/${objectPath(id)}`);
      assert.ok(bad.detail.includes(id), bad.detail);
    }
  }

  test('an intact image verifies locally and over HTTP', async () => {
    assert.equal((await verifyImage(openRepository(pristine), 'demo', undefined, { trusted: [key] })).ok, true);
    const server = await serve(pristine);
    const report = await verifyImage(httpRepo(server.url), 'demo', '1', { trusted: [key] });
    assert.equal(report.ok, true, JSON.stringify(report.bad));
    assert.ok(report.objectsChecked > 0);
  });

  test('verify reports a corrupted and a missing object locally', async () => {
    const dir = await copyRepo();
    const damaged = await damage(dir);
    const repo = openRepository(dir);
    checkReport(await verifyImage(repo, 'demo', '1'), damaged, repo.location);
  });

  test('verify reports a corrupted and a missing object over HTTP', async () => {
    const dir = await copyRepo();
    const damaged = await damage(dir);
    const server = await serve(dir);
    checkReport(await verifyImage(httpRepo(server.url), 'demo', '1'), damaged, server.url);
  });

  test('a static server that ignores Range works for verify and listing', async () => {
    const server = await serve(pristine, { ignoreRange: true });
    const repo = httpRepo(server.url);
    assert.deepEqual((await repo.listing()).images.demo!.versions.map((v) => v.version), ['1', '2']);
    assert.equal((await verifyImage(repo, 'demo', undefined)).ok, true);
    assert.ok(server.requests.every((r) => r.range === undefined && r.status === 200), 'plain GETs only');
  });

  test('a truncated manifest is manifest-corrupt', async () => {
    const dir = await copyRepo();
    const file = join(dir, manifestPath('demo', '1'));
    const bytes = await readFile(file);
    await writeFile(file, bytes.subarray(0, bytes.length >> 1));
    await assert.rejects(openRepository(dir).loadImage('demo', '1'), hasCode('manifest-corrupt', 'demo/1.json'));
  });

  async function rewriteEnvelope(dir: string, version: string, edit: (envelope: { payload: string; signatures: unknown[] }) => void) {
    const file = join(dir, manifestPath('demo', version));
    const envelope = JSON.parse(await readFile(file, 'utf8'));
    edit(envelope);
    await writeFile(file, JSON.stringify(envelope));
  }

  test('a tampered manifest is signature-invalid', async () => {
    const dir = await copyRepo();
    await rewriteEnvelope(dir, '1', (envelope) => {
      const payload = Buffer.from(envelope.payload, 'base64').toString().replace('"memoryMiB": 256', '"memoryMiB": 4096');
      envelope.payload = Buffer.from(payload).toString('base64');
    });
    await assert.rejects(openRepository(dir).loadImage('demo', '1'), hasCode('signature-invalid'));
    await assert.rejects(verifyImage(openRepository(dir), 'demo', '1'), hasCode('signature-invalid'));
  });

  test('an unsigned manifest is manifest-unsigned', async () => {
    const dir = await copyRepo();
    await rewriteEnvelope(dir, '1', (envelope) => {
      envelope.signatures = [];
    });
    await assert.rejects(verifyImage(openRepository(dir), 'demo', '1'), hasCode('manifest-unsigned'));
  });

  test('a manifest signed by another key than the trusted one is key-mismatch', async () => {
    await assert.rejects(verifyImage(openRepository(pristine), 'demo', '1', { trusted: [newKey()] }), hasCode('key-mismatch'));
  });

  test('a properly signed manifest with formatVersion 2 is format-unsupported', async () => {
    const dir = await copyRepo();
    const repo = openRepository(dir);
    const image = await repo.loadImage('demo', '1');
    const future = { ...JSON.parse(JSON.stringify(image.manifest)), formatVersion: 2, newFeature: true };
    await writeFile(join(dir, manifestPath('demo', '1')), signEnvelope(new TextEncoder().encode(JSON.stringify(future)), key));
    await assert.rejects(repo.loadImage('demo', '1', { trusted: [key] }), hasCode('format-unsupported', 'version 2', 'upgrade'));
  });

  test('an index whose header describes more chunks than the disk is index-corrupt', async () => {
    const dir = await copyRepo();
    const repo = openRepository(dir);
    const image = await repo.loadImage('demo', '1');
    const disk = image.manifest.disks[0]!;
    const index = await repo.readIndex(disk);
    const longer = { chunkSize: index.chunkSize, size: index.size + 4 * CHUNK, ids: [...index.ids, HOLE_ID, HOLE_ID, HOLE_ID, index.ids.find((id) => !isHole(id))!] };
    const longerId = await storeIndex(longer, repo.objects);
    const manifest = { ...image.manifest, version: 'past', disks: [{ ...disk, index: longerId }] };
    await repo.publish(manifest, key);
    await assert.rejects(verifyImage(repo, 'demo', 'past'), hasCode('index-corrupt', longerId, 'points past'));
    // Through mirrors: the honest mirrors serve the genuine index and must not be blamed (demoted) for it.
    const [a, b] = [await serve(dir), await serve(dir)];
    const group = new MirrorGroup([httpRepo(a.url).objects, httpRepo(b.url).objects]);
    await assert.rejects(repo.readIndex(manifest.disks[0]!, group, 'disk disk0'), hasCode('index-corrupt', 'points past'));
    assert.deepEqual(group.ranking().map((r) => r.lying), [false, false]);
    // Through a cache: not a cache failure either.
    const cache = new CacheStore(new DirStore(join(work, `cache-${copies}`)), group);
    await assert.rejects(repo.readIndex(manifest.disks[0]!, cache, 'disk disk0'), hasCode('index-corrupt'));
    assert.equal(cache.degradedReason, undefined);
  });

  test('an index that covers less than the disk is index-corrupt', async () => {
    const dir = await copyRepo();
    const repo = openRepository(dir);
    const image = await repo.loadImage('demo', '1');
    const disk = image.manifest.disks[0]!;
    const index = await repo.readIndex(disk);
    const shorter = { chunkSize: index.chunkSize, size: index.size - 2 * CHUNK, ids: index.ids.slice(0, -2) };
    const shorterId = await storeIndex(shorter, repo.objects);
    await repo.publish({ ...image.manifest, version: 'short', disks: [{ ...disk, index: shorterId }] }, key);
    await assert.rejects(verifyImage(repo, 'demo', 'short'), hasCode('index-corrupt', shorterId));
  });

  test('an index describing a different chunk size than the manifest is index-corrupt', async () => {
    const dir = await copyRepo();
    const repo = openRepository(dir);
    const image = await repo.loadImage('demo', '1');
    const disk = image.manifest.disks[0]!;
    const index = await repo.readIndex(disk);
    // Twice the size in chunks twice as large: same chunk count and byte length, so only the header check can catch it.
    const other = { chunkSize: CHUNK * 2, size: index.size * 2, ids: index.ids };
    const otherId = await storeIndex(other, repo.objects);
    const manifest = serializeManifest({ ...image.manifest, version: 'cs', disks: [{ ...disk, index: otherId }] });
    await writeFile(join(dir, manifestPath('demo', 'cs')), signEnvelope(manifest, key));
    await assert.rejects(verifyImage(repo, 'demo', 'cs'), hasCode('index-corrupt'));
  });

  test('inspect reports the objects two versions share', async () => {
    const repo = openRepository(pristine);
    const report = await inspectImage(repo, 'demo', '2', { trusted: [key] });
    const v1 = await repo.readIndex((await repo.loadImage('demo', '1')).manifest.disks[0]!);
    const distinct = indexStats(v1).distinct;
    assert.equal(report.blobs.length, 1);
    assert.equal(report.blobs[0]!.distinctObjects, distinct);
    assert.equal(report.sharing.length, 1);
    assert.deepEqual({ ...report.sharing[0]!, share: undefined }, { image: 'demo', version: '1', sharedObjects: distinct - 1, share: undefined });
    assert.ok(report.sharing[0]!.share > 0.9 && report.sharing[0]!.share < 1);
    assert.equal(report.signer, key.keyId);
  });
});
