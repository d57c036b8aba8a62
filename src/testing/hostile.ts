/**
 * Hostile inputs for the hardening tests: built by hand, in milliseconds, so
 * the tests never need a slow compressor or a big file to attack with.
 */
import { spawn } from 'node:child_process';

const RLE_BLOCK = 128 * 1024;

/**
 * A zstd frame of RLE blocks (4 bytes each for 128 KiB of one byte value):
 * `contentBytes` of content in contentBytes / 32768 bytes. With `declare`, the
 * header states the true content size (8-byte Frame_Content_Size); without,
 * the size is unknown until decoded.
 */
export function zstdBomb(contentBytes: number, declare = false, byte = 0): Buffer {
  const blocks = Math.ceil(contentBytes / RLE_BLOCK);
  const header = declare ? Buffer.alloc(4 + 1 + 1 + 8) : Buffer.alloc(4 + 1 + 1);
  header.writeUInt32LE(0xfd2fb528, 0);
  // Frame_Header_Descriptor: FCS_flag (bits 7-6) = 3 (8 bytes) or 0; no single segment, checksum or dictionary.
  header[4] = declare ? 0xc0 : 0x00;
  header[5] = (17 - 10) << 3; // Window_Descriptor: 2^17 = 128 KiB
  if (declare) header.writeBigUInt64LE(BigInt(contentBytes), 6);
  const body = Buffer.alloc(blocks * 4);
  for (let i = 0; i < blocks; i++) {
    const size = i === blocks - 1 ? contentBytes - i * RLE_BLOCK : RLE_BLOCK;
    const last = i === blocks - 1 ? 1 : 0;
    body.writeUIntLE((size << 3) | (1 << 1) | last, i * 4, 3); // Block_Type 1 = RLE
    body[i * 4 + 3] = byte;
  }
  return Buffer.concat([header, body]);
}

/**
 * Runs an ES module script in a fresh Node process and returns what it
 * printed last (as JSON) plus the process's peak resident memory: the
 * "memory stays bounded" tests measure, in a process of their own, rather
 * than guess.
 */
export async function runMeasured(script: string, cwd: string): Promise<{ result: unknown; maxRssBytes: number }> {
  const wrapped = `${script}\nprocess.stdout.write('\\n' + JSON.stringify({ __maxRss: process.resourceUsage().maxRSS * 1024 }) + '\\n');`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', wrapped], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`measured script exited ${code}: ${err.slice(-2000)}`);
  const lines = out.trim().split('\n').filter((l) => l.trim());
  const rss = JSON.parse(lines.pop()!) as { __maxRss: number };
  return { result: lines.length ? JSON.parse(lines[lines.length - 1]!) : undefined, maxRssBytes: rss.__maxRss };
}
