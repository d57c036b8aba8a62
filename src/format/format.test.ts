import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { decodeObject } from './object-codec.js';
import { encodeObject } from './node/codecs.js';
import { HOLE_ID } from './digest.js';
import { sha256Hex } from './node/codecs.js';
import {
  INDEX_HEADER_BYTES,
  MAX_CHUNK_SIZE,
  MIN_CHUNK_SIZE,
  decodeIndex,
  encodeIndex,
  indexStats,
  validateChunkSize,
  type ChunkIndex,
} from './chunk-index.js';
import { parseManifest, serializeManifest, type Manifest } from './manifest.js';
import { generatePublisherKey, parsePrivateKeyPem, signEnvelope } from './node/keys.js';
import { openEnvelope } from './envelope.js';
import { FormatError } from './errors.js';
import { isHostmeError } from '../errors.js';
import { nodeCodecs } from './node/codecs.js';

/** assert.rejects/throws matcher: a HostmeError with `code` whose message contains every `parts`. */
function hostmeErr(code: string, ...parts: string[]) {
  return (err: unknown): boolean => {
    assert.ok(isHostmeError(err), `expected a HostmeError, got ${String(err)}`);
    assert.equal(err.code, code, `wrong code; message: ${err.message}`);
    for (const part of parts) assert.ok(err.message.includes(part), `message ${JSON.stringify(err.message)} should mention ${JSON.stringify(part)}`);
    return true;
  };
}

function compressibleObjectOf(size: number) {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 7) % 251 < 20 ? 1 : 0;
  return encodeObject(data);
}

function fakeId(seed: number): string {
  return createHash('sha256').update(`chunk ${seed}`).digest('hex');
}

