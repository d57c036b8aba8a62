/**
 * A bounded, seeded fuzz loop over the parsers that read bytes from other
 * machines: manifests and envelopes, chunk indexes, stored objects (node and
 * browser readers), and the server's upload validation. Every input must be
 * accepted or refused with a HostmeError (the browser runs the same parsers with its own codecs,
 * a 4xx over HTTP): 0 crashes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { isHostmeError } from '../errors.js';
import { encodeIndex, decodeIndex } from './chunk-index.js';
import { decodeObject } from './object-codec.js';
import { encodeObject } from './node/codecs.js';
import { parseManifest, serializeManifest, type Manifest } from './manifest.js';
import { formatPublicKeyLine, signEnvelope } from './node/keys.js';
import { openEnvelope } from './envelope.js';
import { webCodecs } from '../testing/web-codecs.js';
import { startRepoServer } from '../server/server.js';
import { newKey, pseudoRandom, removeDir, tempDir } from '../testing/fixtures.js';
import { zstdBomb } from '../testing/hostile.js';
import { nodeCodecs } from './node/codecs.js';

const ITERATIONS = 2000;
const TIME_BUDGET_MS = 20_000;

function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 2 ** 32;
  };
}

const key = newKey();
const manifest: Manifest = {
  formatVersion: 1,
  kind: 'hostme-image',
  name: 'fuzz',
  version: '1',
  created: '2026-11-30T00:00:00Z',
  hardware: { arch: 'x86_64', memoryMiB: 256, cpus: 1 },
  boot: { mode: 'direct', kernel: { size: 70000, chunkSize: 65536, index: 'a'.repeat(64) }, cmdline: 'console=ttyS0' },
  disks: [{ name: 'disk0', size: 1 << 20, chunkSize: 65536, index: 'b'.repeat(64) }],
  prefetch: [[0, 1]],
  mirrors: ['https://m.example/'],
};
const payload = serializeManifest(manifest);
const envelope = signEnvelope(payload, key);
const index = encodeIndex({ size: 200_000, chunkSize: 65536, ids: ['c'.repeat(64), '0'.repeat(64), 'd'.repeat(64), 'e'.repeat(64)] });
const object = encodeObject(new Uint8Array(Buffer.alloc(50_000, 'hostme ')));

const SPECIAL = [null, true, -1, 0, 1e308, 2 ** 53, '', 'x'.repeat(5000), [], {}, '../..', '\u0000', NaN];

/** One mutation: flip, insert, delete or truncate bytes, or (for JSON) replace a value by something odd. */
function mutate(bytes: Uint8Array, rand: () => number): Uint8Array {
  const out = Buffer.from(bytes);
  const kind = Math.floor(rand() * 5);
  const at = Math.floor(rand() * Math.max(1, out.length));
  if (kind === 0) {
    for (let i = 0; i < 1 + rand() * 4; i++) out[Math.floor(rand() * out.length)] ^= 1 << Math.floor(rand() * 8);
    return out;
  }
  if (kind === 1) return out.subarray(0, at);
  if (kind === 2) return Buffer.concat([out.subarray(0, at), Buffer.from(pseudoRandom(1 + Math.floor(rand() * 16), Math.floor(rand() * 1e9))), out.subarray(at)]);
  if (kind === 3) return Buffer.concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + 1 + Math.floor(rand() * 16)))]);
  try {
    const doc = JSON.parse(out.toString()) as Record<string, unknown>;
    const paths: Array<[Record<string, unknown>, string]> = [];
    const walk = (v: unknown) => {
      if (!v || typeof v !== 'object') return;
      for (const k of Object.keys(v)) {
        paths.push([v as Record<string, unknown>, k]);
        walk((v as Record<string, unknown>)[k]);
      }
    };
    walk(doc);
    const [owner, k] = paths[Math.floor(rand() * paths.length)] ?? [doc, 'x'];
    owner[k] = SPECIAL[Math.floor(rand() * SPECIAL.length)];
    return Buffer.from(JSON.stringify(doc));
  } catch {
    return out.reverse();
  }
}

