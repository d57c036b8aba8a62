// The browser reader's logic, run under Node (it only needs fetch and
// WebCrypto, both in Node 20) against a real `hostme serve` over loopback.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdir, mkdtemp, open, readFile, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startRepoServer, type RunningRepoServer } from '../server/server.js';
import { packWithNewKey, skipUnlessCi } from '../testing/fixtures.js';
import { parseManifest } from '../format/manifest.js';
import { openEnvelope } from '../format/envelope.js';
import { isHostmeError } from '../errors.js';
import { webCodecs } from '../testing/web-codecs.js';
import { ImageReader, type ReaderEvent } from './reader/reader.js';
import { V86ChunkDisk } from './reader/v86-disk.js';
import { diskChunkIds, tamperObject, type I686Guest } from './web-fixtures.js';
import { existsSync, readFileSync } from 'node:fs';
import { REPO_ROOT } from './web-fixtures.js';

const guestDir = join(process.env.HOSTME_GUEST_DIR ?? join(REPO_ROOT, '.cache/guest'), 'hello-i686');
const skip = existsSync(join(guestDir, 'guest.json')) ? false : skipUnlessCi('the i686 guest is not built (scripts/guest/build-i686.sh)');

let base = '';
let good: RunningRepoServer;
let bad: RunningRepoServer;
let guest: I686Guest;

class MapPins {
  readonly map = new Map<string, string>();
  getItem(k: string): string | null {
    return this.map.get(k) ?? null;
  }
  setItem(k: string, v: string): void {
    this.map.set(k, v);
  }
}

before(async () => {
  if (skip) return;
  guest = JSON.parse(readFileSync(join(guestDir, 'guest.json'), 'utf8')) as I686Guest;
  base = await mkdtemp(join(tmpdir(), 'hostme-reader-'));
  const repoDir = join(base, 'good');
  await mkdir(repoDir, { recursive: true });
  // The good server runs first so the image can name it as its mirror.
  good = await startRepoServer({ repoDir });
  await packWithNewKey(base, repoDir, {
    disk: guest.disk,
    name: 'hello-i686',
    version: '1',
    kernel: guest.kernel,
    initrd: guest.initrd,
    cmdline: guest.cmdline,
    memoryMiB: 128,
    arch: 'i686',
    mirrors: [good.url],
  });
  const badDir = join(base, 'bad');
  await cp(repoDir, badDir, { recursive: true });
  const ids = await diskChunkIds(badDir, 'hello-i686');
  await tamperObject(badDir, ids[0]!, 262144);
  bad = await startRepoServer({ repoDir: badDir });
});

after(async () => {
  await good?.close();
  await bad?.close();
  if (base) await rm(base, { recursive: true, force: true });
});

async function diskBytes(offset: number, length: number): Promise<Buffer> {
  const f = await open(guest.disk, 'r');
  try {
    const buf = Buffer.alloc(length);
    await f.read(buf, 0, length, offset);
    return buf;
  } finally {
    await f.close();
  }
}

test('reads verified chunks equal to the disk, holes as zeros, and pins the key on first use', { skip }, async () => {
  const pins = new MapPins();
  const reader = await ImageReader.open({ repoUrl: good.url, name: 'hello-i686', pins });
  assert.equal(reader.manifest.hardware.arch, 'i686');
  assert.equal(pins.map.size, 1);
  const disk = reader.manifest.disks[0]!;
  const [image] = await reader.openDisks();
  const ids = await diskChunkIds(join(base, 'good'), 'hello-i686');
  const hole = ids.findIndex((x) => x === null);
  for (const i of [0, 1, hole]) {
    const got = await image!.device.read(i * disk.chunkSize, disk.chunkSize);
    assert.ok(Buffer.from(got).equals(await diskBytes(i * disk.chunkSize, disk.chunkSize)), `chunk ${i}`);
  }
  const kernel = await reader.readBlob((reader.manifest.boot as { kernel: { size: number; chunkSize: number; index: string } }).kernel, 'kernel');
  assert.ok(Buffer.from(kernel).equals(readFileSync(guest.kernel)));
  // Concurrent reads of one chunk share one fetch.
  const before = reader.stats.fetchedObjects;
  const fresh = await reader.openDisks(); // a device with an empty memory cache: the reads reach the scheduler
  await Promise.all([0, 1, 2].map(() => fresh[0]!.device.read(3 * disk.chunkSize, disk.chunkSize)));
  assert.equal(reader.stats.fetchedObjects - before, 1);
});