describe('object codec', () => {
  test('compressible data is stored as a smaller zstd frame and round-trips', async () => {
    const data = new Uint8Array(64 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = i % 7;
    const encoded = encodeObject(data);
    assert.equal(encoded.id, sha256Hex(data));
    assert.equal(encoded.length, data.length);
    assert.ok(encoded.stored.length < data.length, 'stored should be compressed');
    assert.deepEqual(Buffer.from(await decodeObject(nodeCodecs, encoded.id, encoded.length, encoded.stored)), Buffer.from(data));
  });

  test('incompressible data is stored raw (stored length == uncompressed length)', async () => {
    const data = new Uint8Array(randomBytes(4096));
    const encoded = encodeObject(data);
    assert.equal(encoded.stored.length, data.length);
    assert.deepEqual(Buffer.from(encoded.stored), Buffer.from(data));
    assert.deepEqual(Buffer.from(await decodeObject(nodeCodecs, encoded.id, data.length, encoded.stored)), Buffer.from(data));
  });

  test('corrupted raw bytes are object-invalid and name the id', async () => {
    const data = new Uint8Array(randomBytes(4096));
    const { id, stored } = encodeObject(data);
    const bad = new Uint8Array(stored);
    bad[100] ^= 0xff;
    await assert.rejects(async () => await decodeObject(nodeCodecs, id, data.length, bad, 'test'), hostmeErr('object-invalid', id));
  });

  test('corrupted zstd bytes are object-invalid and name the id', async () => {
    const data = new Uint8Array(32 * 1024).fill(65);
    const { id, stored } = encodeObject(data);
    assert.ok(stored.length < data.length);
    const bad = new Uint8Array(stored);
    bad[Math.floor(bad.length / 2)] ^= 0x55;
    bad[0] ^= 0xff; // break the frame magic too, so it cannot decode by luck
    await assert.rejects(async () => await decodeObject(nodeCodecs, id, data.length, bad), hostmeErr('object-invalid', id));
  });

  test('stored bytes longer than the content are object-invalid', async () => {
    const data = new Uint8Array(randomBytes(1000));
    const { id } = encodeObject(data);
    await assert.rejects(async () => await decodeObject(nodeCodecs, id, 1000, new Uint8Array(randomBytes(1200))), hostmeErr('object-invalid', id));
  });

  test('genuine bytes referenced with the wrong length are object-length-mismatch, not object-invalid', async () => {
    const raw = encodeObject(new Uint8Array(randomBytes(3000)));
    await assert.rejects(async () => await decodeObject(nodeCodecs, raw.id, 2000, raw.stored), hostmeErr('object-length-mismatch', raw.id, '3000', '2000'));
    const packed = compressibleObjectOf(40_000);
    assert.ok(packed.stored.length < packed.length);
    await assert.rejects(async () => await decodeObject(nodeCodecs, packed.id, 50_000, packed.stored), hostmeErr('object-length-mismatch', packed.id, '40000'));
    // Wrong bytes with a wrong length are still plain object-invalid.
    await assert.rejects(async () => await decodeObject(nodeCodecs, raw.id, 2000, new Uint8Array(randomBytes(3000))), hostmeErr('object-invalid'));
  });

  test('bytes of another object are object-invalid', async () => {
    const a = encodeObject(new Uint8Array(randomBytes(2048)));
    const b = encodeObject(new Uint8Array(randomBytes(2048)));
    await assert.rejects(async () => await decodeObject(nodeCodecs, a.id, 2048, b.stored), (err: unknown) => {
      assert.ok(err instanceof FormatError);
      assert.equal(err.code, 'object-invalid');
      assert.equal(err.context.id, a.id);
      return true;
    });
  });
});

describe('chunk index', () => {
  const sample: ChunkIndex = {
    chunkSize: MIN_CHUNK_SIZE,
    size: 3 * MIN_CHUNK_SIZE + 512,
    ids: [fakeId(1), HOLE_ID, fakeId(2), fakeId(1)],
  };

  test('encode/decode round trip keeps ids, holes, size and chunk size', async () => {
    const bytes = encodeIndex(sample);
    assert.equal(bytes.length, INDEX_HEADER_BYTES + 32 * 4);
    assert.equal(Buffer.from(bytes.subarray(0, 8)).toString(), 'HOSTMEIX');
    const back = decodeIndex(bytes);
    assert.deepEqual(back, sample);
    assert.deepEqual(indexStats(back), { chunks: 4, holes: 1, distinct: 2 });
  });

  test('an all-hole index round-trips', async () => {
    const index: ChunkIndex = { chunkSize: MAX_CHUNK_SIZE, size: 2 * MAX_CHUNK_SIZE, ids: [HOLE_ID, HOLE_ID] };
    assert.deepEqual(decodeIndex(encodeIndex(index)), index);
  });

  test('an empty blob has an empty index', async () => {
    const index: ChunkIndex = { chunkSize: MIN_CHUNK_SIZE, size: 0, ids: [] };
    assert.deepEqual(decodeIndex(encodeIndex(index)), index);
  });

  test('truncated index is index-corrupt', async () => {
    const bytes = encodeIndex(sample);
    assert.throws(() => decodeIndex(bytes.subarray(0, bytes.length - 1), 'idx'), hostmeErr('index-corrupt', 'idx', 'truncated'));
    assert.throws(() => decodeIndex(bytes.subarray(0, 20)), hostmeErr('index-corrupt', 'header'));
  });

  test('padded index is index-corrupt', async () => {
    const bytes = encodeIndex(sample);
    const padded = new Uint8Array(bytes.length + 32);
    padded.set(bytes);
    assert.throws(() => decodeIndex(padded), hostmeErr('index-corrupt'));
  });

  test('bad magic is index-corrupt', async () => {
    const bytes = new Uint8Array(encodeIndex(sample));
    bytes.set(new TextEncoder().encode('NOTHOSTM'), 0);
    assert.throws(() => decodeIndex(bytes), hostmeErr('index-corrupt', 'magic'));
  });

  test('unknown index version is format-unsupported', async () => {
    const bytes = new Uint8Array(encodeIndex(sample));
    new DataView(bytes.buffer).setUint32(8, 2, true);
    assert.throws(() => decodeIndex(bytes), hostmeErr('format-unsupported', 'version 2', 'upgrade'));
  });

  test('chunk count that does not match the size is index-corrupt', async () => {
    const bytes = new Uint8Array(encodeIndex(sample));
    new DataView(bytes.buffer).setBigUint64(24, 5n, true);
    assert.throws(() => decodeIndex(bytes), hostmeErr('index-corrupt', 'chunk count 5'));
  });

  test('size that needs more chunks than are present is index-corrupt', async () => {
    const bytes = new Uint8Array(encodeIndex(sample));
    const view = new DataView(bytes.buffer);
    view.setBigUint64(16, BigInt(5 * MIN_CHUNK_SIZE), true);
    view.setBigUint64(24, 5n, true);
    assert.throws(() => decodeIndex(bytes), hostmeErr('index-corrupt'));
  });

  test('encode refuses an id count that does not match the size', async () => {
    assert.throws(() => encodeIndex({ ...sample, ids: sample.ids.slice(0, 3) }), hostmeErr('index-corrupt'));
  });

  test('chunk size validation', async () => {
    for (const ok of [MIN_CHUNK_SIZE, 256 * 1024, MAX_CHUNK_SIZE]) validateChunkSize(ok);
    for (const bad of [0, -65536, 4096, MIN_CHUNK_SIZE / 2, MAX_CHUNK_SIZE * 2, 100_000, 65536.5, NaN]) {
      assert.throws(() => validateChunkSize(bad), hostmeErr('chunk-size-invalid'), `chunk size ${bad}`);
    }
    assert.throws(() => encodeIndex({ chunkSize: 100_000, size: 0, ids: [] }), hostmeErr('chunk-size-invalid'));
  });

  test('an index with an invalid chunk size in its header is rejected', async () => {
    const bytes = new Uint8Array(encodeIndex(sample));
    new DataView(bytes.buffer).setUint32(12, 100_000, true);
    assert.throws(() => decodeIndex(bytes), (err: unknown) => isHostmeError(err) && ['index-corrupt', 'chunk-size-invalid'].includes(err.code));
  });
});

function sampleManifest(overrides: Partial<Manifest> = {}): Manifest {
  return {
    formatVersion: 1,
    kind: 'hostme-image',
    name: 'demo',
    version: '1',
    created: '2024-05-01T12:00:00.000Z',
    hardware: { arch: 'x86_64', memoryMiB: 256, cpus: 1 },
    boot: { mode: 'firmware' },
    disks: [{ name: 'disk0', size: 4 * MIN_CHUNK_SIZE, chunkSize: MIN_CHUNK_SIZE, index: fakeId(9) }],
    mirrors: [],
    ...overrides,
  };
}

const enc = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));

