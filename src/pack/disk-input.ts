import { mkdtemp, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { HostmeError, isHostmeError } from '../errors.js';
import { runTool } from '../process/tool.js';

export interface DiskInput {
  /** A raw file to read chunks from (the original, or a sparse temporary conversion). */
  rawPath: string;
  virtualSize: number;
  format: string;
  cleanup(): Promise<void>;
}

/**
 * Accept raw and every format qemu-img reads. Non-raw images are converted by
 * qemu-img to a sparse raw file in `workDir` (never loaded into memory), then
 * chunked like a raw disk.
 */
export async function openDiskInput(path: string, workDir: string): Promise<DiskInput> {
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    throw new HostmeError('disk-unreadable', `${path}: cannot read the disk (${err.code === 'ENOENT' ? 'no such file' : err.message})`, { path });
  });
  if (!info.isFile() && !info.isBlockDevice()) throw new HostmeError('disk-unreadable', `${path}: not a disk image file`, { path });
  const format = await detectFormat(path);
  if (format === 'raw') {
    if (info.size === 0 || info.size % 512 !== 0) {
      throw new HostmeError('disk-unreadable', `${path}: not a disk image (a raw disk is a non-empty multiple of 512 bytes; this is ${info.size} bytes)`, { path, size: info.size });
    }
    return { rawPath: path, virtualSize: info.size, format, cleanup: async () => {} };
  }
  const dir = await mkdtemp(join(workDir, '.pack-'));
  const rawPath = join(dir, 'disk.raw');
  try {
    await runTool('qemu-img', ['convert', '-q', '-f', format, '-O', 'raw', '-S', '4k', path, rawPath], { maxOutputBytes: 1 << 20 });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    if (isHostmeError(err, 'tool-missing')) throw err;
    throw new HostmeError('disk-unreadable', `${path}: qemu-img could not convert this ${format} image: ${stderrOf(err)}`, { path, format });
  }
  const size = (await stat(rawPath)).size;
  return { rawPath, virtualSize: size, format, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

async function detectFormat(path: string): Promise<string> {
  try {
    const { stdout } = await runTool('qemu-img', ['info', '--output=json', path], { maxOutputBytes: 1 << 20 });
    return (JSON.parse(stdout) as { format: string }).format;
  } catch (err) {
    if (isHostmeError(err, 'tool-missing')) throw err;
    throw new HostmeError('disk-unreadable', `${path}: qemu-img cannot read it: ${stderrOf(err)}`, { path });
  }
}

function stderrOf(err: unknown): string {
  const stderr = isHostmeError(err) ? String(err.context.stderr ?? '').trim() : '';
  return (stderr || (err as Error).message).split('\n').slice(-1)[0]!;
}