test('V86ChunkDisk.prefetch: loads a chunk into memory once, skips holes, and the guest read then fetches nothing', { skip }, async () => {
  const reader = await ImageReader.open({ repoUrl: good.url, name: 'hello-i686' });
  const ref = reader.manifest.disks[0]!;
  const failures: unknown[] = [];
  const disk = new V86ChunkDisk((await reader.openDisks())[0]!, (f) => failures.push(f.error));
  const ids = await diskChunkIds(join(base, 'good'), 'hello-i686');
  const stored = ids.findIndex((x, i) => x !== null && i > 0);
  const hole = ids.findIndex((x) => x === null);
  assert.equal(await disk.prefetch(stored), 'fetched');
  assert.equal(await disk.prefetch(stored), 'present');
  assert.equal(await disk.prefetch(hole), 'hole');
  assert.equal(disk.touchedChunks.size, 0, 'prefetch is not a guest read');
  const fetched = reader.stats.fetchedObjects;
  const got = await disk.read(stored * ref.chunkSize, 4096);
  assert.ok(Buffer.from(got).equals(await diskBytes(stored * ref.chunkSize, 4096)));
  assert.equal(reader.stats.fetchedObjects, fetched, 'served from memory');
  assert.deepEqual([...disk.touchedChunks], [stored]);
  await assert.rejects(disk.prefetch(ids.length), (err: unknown) => isHostmeError(err, 'block-einval'));
  assert.deepEqual(failures, [], 'prefetch never reports through the guest failure path');
  assert.equal(disk.prefetchCapacity, Math.floor((32 * 1024 * 1024) / ref.chunkSize / 2));
});

test('a wrong-bytes chunk names the chunk and falls over to the mirror', { skip }, async () => {
  const events: ReaderEvent[] = [];
  const reader = await ImageReader.open({ repoUrl: bad.url, name: 'hello-i686', onEvent: (e) => events.push(e) });
  const disk = reader.manifest.disks[0]!;
  const [image] = await reader.openDisks();
  const got = await image!.device.read(0, disk.chunkSize);
  assert.ok(Buffer.from(got).equals(await diskBytes(0, disk.chunkSize)));
  const invalid = events.filter((e) => e.type === 'invalid-object');
  assert.equal(invalid.length, 1);
  assert.match((invalid[0] as { message: string }).message, /^disk disk0 chunk 0: wrong bytes from http:\/\/127\.0\.0\.1:\d+ for object [0-9a-f]{64}/);
  // The lying source was demoted.
  assert.equal(reader.mirrors.ranking()[0]!.name, good.url);
  reader.close();
});

test('without a mirror, a wrong-bytes chunk is an invalid-object error', { skip }, async () => {
  const reader = await ImageReader.open({ repoUrl: bad.url, name: 'hello-i686', ignoreMirrors: true });
  const [image] = await reader.openDisks();
  await assert.rejects(image!.device.read(0, 4096), (err: unknown) => {
    assert.ok(isHostmeError(err, 'block-eio'), String(err));
    assert.ok(isHostmeError(err.cause, 'object-invalid'), String(err.cause));
    assert.match(err.message, /disk disk0 chunk 0/);
    return true;
  });
});

test('a key other than the pinned one is refused; a modified manifest is tampered', { skip }, async () => {
  const pins = new MapPins();
  pins.setItem(`hostme-trust:${good.url}/`, Buffer.alloc(32, 7).toString('base64'));
  await assert.rejects(ImageReader.open({ repoUrl: good.url, name: 'hello-i686', pins }), (err: unknown) => {
    assert.ok(isHostmeError(err, 'key-mismatch'), String(err));
    return true;
  });
  const envelope = JSON.parse(readFileSync(join(base, 'good/manifests/hello-i686/1.json'), 'utf8')) as { payload: string };
  const manifest = JSON.parse(Buffer.from(envelope.payload, 'base64').toString()) as { hardware: { memoryMiB: number } };
  manifest.hardware.memoryMiB = 4096;
  envelope.payload = Buffer.from(JSON.stringify(manifest)).toString('base64');
  await assert.rejects(openEnvelope(webCodecs, Buffer.from(JSON.stringify(envelope)), { origin: 'test' }), (err: unknown) => {
    assert.ok(isHostmeError(err, 'signature-invalid'), String(err));
    assert.match(err.message, /tampered/);
    return true;
  });
  const unsigned = { ...envelope, signatures: [] };
  await assert.rejects(openEnvelope(webCodecs, Buffer.from(JSON.stringify(unsigned)), { origin: 'test' }), /not signed/);
});

