/**
 * Test helper process for verified-chunks.test.ts: records every chunk of a
 * file into a VerifiedChunkFile, over and over with fresh directories' worth
 * of flushes, until it is killed (the test kills it with SIGKILL at a random
 * moment). Arguments: DIR DISKFILE CHUNKSIZE.
 */
import { readFile } from 'node:fs/promises';
import { VerifiedChunkFile } from './verified-chunks.js';
import { chunkCountFor } from '../../format/chunk-index.js';

const [dir, diskFile, chunkSizeArg] = process.argv.slice(2) as [string, string, string];
const chunkSize = Number(chunkSizeArg);
const disk = await readFile(diskFile);
const ids = new Array<string>(chunkCountFor(disk.length, chunkSize)).fill('0'.repeat(64));
const file = await VerifiedChunkFile.open(dir, { size: disk.length, chunkSize, ids }, { flushDelayMs: 2 });
process.stdout.write('open\n');
// Random order, small flush delay: the kill lands between writes, syncs and map renames.
const order = ids.map((_, i) => i).sort(() => Math.random() - 0.5);
for (const chunk of order) {
  await file.record(chunk, disk.subarray(chunk * chunkSize, Math.min(disk.length, (chunk + 1) * chunkSize)));
  if (Math.random() < 0.2) await file.flush();
}
await file.close();
process.stdout.write('done\n');
