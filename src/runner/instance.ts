import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HostmeError } from '../errors.js';
import { writeFileAtomic } from '../store/node/dir-transport.js';

export interface InstanceRecord {
  repo: string;
  name: string;
  version: string;
  manifestDigest: string;
  created: string;
}

interface LockContents {
  pid: number;
  qemuPid?: number;
}

/**
 * One instance of an image on this machine: its copy-on-write overlay and a
 * lock so two runs never write the same overlay. A lock left by a killed run
 * (its pid is gone) is taken over, and a QEMU it left behind is stopped.
 */
export class Instance {
  private locked = false;

  constructor(readonly dir: string) {}

  get lockPath(): string {
    return join(this.dir, 'lock');
  }

  async lock(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const handle = await open(this.lockPath, 'wx');
        await handle.writeFile(JSON.stringify({ pid: process.pid } satisfies LockContents));
        await handle.close();
        this.locked = true;
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const holder = await this.readLock();
      if (holder && isAlive(holder.pid)) {
        throw new HostmeError('instance-busy', `this instance is already running (hostme pid ${holder.pid}); stop it first, or run another copy with --instance NAME`, { pid: holder.pid, dir: this.dir });
      }
      // Stale: its hostme was killed. Stop the QEMU it may have left running on our overlay.
      if (holder?.qemuPid && isAlive(holder.qemuPid)) {
        try {
          process.kill(holder.qemuPid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
      await rm(this.lockPath, { force: true });
    }
    throw new HostmeError('instance-busy', `cannot lock ${this.dir}`, { dir: this.dir });
  }

  async recordQemuPid(qemuPid: number): Promise<void> {
    if (this.locked) await writeFile(this.lockPath, JSON.stringify({ pid: process.pid, qemuPid } satisfies LockContents));
  }

  async unlock(): Promise<void> {
    if (!this.locked) return;
    this.locked = false;
    await rm(this.lockPath, { force: true });
  }

  async record(): Promise<InstanceRecord | null> {
    const text = await readFile(join(this.dir, 'instance.json'), 'utf8').catch(() => null);
    if (!text) return null;
    try {
      return JSON.parse(text) as InstanceRecord;
    } catch {
      return null;
    }
  }

  async saveRecord(record: InstanceRecord): Promise<void> {
    await writeFileAtomic(join(this.dir, 'instance.json'), new TextEncoder().encode(JSON.stringify(record, null, 2) + '\n'));
  }

  /** Discard the guest's writes (keeps the lock). */
  async discardOverlay(): Promise<void> {
    for (const file of ['overlay.data', 'overlay.map', 'instance.json']) await rm(join(this.dir, file), { force: true });
  }

  private async readLock(): Promise<LockContents | null> {
    const text = await readFile(this.lockPath, 'utf8').catch(() => null);
    if (!text) return null;
    try {
      return JSON.parse(text) as LockContents;
    } catch {
      return null;
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Remove an instance entirely (hostme reset). Refuses while it runs. */
export async function resetInstance(dir: string): Promise<boolean> {
  const instance = new Instance(dir);
  const exists = await readFile(join(dir, 'instance.json')).then(() => true, () => false);
  await instance.lock();
  await rm(dir, { recursive: true, force: true });
  return exists;
}
