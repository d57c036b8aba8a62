/**
 * `files: [{random: {size, seed}, dest}]`: deterministic, incompressible
 * content. Test and benchmark images use it as padding the guest never reads,
 * so "how much of the disk did a boot fetch" is measured against a disk with
 * real content instead of an empty one.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

const CHUNK = 1 << 20;

/**
 * Writes `bytes` bytes of AES-128-CTR keystream (key: the first 16 bytes of
 * sha256("hostme-random:" + seed), IV 0) to `file`: the same seed always gives
 * the same bytes, and no compressor can shrink them.
 */
export async function writeRandomFile(file: string, bytes: number, seed: string): Promise<void> {
  const key = createHash('sha256').update(`hostme-random:${seed}`).digest().subarray(0, 16);
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(CHUNK);
  const handle = await open(file, 'w', 0o644);
  try {
    for (let written = 0; written < bytes; ) {
      const n = Math.min(CHUNK, bytes - written);
      const block = cipher.update(zeros.subarray(0, n));
      await handle.write(block, 0, block.length);
      written += n;
    }
  } finally {
    await handle.close();
  }
}
