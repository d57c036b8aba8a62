import fs from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { assertRepoPath, type ReadOptions, type RepoTransport, type WriteOptions } from '../transport.js';
import { StoreError } from '../errors.js';
import { fromFsError } from './fs-errors.js';
import { runTool } from '../../process/tool.js';

/** A repository or cache that is a local directory. Writes are temp file + fsync + rename. */
export class DirTransport implements RepoTransport {
  readonly root: string;
  readonly location: string;

  constructor(root: string) {
    this.root = resolve(root);
    this.location = `dir:${this.root}`;
  }

  fullPath(path: string): string {
    assertRepoPath(path);
    return join(this.root, path);
  }

  async read(path: string, options: ReadOptions = {}): Promise<Uint8Array | null> {
    const file = this.fullPath(path);
    try {
      // One open for the size check and the read: this is the hot path of a cached boot.
      const data = await readWhole(file, options.maxBytes);
      return new Uint8Array(data.buffer, data.byteOffset, data.length);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return null;
      if (e.code === 'EFBIG') throw new StoreError('store-io', `${this.location}: ${path} is larger than the ${options.maxBytes} bytes allowed`, { path });
      throw fromFsError(e, this.location, `read ${path}`);
    }
  }

  async exists(path: string): Promise<boolean> {
    try {
      await stat(this.fullPath(path));
      return true;
    } catch {
      return false;
    }
  }

  async write(path: string, data: Uint8Array, options: WriteOptions = {}): Promise<void> {
    await writeFileAtomic(this.fullPath(path), data, this.location, options.durable ?? true);
  }

  /** syncfs(2) of the file system holding the directory, through coreutils `sync -f`. */
  async sync(): Promise<void> {
    await runTool('sync', ['-f', this.root]).catch((err: Error) => {
      throw new StoreError('store-io', `${this.location}: cannot sync to disk: ${err.message}`);
    });
  }
}

/** Read a file through the callback API (measurably faster than FileHandle), refusing files over maxBytes. */
function readWhole(file: string, maxBytes = Number.MAX_SAFE_INTEGER): Promise<Buffer> {
  return new Promise((resolvePromise, reject) => {
    fs.open(file, 'r', (openErr, fd) => {
      if (openErr) return reject(openErr);
      const finish = (err: NodeJS.ErrnoException | null, data?: Buffer) => fs.close(fd, () => (err ? reject(err) : resolvePromise(data!)));
      fs.fstat(fd, (statErr, info) => {
        if (statErr) return finish(statErr);
        if (info.size > maxBytes) return finish(Object.assign(new Error('file too large'), { code: 'EFBIG' }));
        const data = Buffer.allocUnsafe(info.size);
        const readAt = (at: number): void => {
          if (at >= info.size) return finish(null, at === data.length ? data : data.subarray(0, at));
          fs.read(fd, data, at, info.size - at, at, (readErr, n) => (readErr ? finish(readErr) : n === 0 ? finish(null, data.subarray(0, at)) : readAt(at + n)));
        };
        readAt(0);
      });
    });
  });
}

/**
 * Crash-safe replace: a kill -9 or a full disk at any instant leaves either the
 * old file or the complete new one, plus at worst a stray ".tmp-" file that
 * readers ignore and cache gc removes.
 */
export async function writeFileAtomic(file: string, data: Uint8Array, location = file, durable = true): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await mkdir(dirname(file), { recursive: true });
    const handle = await open(tmp, 'w', 0o644);
    try {
      await handle.writeFile(data);
      if (durable) await handle.datasync();
    } finally {
      await handle.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => {});
    throw fromFsError(err as NodeJS.ErrnoException, location, `write ${file}`);
  }
}
