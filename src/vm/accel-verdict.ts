/**
 * The remembered KVM verdict. Whether KVM can run a real guest is a fact
 * about the machine (QEMU build, host kernel, CPU), not about one run: once a
 * real guest has shown life under KVM, or failed to, the next run on the same
 * machine reuses that answer instead of paying for a probe or a watchdog.
 *
 * File: <cache root>/accel.json, { "version": 1, "verdicts": { "<machine key>": Verdict } }.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, realpath, rename, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { userCacheRoot } from '../user-dirs.js';
import type { Accel } from './accel.js';
import { qemuVersionLine, resolveQemuBinary } from './qemu-binary.js';

export interface MachineIdentity {
  /**
   * The QEMU binary as a file: real path, size and modification time. A
   * stat instead of `qemu --version` (which costs 0.2–0.35 s on a loaded
   * machine) keeps a remembered verdict free; an upgrade changes the file.
   */
  qemu: string;
  /** Host kernel release and build. */
  kernel: string;
  /** CPU model name from /proc/cpuinfo. */
  cpu: string;
}

export interface AccelVerdict {
  accel: Accel;
  /** One line: what was observed. */
  reason: string;
  /** 'guest': a real guest showed life (or none) under KVM; 'probe': only the probe guest ran. */
  evidence: 'guest' | 'probe';
  decidedAt: string;
  machine: MachineIdentity;
}

interface VerdictFile {
  version: 1;
  verdicts: Record<string, AccelVerdict>;
}

export function verdictFile(): string {
  return process.env.HOSTME_ACCEL_VERDICT_FILE || path.join(userCacheRoot(), 'accel.json');
}

const identities = new Map<string, Promise<MachineIdentity>>();

/** The binary's own version line, for people (hostme doctor); not part of the identity. */
export async function qemuVersion(qemuBinary: string): Promise<string> {
  return (await qemuVersionLine(qemuBinary)) ?? `unknown (${qemuBinary} --version failed)`;
}

/** This machine as the verdict sees it (once per binary and process). */
export function machineIdentity(qemuBinary: string): Promise<MachineIdentity> {
  let found = identities.get(qemuBinary);
  if (!found) {
    found = readIdentity(qemuBinary);
    identities.set(qemuBinary, found);
  }
  return found;
}

async function readIdentity(qemuBinary: string): Promise<MachineIdentity> {
  const qemu = await resolveQemuBinary(qemuBinary)
    .then(async (found) => {
      const real = await realpath(found);
      const info = await stat(real);
      return `${real} (${info.size} bytes, modified ${info.mtime.toISOString()})`;
    })
    .catch(() => `missing (${qemuBinary})`);
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  return { qemu, kernel: `${os.release()} ${os.version()}`, cpu };
}

export function machineKey(machine: MachineIdentity): string {
  return createHash('sha256').update(JSON.stringify([machine.qemu, machine.kernel, machine.cpu])).digest('hex').slice(0, 32);
}

async function readVerdicts(): Promise<VerdictFile> {
  try {
    const parsed = JSON.parse(await readFile(verdictFile(), 'utf8')) as Partial<VerdictFile>;
    if (parsed.version === 1 && parsed.verdicts && typeof parsed.verdicts === 'object') return parsed as VerdictFile;
  } catch {
    /* missing or unreadable: no verdict yet */
  }
  return { version: 1, verdicts: {} };
}

/** The remembered verdict for this machine, or undefined. A malformed entry counts as none. */
export async function rememberedVerdict(machine: MachineIdentity): Promise<AccelVerdict | undefined> {
  const verdict = (await readVerdicts()).verdicts[machineKey(machine)];
  if (!verdict || (verdict.accel !== 'kvm' && verdict.accel !== 'tcg') || typeof verdict.reason !== 'string') return undefined;
  return verdict;
}

/**
 * Remembers a verdict (atomically: a crash leaves the old file or the new one).
 * Failing to write is not fatal: the next run decides again.
 */
export async function rememberVerdict(verdict: Omit<AccelVerdict, 'decidedAt'>): Promise<void> {
  const all = await readVerdicts();
  all.verdicts[machineKey(verdict.machine)] = { ...verdict, decidedAt: new Date().toISOString() };
  await writeVerdicts(all);
}

async function writeVerdicts(all: VerdictFile): Promise<void> {
  const file = verdictFile();
  try {
    await mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.tmp-${process.pid}`;
    await writeFile(tmp, JSON.stringify(all, null, 2) + '\n');
    await rename(tmp, file);
  } catch {
    /* read-only cache: decide again next time */
  }
}

/** Forgets this machine's verdict (hostme doctor --recheck). */
export async function forgetVerdict(machine: MachineIdentity): Promise<void> {
  const all = await readVerdicts();
  if (!(machineKey(machine) in all.verdicts)) return;
  delete all.verdicts[machineKey(machine)];
  await writeVerdicts(all);
}
