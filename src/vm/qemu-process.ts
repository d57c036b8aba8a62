/**
 * The QEMU process of one VM: its own runtime folder, confinement (as root,
 * an unprivileged user that gets its files handed over, confine.ts), death
 * with hostme (setpriv --pdeathsig, and a kill on exit), the saved machine
 * state as an inherited descriptor, and its exit. What the console prints
 * and what the VM means are the callers' (console-buffer.ts, qemu.ts).
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Readable, Writable } from 'node:stream';
import { HostmeError } from '../errors.js';
import { findOnPath, toolBinary } from '../process/tool.js';
import { handOver, qemuUser } from './confine.js';
import { tailLines } from './console-buffer.js';
import type { VmSpec } from './qemu.js';

const STDERR_KEEP = 8192;

export interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Milliseconds from spawning QEMU to its exit. */
  ms: number;
}

export interface QemuProcess {
  readonly pid: number;
  /** The command line (binary first, without the setpriv prefix). */
  readonly argv: readonly string[];
  /** QEMU's own folder (its user's when confined); removed by `cleanUp`. */
  readonly dir: string;
  /** With spec.incomingFile: the descriptor number QEMU holds it as. */
  readonly incomingFd?: number;
  /** performance.now() at spawn. */
  readonly startedAt: number;
  /** Set once QEMU has exited (all its output has been delivered by then). */
  readonly exit: QemuExit | undefined;
  /** Resolves once QEMU has exited; never rejects. */
  readonly exited: Promise<QemuExit>;
  /** The last 8 KiB of QEMU's stderr. */
  readonly stderr: string;
  /** Writes to QEMU's stdin (the serial console); dropped once QEMU is gone. */
  write(data: string | Uint8Array): void;
  /** The stdin stream itself (for the terminal bridge). */
  readonly stdin: Writable;
  kill(): void;
  /** Why QEMU ended before it was up: a HostmeError naming the binary, its exit and stderr. */
  startFailure(timedOut: boolean): HostmeError;
  /** Removes the runtime folder (after exit). */
  cleanUp(): Promise<void>;
}

export interface QemuProcessRequest {
  binary: string;
  spec: VmSpec;
  /** QEMU's arguments for the (handed-over) spec and its runtime folder. */
  args(spec: VmSpec, dir: string): string[];
  /** Console bytes, in order, all delivered before `exited` resolves. */
  onStdout(chunk: Buffer): void;
}

let setprivLookup: Promise<string | undefined> | undefined;

function setprivBinary(): Promise<string | undefined> {
  setprivLookup ??= findOnPath(toolBinary('setpriv'));
  return setprivLookup;
}

export async function spawnQemu(request: QemuProcessRequest): Promise<QemuProcess> {
  const { binary, spec } = request;
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'hostme-vm-'));
  const removeDir = () => fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  const user = await qemuUser();
  const handed = user ? await handOver(spec, dir, user).catch(async (err) => { await removeDir(); throw err; }) : undefined;
  // The device state to restore, as a descriptor: `exec:cat` would be a spawn, which the sandbox forbids.
  const incomingHandle = spec.incomingFile ? await fs.open(spec.incomingFile, 'r').catch(async (err: NodeJS.ErrnoException) => {
    handed?.close();
    await removeDir();
    throw new HostmeError('qemu-failed', `cannot open the saved machine state ${spec.incomingFile} (${err.code})`, { file: spec.incomingFile });
  }) : undefined;
  const extraFds = [...(handed?.fds ?? []), ...(incomingHandle ? [incomingHandle.fd] : [])];
  const incomingFd = incomingHandle ? 2 + extraFds.length : undefined;
  let args: string[];
  try {
    args = request.args(handed?.spec ?? spec, dir);
  } catch (err) {
    handed?.close();
    await incomingHandle?.close();
    await removeDir();
    throw err;
  }

  const startedAt = performance.now();
  // QEMU dies with us even on kill -9 (no 'exit' handler runs then): the kernel
  // sends it SIGKILL when this process goes (util-linux setpriv, where present).
  const setpriv = await setprivBinary();
  const command = setpriv ? [setpriv, '--pdeathsig', 'KILL', '--', binary, ...args] : [binary, ...args];
  const child = spawn(command[0]!, command.slice(1), {
    stdio: ['pipe', 'pipe', 'pipe', ...extraFds],
    ...(user ? { uid: user.uid, gid: user.gid } : {}),
  }) as unknown as ChildProcessByStdio<Writable, Readable, Readable>;
  handed?.close();
  await incomingHandle?.close();

  let stderrText = '';
  child.stdout.on('data', request.onStdout);
  child.stderr.on('data', (chunk: Buffer) => {
    stderrText = (stderrText + chunk.toString('utf8')).slice(-STDERR_KEEP);
  });
  child.stdin.on('error', () => {
    /* QEMU gone: writes are dropped */
  });
  // Never leave an orphaned QEMU behind if this process exits first.
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);

  let exit: QemuExit | undefined;
  let spawnError: Error | undefined;
  const exited = new Promise<QemuExit>((resolve) => {
    const settle = (code: number | null, signal: NodeJS.Signals | null) => {
      if (exit) return;
      exit = { code, signal, ms: performance.now() - startedAt };
      process.off('exit', killOnExit);
      resolve(exit);
    };
    child.on('error', (err) => {
      spawnError = err;
      // 'close' still follows for spawn errors in current Node; be safe anyway.
      setTimeout(() => settle(null, null), 100);
    });
    child.on('close', settle);
  });

  return {
    pid: child.pid ?? -1,
    argv: [binary, ...args],
    dir,
    incomingFd,
    startedAt,
    get exit() {
      return exit;
    },
    exited,
    get stderr() {
      return stderrText;
    },
    stdin: child.stdin,
    write(data) {
      if (!exit) child.stdin.write(data);
    },
    kill: () => void child.kill('SIGKILL'),
    startFailure(timedOut) {
      if (spawnError) return new HostmeError('qemu-failed', `Cannot run ${binary}: ${spawnError.message}`, { binary }, { cause: spawnError });
      return new HostmeError(
        timedOut ? 'vm-timeout' : 'qemu-failed',
        `QEMU exited at start (${exit?.signal ?? `code ${exit?.code}`}): ${tailLines(stderrText, 4) || 'no error output'}`,
        { binary, args, code: exit?.code, signal: exit?.signal, stderrTail: tailLines(stderrText) },
      );
    },
    cleanUp: removeDir,
  };
}
