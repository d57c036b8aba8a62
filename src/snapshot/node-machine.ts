import { readFile } from 'node:fs/promises';
import { HostmeError } from '../errors.js';
import { V86ChunkDisk, type DiskReadFailure } from '../web/reader/v86-disk.js';
import type { ImageDisk } from '../device/image-disks.js';
import { VGA_MEMORY_BYTES } from '../web/reader/v86-machine.js';
import { seabiosFile, v86File } from './v86-install.js';

/** The part of v86's API hostme uses (its own typings do not admit custom disks). */
interface V86Emulator {
  add_listener(event: string, fn: (value: unknown) => void): void;
  serial0_send(text: string): void;
  stop(): Promise<void>;
  destroy(): Promise<void>;
  save_state(): Promise<ArrayBuffer>;
}
type V86Constructor = new (options: Record<string, unknown>) => V86Emulator;

/** How the machine starts: a cold boot from kernel (+ initrd), or a saved state. */
export type MachineStart =
  | { kind: 'boot'; kernel: Uint8Array; initrd?: Uint8Array; cmdline: string }
  | { kind: 'restore'; state: Uint8Array };

export interface NodeMachineOptions {
  start: MachineStart;
  /** The image's first disk as openImageDisks assembles it, with an in-memory overlay (as in the page). */
  disk: ImageDisk;
  memoryBytes: number;
  vgaMemoryBytes?: number;
}

/** Transcript kept for pattern matching: enough for any prompt, bounded for long runs. */
const TRANSCRIPT_LIMIT = 256 * 1024;
/** Loading v86 (and restoring a state) takes well under a second; a minute means it is stuck. */
const LOAD_TIMEOUT_MS = 60_000;

/**
 * A v86 PC running under Node with the image's disk read through the same
 * V86ChunkDisk the run page uses, so a state saved here has exactly the
 * device state the page restores into. Serial console only.
 */
export class NodeMachine {
  transcript = '';
  private diskFailure: unknown;
  private waiters = new Set<() => void>();
  private lastOutput = performance.now();

  private constructor(
    private readonly emulator: V86Emulator,
    readonly disk: V86ChunkDisk,
  ) {}

  static async start(options: NodeMachineOptions): Promise<NodeMachine> {
    const { V86 } = (await import('v86')) as unknown as { V86: V86Constructor };
    const [bios, vgaBios] = await Promise.all([readAsset(seabiosFile('bios.bin')), readAsset(seabiosFile('vgabios-stdvga.bin'))]);
    const holder: { machine?: NodeMachine } = {};
    const disk = new V86ChunkDisk(options.disk, (failure: DiskReadFailure) => {
      // Under Node there is nobody to press Retry: the read failure ends the run.
      if (holder.machine) holder.machine.fail(failure.error);
    });
    const start = options.start;
    const emulator = new V86({
      wasm_path: v86File('v86.wasm'),
      bios: { buffer: arrayBuffer(bios) },
      vga_bios: { buffer: arrayBuffer(vgaBios) },
      hda: disk,
      memory_size: options.memoryBytes,
      vga_memory_size: options.vgaMemoryBytes ?? VGA_MEMORY_BYTES,
      autostart: true,
      disable_keyboard: true,
      disable_mouse: true,
      disable_speaker: true,
      ...(start.kind === 'boot'
        ? {
            bzimage: { buffer: arrayBuffer(start.kernel) },
            ...(start.initrd ? { initrd: { buffer: arrayBuffer(start.initrd) } } : {}),
            cmdline: start.cmdline,
          }
        : { initial_state: { buffer: arrayBuffer(start.state) } }),
    });
    const machine = new NodeMachine(emulator, disk);
    holder.machine = machine;
    emulator.add_listener('serial0-output-byte', (byte) => machine.output(byte as number));
    // Input sent before the machine is loaded (a restore is asynchronous) would be lost.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        void emulator.destroy().catch(() => {});
        reject(new HostmeError('emulator-failed', `v86 did not finish loading within ${LOAD_TIMEOUT_MS / 1000} s (${v86File('v86.wasm')}); reinstall the npm package v86`));
      }, LOAD_TIMEOUT_MS);
      emulator.add_listener('emulator-ready', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    return machine;
  }

  private output(byte: number): void {
    this.transcript += String.fromCharCode(byte);
    if (this.transcript.length > TRANSCRIPT_LIMIT) this.transcript = this.transcript.slice(-TRANSCRIPT_LIMIT / 2);
    this.lastOutput = performance.now();
    this.wake();
  }

  private fail(error: unknown): void {
    this.diskFailure ??= error;
    this.wake();
  }

  private wake(): void {
    for (const waiter of [...this.waiters]) waiter();
  }

  /** Resolve when the serial transcript (from `since` on) matches; reject on timeout or a disk read failure. */
  waitFor(pattern: RegExp, timeoutMs: number, since = 0): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.diskFailure !== undefined) return done(() => reject(this.diskFailure));
        const match = this.transcript.slice(since).match(pattern);
        if (match) done(() => resolve(match));
      };
      const timer = setTimeout(() => {
        done(() =>
          reject(
            new HostmeError('ready-timeout', `the guest did not print a match for ${pattern} within ${Math.round(timeoutMs / 1000)} s; last output: ${JSON.stringify(this.transcript.slice(-200))}`, {
              pattern: String(pattern),
            }),
          ),
        );
      }, timeoutMs);
      const done = (settle: () => void): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
        settle();
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Resolve once the console has been silent for `quietMs` (the guest finished printing its prompt). */
  async settle(quietMs: number, maxMs: number): Promise<void> {
    const until = performance.now() + maxMs;
    while (performance.now() < until) {
      const quietFor = performance.now() - this.lastOutput;
      if (quietFor >= quietMs) return;
      await new Promise((r) => setTimeout(r, quietMs - quietFor));
    }
  }

  send(text: string): void {
    this.emulator.serial0_send(text);
  }

  /** Pause the CPU and save the whole machine (memory, devices, the disk's written blocks). */
  async save(): Promise<Uint8Array> {
    await this.emulator.stop();
    return new Uint8Array(await this.emulator.save_state());
  }

  async destroy(): Promise<void> {
    await this.emulator.destroy();
  }
}

async function readAsset(file: string): Promise<Uint8Array> {
  return readFile(file).catch((err: NodeJS.ErrnoException) => {
    throw new HostmeError('emulator-missing', `${file}: cannot read it (${err.code}); install Debian's seabios package or set HOSTME_SEABIOS_DIR`, { file });
  });
}

/** v86 wants ArrayBuffers of exactly the content (a Buffer may share a larger pool). */
function arrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}
