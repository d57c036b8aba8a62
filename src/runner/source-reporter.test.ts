import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { sha256Hex } from '../format/node/codecs.js';
import { CacheStore } from '../store/cache-store.js';
import { MirrorGroup } from '../store/mirror-group.js';
import { DirStore } from '../store/node/dir-store.js';
import { reportSourceProblems } from './source-reporter.js';

test('a corrupt cached object (repaired) and a lying mirror (demoted) each give one console line, once', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'hostme-reporter-'));
  const lines: string[] = [];
  const stop = reportSourceProblems((line) => lines.push(line));
  try {
    const data = Buffer.alloc(4096, 7);
    const id = sha256Hex(data);
    const honest = new DirStore(join(dir, 'honest'));
    await honest.put(id, data);
    const liar = new DirStore(join(dir, 'liar'));
    await liar.put(id, Buffer.alloc(4096, 8)); // wrong bytes under the right name
    const cache = new DirStore(join(dir, 'cache'));
    await cache.put(id, Buffer.alloc(4096, 9)); // a corrupted cache entry
    const store = new CacheStore(cache, new MirrorGroup([liar, honest]));
    const object = await store.get({ id, length: data.length });
    assert.ok(Buffer.from(object.data).equals(data));
    await cache.remove?.(id);
    await store.get({ id, length: data.length });
    assert.equal(lines.filter((l) => /cache: object .* was corrupt .* deleted and fetched again/.test(l)).length, 1, lines.join('\n'));
    assert.equal(lines.filter((l) => /served wrong bytes .* demoted/.test(l)).length, 1, 'one line per source, not per read');
    assert.ok(lines.some((l) => l.includes(liar.name)));
  } finally {
    stop();
    await rm(dir, { recursive: true, force: true });
  }
});
