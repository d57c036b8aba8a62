// The page's zstd decoder (v86's WebAssembly, run here under Node from node_modules/v86)
// answers inflateExact as the Node decoder does: same verdicts, same bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { compress } from 'zstd-napi';
import { webCodecs } from '../../testing/web-codecs.js';
import { nodeCodecs } from '../../format/node/codecs.js';
import { zstdBomb } from '../../testing/hostile.js';
import { decodeObject } from '../../format/object-codec.js';
import { isHostmeError } from '../../errors.js';
import type { InflateResult } from '../../format/codecs.js';

/** Compressible content that is not all one byte: text-like runs with random bytes between. */
function content(length: number): Buffer {
  const out = Buffer.alloc(length);
  const noise = randomBytes(length);
  for (let i = 0; i < length; i++) out[i] = i % 7 === 0 ? noise[i]! : 0x61 + (i % 13);
  return out;
}

const verdict = (r: InflateResult) => (r.ok ? 'ok' : r.reason);

test('a frame of exactly the referenced length decodes to the same bytes as the Node decoder', async () => {
  for (const length of [1, 4095, 4096, 4097, 262_144, 1_000_003]) {
    const data = content(length);
    const frame = compress(data);
    const web = await webCodecs.inflateExact(frame, length);
    assert.ok(web.ok, `length ${length}`);
    assert.deepEqual(Buffer.from(web.data), data);
  }
});

test('longer, shorter, broken: the same verdicts as the Node decoder, and a short frame yields the bytes it holds', async () => {
  const data = content(10_000);
  const frame = compress(data);
  const cases: Array<[string, Uint8Array, number]> = [
    ['longer than referenced', frame, 9_999],
    ['a bomb at a chunk\'s length', zstdBomb(1024 ** 3), 65_536],
    ['shorter than referenced (several probe steps)', frame, 20_000],
    ['a short bomb', zstdBomb(1000), 2000],
    ['not a frame', Buffer.from('definitely not zstd'), 100],
    ['a header only', frame.subarray(0, 6), 10_000],
  ];
  for (const [name, stored, length] of cases) {
    const web = await webCodecs.inflateExact(stored, length);
    const node = await nodeCodecs.inflateExact(stored, length);
    assert.equal(verdict(web), verdict(node), name);
    if (!web.ok && web.reason === 'too-short' && !node.ok && node.reason === 'too-short') assert.deepEqual(Buffer.from(web.data), Buffer.from(node.data), name);
  }
  const short = await webCodecs.inflateExact(frame, 20_000);
  assert.equal(!short.ok && short.reason === 'too-short' && short.detail, 'decodes to 10000 bytes, expected 20000');
  // The decoder still works after every refusal above.
  const again = await webCodecs.inflateExact(frame, 10_000);
  assert.ok(again.ok && Buffer.from(again.data).equals(data));
});

test('a frame asking for a window over 16 MiB is refused before decoding, as by the Node decoder', async () => {
  const bomb = Buffer.from(zstdBomb(300_000)); // not single-segment: byte 5 is its Window_Descriptor
  bomb[5] = (27 - 10) << 3; // 128 MiB, zstd's default limit
  const web = await webCodecs.inflateExact(bomb, 300_000);
  assert.equal(!web.ok && web.reason, 'corrupt');
  assert.match(!web.ok ? web.detail : '', /134217728-byte window/);
  const node = await nodeCodecs.inflateExact(bomb, 300_000);
  assert.equal(verdict(node), 'corrupt');
});

test('decodeObject with the page codecs: a genuine object under a wrong length is a length mismatch, a wrong one invalid', async () => {
  const data = content(5000);
  const id = await webCodecs.sha256Hex(data);
  await assert.rejects(decodeObject(webCodecs, id, 8000, compress(data)), (err: unknown) => isHostmeError(err) && err.code === 'object-length-mismatch');
  await assert.rejects(decodeObject(webCodecs, id, 5000, compress(content(5000))), (err: unknown) => isHostmeError(err) && err.code === 'object-invalid');
  assert.deepEqual(Buffer.from(await decodeObject(webCodecs, id, 5000, compress(data))), data);
});
