/**
 * Decides between KVM and TCG. /dev/kvm existing (or even opening) proves
 * little: nested or software-only KVM modules exist that cannot run a stock
 * kernel. So KVM is chosen only if a tiny guest actually runs under it, with
 * the same CPU model the launcher will use (`-cpu host`), within a few seconds.
 */
import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { HostmeError } from '../errors.js';

export type Accel = 'kvm' | 'tcg';

/**
 * The probe guest: a 182-byte flat multiboot image (address-kludge header, so
 * QEMU's -kernel loads it at 1 MiB). It prints '1' on COM1, builds identity
 * page tables at 2 MiB, enables PAE + EFER.LME + paging, far-jumps into a
 * 64-bit code segment, prints 'K' and writes 0x21 to isa-debug-exit at 0xf4,
 * so QEMU exits with status (0x21 << 1) | 1 = 67. Assembled from:
 *
 *   .code32
 *   _start: .long 0x1BADB002, 0x00010000, -(0x1BADB002+0x00010000)
 *           .long 0x100000, 0x100000, 0, 0, entry32
 *   entry32: cli; mov $0x3f8,%dx; mov $'1',%al; out %al,%dx
 *           mov $0x200000,%edi; xor %eax,%eax; mov $3072,%ecx; rep stosl
 *           movl $0x201003,0x200000; movl $0x202003,0x201000; movl $0x83,0x202000
 *           mov %cr4,%eax; or $0x20,%eax; mov %eax,%cr4
 *           mov $0x200000,%eax; mov %eax,%cr3
 *           mov $0xC0000080,%ecx; rdmsr; or $0x100,%eax; wrmsr
 *           mov %cr0,%eax; or $0x80000001,%eax; mov %eax,%cr0
 *           lgdt gdtr; ljmp $0x08,$entry64
 *   .code64
 *   entry64: mov $0x3f8,%dx; mov $'K',%al; out %al,%dx
 *           mov $0x21,%al; out %al,$0xf4
 *   1:      hlt; jmp 1b
 *   .align 8
 *   gdt:    .quad 0, 0x00209A0000000000
 *   gdtr:   .word 15; .long gdt
 *
 * (as --32; ld -m elf_i386 -Ttext=0x100000 --oformat binary)
 */
const PROBE_IMAGE_BASE64 =
  'ArCtGwAAAQD+T1HkAAAQAAAAEAAAAAAAAAAAACAAEAD6Zrr4A7Ax7r8AACAAMcC5AAwAAPOrxwUAACAAAxAgAMcFABAgAAMgIADHBQAgIACDAAAADyDgg8ggDyLguAAAIAAPIti5gAAAwA8yDQABAAAPMA8gwA0BAACADyLADwEVsAAQAOqMABAACABmuvgDsEvusCHm9PTr/Y22AAAAAAAAAAAAAAAAAAAAAACaIAAPAKAAEAA=';
const PROBE_EXIT_STATUS = 67;

export interface ProbeResult {
  accel: Accel;
  /** Why KVM was not chosen (or 'override' / 'probe ok'). */
  reason: string;
}

let cached: Promise<ProbeResult> | undefined;

/** 'kvm' or 'tcg' for this machine; probed once per process. HOSTME_ACCEL=kvm|tcg overrides. */
export async function probeAccel(options: { qemuBinary?: string; timeoutMs?: number } = {}): Promise<Accel> {
  return (await probeAccelDetailed(options)).accel;
}

export function probeAccelDetailed(options: { qemuBinary?: string; timeoutMs?: number } = {}): Promise<ProbeResult> {
  const override = process.env.HOSTME_ACCEL;
  if (override !== undefined && override !== '') {
    if (override !== 'kvm' && override !== 'tcg') {
      return Promise.reject(new HostmeError('bad-accel', `HOSTME_ACCEL must be 'kvm' or 'tcg', not '${override}'`, { value: override }));
    }
    return Promise.resolve({ accel: override, reason: 'override (HOSTME_ACCEL)' });
  }
  cached ??= runProbe(options.qemuBinary ?? 'qemu-system-x86_64', options.timeoutMs ?? 4000);
  return cached;
}

/** Forgets the per-process result (tests). */
export function resetAccelCache(): void {
  cached = undefined;
}

async function runProbe(qemu: string, timeoutMs: number): Promise<ProbeResult> {
  try {
    const fh = await fs.open('/dev/kvm', fsConstants.O_RDWR);
    await fh.close();
  } catch (err) {
    return { accel: 'tcg', reason: `/dev/kvm not usable: ${(err as Error).message}` };
  }
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'hostme-kvm-probe-'));
  const image = path.join(dir, 'probe.bin');
  try {
    await fs.writeFile(image, Buffer.from(PROBE_IMAGE_BASE64, 'base64'));
    const args = [
      '-accel', 'kvm', '-cpu', 'host', '-machine', 'pc', '-m', '32',
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-kernel', image, '-serial', 'stdio',
      '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04',
    ];
    const outcome = await new Promise<{ status: number | null; out: string; err: string; timedOut: boolean; spawnError?: Error }>(
      (resolve) => {
        let out = '';
        let errText = '';
        let timedOut = false;
        const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
        const timer = setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, timeoutMs);
        child.stdout.on('data', (d: Buffer) => (out += d.toString('latin1')));
        child.stderr.on('data', (d: Buffer) => (errText += d.toString('utf8')));
        child.on('error', (e) => {
          clearTimeout(timer);
          resolve({ status: null, out, err: errText, timedOut, spawnError: e });
        });
        child.on('close', (status) => {
          clearTimeout(timer);
          resolve({ status, out, err: errText, timedOut });
        });
      },
    );
    if (outcome.spawnError) return { accel: 'tcg', reason: `cannot run ${qemu}: ${outcome.spawnError.message}` };
    if (outcome.status === PROBE_EXIT_STATUS && outcome.out.includes('1K')) return { accel: 'kvm', reason: 'probe ok' };
    if (outcome.timedOut) return { accel: 'tcg', reason: `KVM probe guest did not finish within ${timeoutMs} ms` };
    const lastErr = outcome.err.trim().split('\n').slice(-2).join(' / ');
    return { accel: 'tcg', reason: `KVM probe guest failed (status ${outcome.status}): ${lastErr || 'no output'}` };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
