import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Repository } from '../repo/repository.js';
import type { Manifest } from '../format/manifest.js';
import { CountingSource } from '../testing/counting-source.js';
import { makeDiskBytes, packWithNewKey, patchFile, removeDir, tempDir, writeDisk } from '../testing/fixtures.js';
import { materializeBlob } from './blob-file.js';

let work: string;
let repo: Repository;
let manifest: Manifest;
let disk: Uint8Array;

before(async () => {
  work = await tempDir('hostme-blob-file-');
  disk = makeDiskBytes(4, 7);
  const file = await writeDisk(join(work, 'disk.raw'), disk);
  ({ repo } = await packWithNewKey(work, join(work, 'repo'), { disk: file, name: 'blob', version: '1', chunkSize: 65536 }));
  manifest = (await repo.loadImage('blob', '1')).manifest;
});

after(() => removeDir(work));

test('a cached blob is verified once: the next run trusts its stamp; a changed file is checked again and repaired', async () => {
  const ref = manifest.disks[0]!;
  const where = { cacheDir: join(work, 'cache'), fallbackFile: join(work, 'fallback') };
  const first = new CountingSource(repo.objects);
  const file = await materializeBlob(repo, first, ref, 'disk', where);
  assert.ok(first.reads > 1, 'the first run fetched the chunks');
  assert.deepEqual(new Uint8Array(await readFile(file)), disk);
  assert.ok((await stat(`${file}.verified`)).isFile(), 'a stamp records the verified file');

  const second = new CountingSource(repo.objects);
  assert.equal(await materializeBlob(repo, second, ref, 'disk', where), file);
  assert.equal(second.reads, 1, 'only the chunk index is read: the file itself is trusted by its stamp');

  // Any change moves the file's ctime: the stamp no longer matches, the hashes do not either, it is rewritten.
  await patchFile(file, 70_000, new Uint8Array([1, 2, 3, 4]));
  const third = new CountingSource(repo.objects);
  await materializeBlob(repo, third, ref, 'disk', where);
  assert.ok(third.reads > 1, 'the changed file was fetched again');
  assert.deepEqual(new Uint8Array(await readFile(file)), disk);
});
