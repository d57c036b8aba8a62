import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { decompress } from 'zstd-napi';
import { zstdBomb, runMeasured } from '../../testing/hostile.js';
import { inflateExact, inflateStreaming } from './zstd-capped.js';
import { decodeObject } from '../object-codec.js';
import { zstdDeclaredSize } from '../codecs.js';
import { nodeCodecs } from './codecs.js';

const dist = fileURLToPath(new URL('../../', import.meta.url));
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

test('the hand-made bomb is a genuine zstd frame (so the refusals below are about size, not validity)', () => {
  assert.deepEqual(decompress(zstdBomb(300_000)), Buffer.alloc(300_000));
  assert.deepEqual(decompress(zstdBomb(300_000, true)), Buffer.alloc(300_000));
  assert.equal(zstdDeclaredSize(zstdBomb(300_000, true)), 300_000);
  assert.equal(zstdDeclaredSize(zstdBomb(300_000)), undefined);
  assert.ok(zstdBomb(GiB).length < 33_000);
});

test('inflateExact stops at the declared length; inflateStreaming at its cap', async () => {
  const ok = inflateExact(zstdBomb(200_000, true), 200_000);
  assert.ok(ok.ok);
  const long = inflateExact(zstdBomb(GiB), 65536);
  assert.equal(long.ok, false);
  assert.equal(!long.ok && long.reason, 'too-long');
  const short = inflateExact(zstdBomb(1000), 2000);
  assert.equal(!short.ok && short.reason, 'too-short');
  const truncated = inflateExact(zstdBomb(300_000).subarray(0, 14), 300_000);
  assert.equal(!truncated.ok && truncated.reason, 'corrupt');
  let seen = 0;
  async function* pieces() {
    const bomb = zstdBomb(10 * MiB);
    for (let i = 0; i < bomb.length; i += 1000) yield bomb.subarray(i, i + 1000);
  }
  const streamed = await inflateStreaming(pieces(), 20 * MiB, (p) => (seen += p.length));
  assert.deepEqual(streamed, { ok: true, length: 10 * MiB });
  assert.equal(seen, 10 * MiB);
  const capped = await inflateStreaming(pieces(), MiB, () => {});
  assert.equal(!capped.ok && capped.reason, 'too-long');
});

// Issue 15 case 4: a 33 KB chunk cost `hostme verify` 1 GiB. Measured in a
// process of its own: three 1-GiB bombs referenced as 64 KiB chunks.
test('decodeObject: a zstd bomb is refused at the referenced length, with bounded memory', async () => {
  const script = `
    import { decodeObject } from './format/object-codec.js';
    import { nodeCodecs } from './format/node/codecs.js';
    import { zstdBomb } from './testing/hostile.js';
    const codes = [];
    for (const declare of [false, true, false]) {
      try { await decodeObject(nodeCodecs, '${'ab'.repeat(32)}', 65536, zstdBomb(${GiB}, declare), 'chunk'); codes.push('accepted'); }
      catch (err) { codes.push(err.code + ': ' + err.message); }
    }
    console.log(JSON.stringify(codes));`;
  const { result, maxRssBytes } = await runMeasured(script, dist);
  const codes = result as string[];
  assert.equal(codes.length, 3);
  for (const c of codes) assert.match(c, /^object-invalid: chunk: object (ab)+ decodes to more than 65536 bytes/);
  assert.ok(maxRssBytes < 200 * MiB, `peak RSS ${(maxRssBytes / MiB).toFixed(0)} MiB decoding three 33 KB bombs`);
  // And in this process, the message stays clear for a valid frame of the wrong length.
  await assert.rejects(() => decodeObject(nodeCodecs, 'cd'.repeat(32), 1000, zstdBomb(500)), /decodes to 500 bytes, expected 1000/);
});
