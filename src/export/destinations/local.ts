import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Destination, DestinationKind } from './types.js';

class LocalDestination implements Destination {
  readonly kind = 'local';
  readonly location: string;
  readonly workDirParent: string;

  constructor(dir: string) {
    this.location = resolve(dir);
    this.workDirParent = this.location;
  }

  async prepare(): Promise<void> {
    await mkdir(this.location, { recursive: true });
  }

  async put(item: { name: string; path: string; size: number }, onProgress?: (done: number, total: number) => void): Promise<string> {
    const final = join(this.location, item.name);
    const temp = join(this.location, `${item.name}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
    try {
      // The work directory lives in the destination, so this is a rename (sparse files stay sparse).
      await rename(item.path, temp).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EXDEV') throw err;
        await copyFile(item.path, temp);
      });
      await rename(temp, final);
    } catch (err) {
      await rm(temp, { force: true });
      throw err;
    }
    onProgress?.(item.size, item.size);
    return final;
  }

  async remove(name: string): Promise<void> {
    await rm(join(this.location, name), { force: true });
  }
}

/** A local directory (created if missing); files appear atomically (temp name, then rename). */
export const localDestination: DestinationKind = {
  name: 'local',
  example: './out or /srv/images',
  matches: (dest) => !/^[a-z][a-z0-9+.-]*:\/\//i.test(dest) || /^file:\/\//i.test(dest),
  open: (dest) => new LocalDestination(/^file:\/\//i.test(dest) ? new URL(dest).pathname : dest),
};
