/**
 * The CPU caretaker: a cgroup CPU bandwidth limit on the QEMU process
 * (`hostme grant NAME cpus 0.5`). It needs no guest cooperation: the host
 * kernel throttles QEMU's threads (vCPUs and I/O) to QUOTA of host CPU time
 * per 100 ms period. Created on the first grant, under the caller's own
 * cgroup: cgroup v1 `cpu` (cpu.cfs_quota_us) or cgroup v2 (cpu.max). hostme
 * needs write access there (root, or a delegated cgroup); otherwise the
 * grant fails with the reason and nothing changes.
 */
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { HostmeError, errorMessage } from '../errors.js';

const PERIOD_US = 100_000;

interface Mount { dir: string; version: 1 | 2; /** cgroup v2: the hierarchy's root, where a `hostme` folder can hold the limit when the own cgroup cannot (no-internal-processes rule). */ root?: string }

/** The cgroup folder of this process for the cpu controller (v1 preferred: its cpu controller needs no delegation). */
async function ownCpuCgroup(): Promise<Mount> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8');
  const own = await readFile('/proc/self/cgroup', 'utf8');
  const mounts = mountinfo.split('\n').map((line) => {
    const [left, right] = line.split(' - ');
    const fields = left?.split(' ') ?? [];
    const [fstype, , options] = right?.split(' ') ?? [];
    return { point: fields[4] ?? '', root: fields[3] ?? '/', fstype, options: options ?? '' };
  });
  const v1 = mounts.find((m) => m.fstype === 'cgroup' && m.options.split(',').includes('cpu'));
  const v1Path = /^\d+:([^:]*\bcpu\b[^:]*):(.*)$/m.exec(own);
  if (v1 && v1Path) return { dir: path.join(v1.point, path.relative(v1.root, v1Path[2]!)), version: 1 };
  const v2 = mounts.find((m) => m.fstype === 'cgroup2');
  const v2Path = /^0::(.*)$/m.exec(own);
  if (v2 && v2Path) return { dir: path.join(v2.point, path.relative(v2.root, v2Path[1]!)), version: 2, root: v2.point };
  throw new HostmeError('grant-failed', 'no cgroup cpu controller is mounted (cgroup v1 cpu or cgroup v2)');
}

export class CpuLimit {
  private group?: Mount;
  /** Host CPUs QEMU may use (undefined: unlimited). */
  quota?: number;

  constructor(private readonly pid: number, private readonly name: string) {}

  /** The cgroup QEMU was moved into (after the first set). */
  get dir(): string | undefined { return this.group?.dir; }

  private async ensure(): Promise<Mount> {
    if (this.group) return this.group;
    const parent = await ownCpuCgroup();
    const leaf = `hostme-${this.name}-${this.pid}`;
    const tries = [path.join(parent.dir, leaf)];
    // cgroup v2 refuses a child with the cpu controller under a cgroup that holds processes: fall back to <root>/hostme.
    if (parent.version === 2 && parent.root) tries.push(path.join(parent.root, 'hostme', leaf));
    const errors: string[] = [];
    for (const dir of tries) {
      try {
        await this.enter(dir, parent.version);
        this.group = { dir, version: parent.version };
        return this.group;
      } catch (err) {
        await rmdir(dir).catch(() => {});
        errors.push(`${dir}: ${errorMessage(err)}`);
      }
    }
    throw new HostmeError('grant-failed', `cannot put QEMU (pid ${this.pid}) in a cgroup (${errors.join('; ')}); hostme needs write access to the cgroup cpu controller: run as root or in a delegated cgroup`);
  }

  private async enter(dir: string, version: 1 | 2): Promise<void> {
    await mkdir(dir, { recursive: true });
    if (version === 1) await writeFile(path.join(dir, 'cpu.cfs_period_us'), String(PERIOD_US));
    else {
      // The cpu controller must be enabled for the folder's children, then the folder has cpu.max.
      for (const folder of [path.dirname(path.dirname(dir)), path.dirname(dir)]) await writeFile(path.join(folder, 'cgroup.subtree_control'), '+cpu').catch(() => {});
      await readFile(path.join(dir, 'cpu.max'), 'utf8');
    }
    await writeFile(path.join(dir, 'cgroup.procs'), String(this.pid));
  }

  /** Limits QEMU to `cpus` host CPUs (0.01..64), or lifts the limit (undefined). Takes effect at the next period (100 ms). */
  async set(cpus: number | undefined): Promise<void> {
    if (cpus === undefined && !this.group) return;
    const group = await this.ensure();
    const quota = cpus === undefined ? undefined : Math.max(1000, Math.round(cpus * PERIOD_US));
    if (group.version === 1) await writeFile(path.join(group.dir, 'cpu.cfs_quota_us'), String(quota ?? -1));
    else await writeFile(path.join(group.dir, 'cpu.max'), `${quota ?? 'max'} ${PERIOD_US}`);
    this.quota = cpus;
  }

  /** Periods in which QEMU was throttled (cpu.stat nr_throttled). */
  async throttledPeriods(): Promise<number> {
    if (!this.group) return 0;
    const stat = await readFile(path.join(this.group.dir, 'cpu.stat'), 'utf8');
    return Number(/nr_throttled (\d+)/.exec(stat)?.[1] ?? 0);
  }

  /** Removes the cgroup once QEMU exited (a cgroup with tasks cannot be removed). */
  async close(): Promise<void> {
    if (this.group) await rmdir(this.group.dir).catch(() => {});
  }
}

/** `0.5`, `2`: host CPUs, 0.01..64, at most two decimals. */
export function parseCpus(text: string): number {
  if (!/^\d{1,2}(\.\d{1,2})?$/.test(text) || Number(text) < 0.01 || Number(text) > 64) throw new HostmeError('usage', `cpus "${text}": host CPUs 0.01..64 (e.g. 0.5 or 2)`);
  return Number(text);
}
