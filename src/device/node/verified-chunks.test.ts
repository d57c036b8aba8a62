import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { readFile } from 'node:fs/promises';
import { chunkCountFor, type ChunkIndex } from '../../format/chunk-index.js';
import { makeDiskBytes, removeDir, tempDir, writeDisk } from '../../testing/fixtures.js';
import { VerifiedChunkFile } from './verified-chunks.js';

const CHUNK = 65536;
const indexOf = (disk: Uint8Array): ChunkIndex => ({ size: disk.length, chunkSize: CHUNK, ids: new Array<string>(chunkCountFor(disk.length, CHUNK)).fill('0'.repeat(64)) });

test('verified chunks survive a reopen; a map of another blob is ignored', async () => {
  const dir = await tempDir('hostme-verified-');
  try {
    const disk = makeDiskBytes(1, 4);
    const index = indexOf(disk);
    const file = await VerifiedChunkFile.open(join(dir, 'v'), index);
    await file.record(3, disk.subarray(3 * CHUNK, 4 * CHUNK));
    assert.equal(file.has(3), false, 'not claimed before the data is synced and the map written');
    await file.close();
    const again = await VerifiedChunkFile.open(join(dir, 'v'), index);
    assert.equal(again.has(3), true);
    assert.equal(again.has(4), false);
    assert.deepEqual(await again.read(3), disk.subarray(3 * CHUNK, 4 * CHUNK));
    await again.close();
    const other = await VerifiedChunkFile.open(join(dir, 'v'), { ...index, size: index.size - CHUNK, ids: index.ids.slice(1) });
    assert.equal(other.has(3), false);
    await other.close();
  } finally {
    await removeDir(dir);
  }
});

test('kill -9 mid-write never leaves the map claiming bytes that are not the verified ones (every byte compared)', async () => {
  const dir = await tempDir('hostme-verified-kill-');
  try {
    const disk = makeDiskBytes(16, 9);
    const diskFile = await writeDisk(join(dir, 'disk.raw'), disk);
    const store = join(dir, 'v');
    const child = fileURLToPath(new URL('./verified-chunks.child.js', import.meta.url));
    let claimed = 0;
    for (let round = 0; round < 4; round++) {
      const proc = spawn(process.execPath, [child, store, diskFile, String(CHUNK)], { stdio: ['ignore', 'pipe', 'inherit'] });
      // Listen from the start: on an idle machine the writer may finish before the kill.
      const closed = new Promise((resolve) => proc.once('close', resolve));
      let out = '';
      proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
      for (let i = 0; i < 400 && !out.includes('open'); i++) await sleep(10);
      await sleep(20 + Math.floor(Math.random() * 150));
      proc.kill('SIGKILL');
      await closed;
      const file = await VerifiedChunkFile.open(store, indexOf(disk));
      claimed = 0;
      for (let chunk = 0; chunk < disk.length / CHUNK; chunk++) {
        if (!file.has(chunk)) continue;
        claimed++;
        assert.deepEqual(await file.read(chunk), disk.subarray(chunk * CHUNK, (chunk + 1) * CHUNK), `chunk ${chunk} after kill ${round + 1}`);
      }
      await file.close();
    }
    assert.ok(claimed > 0, 'some chunks were recorded before the kills');
    assert.ok((await readFile(join(store, 'map'))).length > 24);
  } finally {
    await removeDir(dir);
  }
});