describe('manifest', () => {
  test('a valid manifest parses and serializes back to the same value', async () => {
    const m = sampleManifest({ prefetch: [[0, 0], [0, 3]] });
    const parsed = parseManifest(serializeManifest(m));
    assert.deepEqual(parsed, m);
  });

  test('truncated JSON is manifest-corrupt', async () => {
    const bytes = serializeManifest(sampleManifest());
    assert.throws(() => parseManifest(bytes.subarray(0, bytes.length / 2), 'm.json'), hostmeErr('manifest-corrupt', 'm.json', 'JSON'));
  });

  test('invalid UTF-8 is manifest-corrupt', async () => {
    assert.throws(() => parseManifest(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])), hostmeErr('manifest-corrupt'));
  });

  test('unknown formatVersion is format-unsupported with a clear message', async () => {
    const m = { ...sampleManifest(), formatVersion: 2, someNewField: { x: 1 } };
    assert.throws(() => parseManifest(enc(m), 'm.json'), hostmeErr('format-unsupported', 'm.json', 'version 2', 'upgrade hostme'));
  });

  test('schema violations name the path', async () => {
    const badName = { ...sampleManifest(), name: 'Not Valid!' };
    assert.throws(() => parseManifest(enc(badName)), hostmeErr('manifest-corrupt', 'at name'));
    const m = sampleManifest();
    const badDisk = { ...m, disks: [{ ...m.disks[0]!, index: 'xyz' }] };
    assert.throws(() => parseManifest(enc(badDisk)), hostmeErr('manifest-corrupt', 'disks.0.index'));
    const badChunk = { ...m, disks: [{ ...m.disks[0]!, chunkSize: 100_000 }] };
    assert.throws(() => parseManifest(enc(badChunk)), hostmeErr('manifest-corrupt', 'disks.0.chunkSize'));
    const noHw: Record<string, unknown> = { ...m };
    delete noHw.hardware;
    assert.throws(() => parseManifest(enc(noHw)), hostmeErr('manifest-corrupt', 'hardware'));
    assert.throws(() => parseManifest(enc([1, 2])), hostmeErr('manifest-corrupt'));
    assert.throws(() => parseManifest(enc(null)), hostmeErr('manifest-corrupt'));
  });

  test('a prefetch entry past the disk is manifest-corrupt', async () => {
    assert.throws(() => parseManifest(enc(sampleManifest({ prefetch: [[0, 4]] }))), hostmeErr('manifest-corrupt', '[0, 4]'));
    assert.throws(() => parseManifest(enc(sampleManifest({ prefetch: [[1, 0]] }))), hostmeErr('manifest-corrupt', '[1, 0]'));
  });
});