test('manifest validation mirrors docs/format.md; formatVersion 2 is refused first and clearly', () => {
  const enc = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));
  assert.throws(() => parseManifest(enc({ formatVersion: 2, kind: 'something-else' }), 'm'), /manifest format version 2 is not supported .* upgrade hostme/);
  const id = 'a'.repeat(64);
  const ok = {
    formatVersion: 1,
    kind: 'hostme-image',
    name: 'x',
    version: '1',
    created: '2026-11-23T11:15:42.961Z',
    hardware: { arch: 'i686', memoryMiB: 128, cpus: 1 },
    boot: { mode: 'direct', kernel: { size: 10, chunkSize: 262144, index: id }, cmdline: '' },
    disks: [{ name: 'disk0', size: 1 << 20, chunkSize: 262144, index: id }],
    unknownField: true,
  };
  assert.equal(parseManifest(enc(ok), 'm').mirrors.length, 0);
  assert.throws(() => parseManifest(enc({ ...ok, disks: [] }), 'm'), /disks/);
  assert.throws(() => parseManifest(enc({ ...ok, prefetch: [[0, 4]] }), 'm'), /points past the disks/);
  assert.throws(() => parseManifest(enc({ ...ok, disks: [{ ...ok.disks[0], chunkSize: 100000 }] }), 'm'), /chunkSize/);
  assert.throws(() => parseManifest(enc({ ...ok, hardware: { ...ok.hardware, arch: 'arm64' } }), 'm'), /hardware\.arch/);
});

test('hostme serve: run page, button.js and /_hostme assets', { skip }, async () => {
  const page = await fetch(`${good.url}/i/hello-i686/run`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self' 'wasm-unsafe-eval'/);
  const html = await page.text();
  assert.match(html, /data-arch="i686"/);
  assert.match(html, /<script type="module" src="\/_hostme\/run.js">/);
  assert.match(html, /<noscript>[^]*hostme run http:\/\/127\.0\.0\.1:\d+\/i\/hello-i686/);
  assert.equal((await fetch(`${good.url}/i/nope/run`)).status, 404);

  const button = await fetch(`${good.url}/button.js`, { headers: { Origin: 'http://elsewhere.example' } });
  assert.equal(button.status, 200);
  assert.equal(button.headers.get('access-control-allow-origin'), '*');
  assert.equal(button.headers.get('access-control-allow-credentials'), null);
  assert.match(button.headers.get('content-type') ?? '', /javascript/);
  assert.match(await button.text(), new RegExp(`var ORIGIN = "${good.url}"`));

  for (const [asset, type] of [['libv86.mjs', /javascript/], ['v86.wasm', /application\/wasm/], ['bios.bin', /octet-stream/], ['vgabios.bin', /octet-stream/], ['xterm.css', /text\/css/]] as const) {
    const res = await fetch(`${good.url}/_hostme/${asset}`, { method: 'HEAD' });
    assert.equal(res.status, 200, asset);
    assert.match(res.headers.get('content-type') ?? '', type, asset);
  }
  assert.equal((await fetch(`${good.url}/_hostme/nothing.js`)).status, 404);

  // Assets go compressed when the client accepts it, and revalidate with a 304.
  const wasmFile = await readFile(join(dirname(createRequire(import.meta.url).resolve('v86')), 'v86.wasm'));
  const plain = await fetch(`${good.url}/_hostme/v86.wasm`, { headers: { 'Accept-Encoding': 'identity' } });
  assert.equal(plain.headers.get('content-encoding'), null);
  assert.ok(Buffer.from(await plain.arrayBuffer()).equals(wasmFile));
  for (const encoding of ['br', 'gzip']) {
    const res = await fetch(`${good.url}/_hostme/v86.wasm`, { headers: { 'Accept-Encoding': encoding } });
    assert.equal(res.headers.get('content-encoding'), encoding);
    assert.ok(Number(res.headers.get('content-length')) < wasmFile.length / 3, `${encoding}: ${res.headers.get('content-length')} bytes`);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(wasmFile), `${encoding} decodes to the file`);
    const again = await fetch(`${good.url}/_hostme/v86.wasm`, { headers: { 'Accept-Encoding': encoding, 'If-None-Match': res.headers.get('etag')! } });
    assert.equal(again.status, 304);
  }
});