async function expectRefusalOnly(what: string, input: Uint8Array, parse: () => unknown, allowed: (err: unknown) => boolean): Promise<void> {
  try {
    await parse();
  } catch (err) {
    if (!allowed(err)) assert.fail(`${what} crashed on ${Buffer.from(input).toString('base64').slice(0, 200)}: ${String((err as Error)?.stack ?? err)}`);
  }
}

test(`fuzz: ${ITERATIONS} mutated manifests, envelopes, indexes and objects give only HostmeError, with the Node and the web codecs`, async () => {
  const rand = prng(0x15);
  const started = performance.now();
  let runs = 0;
  for (; runs < ITERATIONS && performance.now() - started < TIME_BUDGET_MS; runs++) {
    const m = mutate(payload, rand);
    await expectRefusalOnly('parseManifest', m, () => parseManifest(m), (e) => isHostmeError(e));
    const e = mutate(envelope, rand);
    await expectRefusalOnly('openEnvelope', e, async () => parseManifest((await openEnvelope(nodeCodecs, e, { origin: 'fuzz' })).payload), (err) => isHostmeError(err));
    const i = mutate(index, rand);
    await expectRefusalOnly('decodeIndex', i, () => decodeIndex(i), (err) => isHostmeError(err));
    await expectRefusalOnly('decodeIndex against a reference', i, () => decodeIndex(i, 'fuzz', { size: 200_000, chunkSize: 65536 }), (err) => isHostmeError(err));
    const o = runs % 50 === 0 ? zstdBomb(1 << 30) : mutate(object.stored, rand);
    await expectRefusalOnly('decodeObject', o, () => decodeObject(nodeCodecs, object.id, object.length, o), (err) => isHostmeError(err));
    // The same decoder with the page's codecs (WebCrypto, v86's zstd), as the browser runs it.
    if (runs % 4 === 0) await expectRefusalOnly('decodeObject (web codecs)', o, () => decodeObject(webCodecs, object.id, object.length, o), (err) => isHostmeError(err));
    if (runs % 4 === 0) await expectRefusalOnly('openEnvelope (web codecs)', e, () => openEnvelope(webCodecs, e, { origin: 'fuzz' }), (err) => isHostmeError(err));
  }
  assert.ok(runs >= 200, `only ${runs} iterations ran in the time budget`);
});

test('fuzz: mutated uploads of every kind get 2xx or 4xx, never a 5xx, and the server keeps serving', async () => {
  const dir = await tempDir('hostme-fuzz-upload-');
  const repo = join(dir, 'repo');
  await mkdir(repo);
  const TOKEN = 'fuzz-token';
  const server = await startRepoServer({ repoDir: repo, port: 0, token: TOKEN });
  try {
    const rand = prng(0xf00d);
    const keyLine = Buffer.from(formatPublicKeyLine(key.publicKeyRaw));
    const listing = Buffer.from(JSON.stringify({ format: 'hostme-repo', formatVersion: 1, images: { fuzz: { latest: '1', versions: [{ version: '1', created: manifest.created, digest: 'a'.repeat(64) }] } } }));
    const marker = Buffer.from(JSON.stringify({ format: 'hostme-repo', formatVersion: 1 }));
    const targets: Array<[string, Uint8Array]> = [
      [`objects/${object.id.slice(0, 2)}/${object.id}`, object.stored],
      ['manifests/fuzz/1.json', envelope],
      [`keys/${key.keyId}.pub`, keyLine],
      ['index.json', listing],
      ['hostme-repo.json', marker],
    ];
    const started = performance.now();
    let runs = 0;
    for (; runs < 400 && performance.now() - started < TIME_BUDGET_MS; runs++) {
      const [path, body] = targets[runs % targets.length]!;
      const mutated = mutate(body, rand);
      const response = await fetch(`${server.url}/${path}`, { method: 'PUT', headers: { authorization: `Bearer ${TOKEN}` }, body: mutated as unknown as BodyInit });
      const text = await response.text();
      assert.ok(response.status < 500, `PUT ${path} of ${Buffer.from(mutated).toString('base64').slice(0, 120)} answered ${response.status}: ${text}`);
    }
    assert.ok(runs >= 50, `only ${runs} uploads in the time budget`);
    assert.equal((await fetch(`${server.url}/api/images`)).status, 200);
  } finally {
    await server.close();
    await removeDir(dir);
  }
});