describe('signed envelope', () => {
  const generated = generatePublisherKey();
  const key = parsePrivateKeyPem(generated.privatePem);
  const other = parsePrivateKeyPem(generatePublisherKey().privatePem);
  const payload = serializeManifest(sampleManifest());

  test('sign/open round trip returns the exact payload and the signer', async () => {
    const envelope = signEnvelope(payload, key);
    const opened = await openEnvelope(nodeCodecs, envelope, { trusted: [key] });
    assert.deepEqual(Buffer.from(opened.payload), Buffer.from(payload));
    assert.equal(opened.signer.keyId, key.keyId);
    assert.equal(opened.signer.keyId, generated.keyId);
    assert.equal(opened.digest, sha256Hex(envelope));
    // Without a trusted set any valid signature is accepted.
    assert.equal((await openEnvelope(nodeCodecs, envelope)).signer.keyId, key.keyId);
  });

  test('a tampered payload is signature-invalid', async () => {
    const envelope = JSON.parse(new TextDecoder().decode(signEnvelope(payload, key)));
    const text = Buffer.from(envelope.payload, 'base64').toString().replace('"memoryMiB": 256', '"memoryMiB": 512');
    assert.notEqual(text, Buffer.from(envelope.payload, 'base64').toString());
    envelope.payload = Buffer.from(text).toString('base64');
    await assert.rejects(async () => await openEnvelope(nodeCodecs, enc(envelope), { origin: 'env' }), hostmeErr('signature-invalid', 'env', 'tampered'));
  });

  test('a signature copied from another key is signature-invalid', async () => {
    const envelope = JSON.parse(new TextDecoder().decode(signEnvelope(payload, key)));
    const foreign = JSON.parse(new TextDecoder().decode(signEnvelope(payload, other)));
    envelope.signatures[0].sig = foreign.signatures[0].sig;
    await assert.rejects(async () => await openEnvelope(nodeCodecs, enc(envelope)), hostmeErr('signature-invalid'));
  });

  test('an unsigned envelope is manifest-unsigned', async () => {
    const envelope = JSON.parse(new TextDecoder().decode(signEnvelope(payload, key)));
    envelope.signatures = [];
    await assert.rejects(async () => await openEnvelope(nodeCodecs, enc(envelope)), hostmeErr('manifest-unsigned'));
  });

  test('a signer outside the trusted set is key-mismatch', async () => {
    const envelope = signEnvelope(payload, key);
    await assert.rejects(async () => await openEnvelope(nodeCodecs, envelope, { trusted: [other] }), hostmeErr('key-mismatch', key.keyId.slice(0, 16)));
    await assert.rejects(async () => await openEnvelope(nodeCodecs, envelope, { trusted: [] }), hostmeErr('key-mismatch'));
  });

  test('an unknown envelope version is format-unsupported', async () => {
    const envelope = JSON.parse(new TextDecoder().decode(signEnvelope(payload, key)));
    envelope.hostmeEnvelope = 2;
    await assert.rejects(async () => await openEnvelope(nodeCodecs, enc(envelope)), hostmeErr('format-unsupported', 'envelope version 2'));
  });

  test('truncated envelope JSON is manifest-corrupt', async () => {
    const envelope = signEnvelope(payload, key);
    await assert.rejects(async () => await openEnvelope(nodeCodecs, envelope.subarray(0, 50)), hostmeErr('manifest-corrupt'));
  });

  test('a wrong payload type is refused', async () => {
    const envelope = signEnvelope(payload, key, 'application/x-other');
    await assert.rejects(async () => await openEnvelope(nodeCodecs, envelope), hostmeErr('format-unsupported', 'payload type'));
  });
});
