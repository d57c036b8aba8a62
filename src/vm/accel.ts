/**
 * Decides between KVM and TCG. /dev/kvm existing (or even opening) proves
 * little: nested or software-only KVM modules exist that cannot run a stock
 * kernel, and a tiny probe guest passing proves little more (measured: a
 * probe that passes 4 times in 6 on a machine where a real kernel prints
 * nothing in 40 s). So the probe only filters: KVM is trusted once a real
 * guest has shown life under it (launchVm's watchdog), and that verdict is
 * remembered per machine (accel-verdict.ts). docs/run.md "Accelerator".
 */
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { HostmeError, isHostmeError } from '../errors.js';
import { runTool, type ToolResult } from '../process/tool.js';
import { qemuToolName } from './qemu-binary.js';
import { machineIdentity, rememberVerdict, rememberedVerdict, type MachineIdentity } from './accel-verdict.js';

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
  /** Why KVM was not chosen (or 'probe ok'). */
  reason: string;
}

/** How the accelerator for a launch was chosen (hostme doctor and run --verbose print it). */
export interface AccelChoice {
  accel: Accel;
  /** One line: why. */
  reason: string;
  source: 'override' | 'caller' | 'remembered' | 'no-kvm' | 'probe';
  /**
   * KVM passed only the probe: no real guest has run under it on this
   * machine yet, so the launcher's watchdog has the last word.
   */
  provisional: boolean;
  machine?: MachineIdentity;
}

/** HOSTME_ACCEL=kvm|tcg, or undefined when unset. */
export function accelOverride(): Accel | undefined {
  const value = process.env.HOSTME_ACCEL;
  if (value === undefined || value === '') return undefined;
  if (value !== 'kvm' && value !== 'tcg') {
    throw new HostmeError('bad-accel', `HOSTME_ACCEL must be 'kvm' or 'tcg', not '${value}'`, { value });
  }
  return value;
}

/** The KVM device ($HOSTME_KVM_DEVICE lets tests stand a file in for it). */
export function kvmDevice(): string {
  return process.env.HOSTME_KVM_DEVICE || '/dev/kvm';
}

const choices = new Map<string, Promise<AccelChoice>>();

/**
 * The accelerator for the next launch: HOSTME_ACCEL, else the verdict
 * remembered for this machine, else TCG when /dev/kvm cannot be opened, else
 * the probe guest (a failure is remembered; a pass is provisional until a
 * real guest shows life under KVM, see launchVm's watchdog). Once per process
 * and binary; `fresh` forgets that (hostme doctor).
 */
export async function chooseAccel(options: { qemuBinary?: string; probeTimeoutMs?: number; fresh?: boolean } = {}): Promise<AccelChoice> {
  const override = accelOverride();
  if (override) return { accel: override, reason: 'override (HOSTME_ACCEL)', source: 'override', provisional: false };
  const qemu = options.qemuBinary ?? 'qemu-system-x86_64';
  if (options.fresh) choices.delete(qemu);
  let choice = choices.get(qemu);
  if (!choice) {
    choice = decide(qemu, options.probeTimeoutMs ?? 4000);
    choices.set(qemu, choice);
  }
  return choice;
}

/** Forgets the per-process choice (after a verdict changed, and in tests). */
export function resetAccelCache(): void {
  choices.clear();
}

/** 'kvm' or 'tcg' for this machine, without starting a real guest (benchmarks, tests). */
export async function probeAccel(options: { qemuBinary?: string } = {}): Promise<Accel> {
  return (await chooseAccel(options)).accel;
}

async function decide(qemu: string, probeTimeoutMs: number): Promise<AccelChoice> {
  const device = kvmDevice();
  try {
    const fh = await fs.open(device, fsConstants.O_RDWR);
    await fh.close();
  } catch (err) {
    return { accel: 'tcg', reason: `${device} not usable: ${(err as Error).message}`, source: 'no-kvm', provisional: false };
  }
  const machine = await machineIdentity(qemu);
  const remembered = await rememberedVerdict(machine);
  if (remembered) {
    return { accel: remembered.accel, reason: `remembered for this machine since ${remembered.decidedAt}: ${remembered.reason}`, source: 'remembered', provisional: false, machine };
  }
  const probe = await runProbe(qemu, probeTimeoutMs);
  if (probe.accel === 'tcg') {
    await rememberVerdict({ accel: 'tcg', reason: probe.reason, evidence: 'probe', machine });
    return { accel: 'tcg', reason: probe.reason, source: 'probe', provisional: false, machine };
  }
  return { accel: 'kvm', reason: 'the KVM probe guest ran; no real guest has run under KVM here yet', source: 'probe', provisional: true, machine };
}

async function runProbe(qemu: string, timeoutMs: number): Promise<ProbeResult> {
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
    // Exit 67 is the probe's own success (isa-debug-exit); anything else is KVM failing it.
    let result: ToolResult;
    try {
      result = await runTool(qemuToolName(qemu), args, { binary: qemu, timeoutMs, okExitCodes: [PROBE_EXIT_STATUS], maxOutputBytes: 64 << 10 });
    } catch (err) {
      return probeFailure(err, qemu, timeoutMs);
    }
    if (result.stdout.includes('1K')) return { accel: 'kvm', reason: 'probe ok' };
    return { accel: 'tcg', reason: `KVM probe guest failed (status ${result.exit}): ${lastLines(result.stderr) || 'no output'}` };
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

function probeFailure(err: unknown, qemu: string, timeoutMs: number): ProbeResult {
  if (!isHostmeError(err)) throw err;
  if (err.code === 'tool-timeout') return { accel: 'tcg', reason: `KVM probe guest did not finish within ${timeoutMs} ms` };
  // No exit status: QEMU did not start at all (missing, not executable).
  if (err.context.exit === undefined) return { accel: 'tcg', reason: `cannot run ${qemu}: ${err.message}` };
  return { accel: 'tcg', reason: `KVM probe guest failed (status ${String(err.context.exit)}): ${lastLines(String(err.context.stderr ?? '')) || 'no output'}` };
}

function lastLines(text: string): string {
  return text.trim().split('\n').slice(-2).join(' / ');
}
