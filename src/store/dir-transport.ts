import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { assertRepoPath, type ReadOptions, type RepoTransport, type WriteOptions } from './transport.js';
import { StoreError, fromFsError } from './errors.js';

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
      if (options.maxBytes !== undefined) {
        const info = await stat(file);
        if (info.size > options.maxBytes) {
          throw new StoreError('store-io', `${this.location}: ${path} is ${info.size} bytes, more than the ${options.maxBytes} allowed`, { path });
        }
      }
      const data = await readFile(file);
      return new Uint8Array(data.buffer, data.byteOffset, data.length);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return null;
      if (err instanceof StoreError) throw err;
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
    await promisify(execFile)('sync', ['-f', this.root]).catch((err: Error) => {
      throw new StoreError('store-io', `${this.location}: cannot sync to disk: ${err.message}`);
    });
  }
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
