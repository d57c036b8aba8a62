/**
 * Launches QEMU for a hostme guest: direct kernel boot (PVH for an ELF
 * vmlinux) or firmware boot, NVMe disks backed by local files or NBD unix
 * sockets, the serial console on QEMU's stdio (which we both show and scan),
 * and a QMP socket for control.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import { createWriteStream, type WriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { HostmeError, isHostmeError } from '../errors.js';
import { chooseAccel, resetAccelCache, type Accel, type AccelChoice } from './accel.js';
import { machineIdentity, rememberVerdict } from './accel-verdict.js';
import { QmpClient } from './qmp.js';
import { SANDBOX_ARGS, handOver, qemuUser } from './confine.js';
import { findOnPath, toolBinary } from '../process/tool.js';
import { defaultQemuBinary, resolveQemuBinary, type VmArch } from './qemu-binary.js';

export { defaultQemuBinary, resolveQemuBinary, type VmArch };


export interface VmDisk {
  /** NBD server listening on this unix socket (export name: nbdExport or the default). */
  nbdSocket?: string;
  nbdExport?: string;
  /** Local image file. Exactly one of nbdSocket / file. */
  file?: string;
  /** Image format on top of the file or NBD export (default raw). */
  format?: 'raw' | 'qcow2' | 'vmdk' | 'vdi' | 'vhdx' | 'vpc';
  readOnly?: boolean;
}

export interface HostForward {
  proto?: 'tcp' | 'udp';
  hostAddr?: string;
  hostPort: number;
  guestPort: number;
}

export interface VmNetdev {
  /** User-mode networking with these host→guest forwards. */
  hostfwd?: HostForward[];
  /** NIC model (default virtio-net-pci). */
  model?: string;
  /** Isolate the guest: no packets to the host or beyond; the forwards above still work. */
  restrict?: boolean;
}

/** A NIC on a hostme overlay network: QEMU listens on `socket` (stream framing) and the hostme switch dials it. */
export interface VmOverlayNic {
  socket: string;
  /** The NIC's MAC, "52:54:00:xx:xx:xx". */
  mac: string;
}

export type VmConsole = 'stdio' | 'none' | { logFile: string };

export interface VmSpec {
  /** Kernel for direct boot (an ELF vmlinux boots via PVH, a bzImage via the Linux boot protocol). */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  /** Boot through the firmware (SeaBIOS) from disk 0 instead of -kernel. */
  firmwareBoot?: boolean;
  disks: VmDisk[];
  memoryMiB: number;
  cpus: number;
  arch: VmArch;
  /**
   * Default: chooseAccel(). Under KVM (chosen or given) a watchdog restarts
   * the boot under TCG when the guest shows no sign of life (see launchVm).
   */
  accel?: Accel;
  /**
   * A counter of guest I/O that hostme serves (e.g. NBD reads): a change
   * means the guest is alive. Console output counts too.
   */
  activity?: () => number;
  /** Bound for the KVM watchdog (default $HOSTME_KVM_WATCHDOG_MS or 12000 ms); 0 turns it off. */
  kvmWatchdogMs?: number;
  /** One-line messages for the user (the KVM watchdog's fallback). */
  onNotice?: (message: string) => void;
  /**
   * How disks attach. Default by arch: x86_64 gets NVMe (root without an
   * initramfs on Debian's cloud kernel); i686 gets IDE, the PIIX controller
   * v86 emulates, so an image made for the browser boots here unchanged.
   * Read-only disks on IDE are CD-ROMs (QEMU refuses read-only IDE disks).
   */
  diskBus?: 'nvme' | 'ide' | 'virtio';
  /**
   * Machine type (default q35 with NVMe: boots faster than pc under TCG, see docs/guest.md; pc with IDE),
   * or a versioned one such as pc-q35-7.2 (a restored snapshot needs exactly its machine).
   */
  machine?: 'q35' | 'pc' | (string & {});
  /** CPU model (default: host under KVM, QEMU's default under TCG). */
  cpuModel?: string;
  /**
   * Guest RAM in a file (memory-backend-file): `shared` maps it MAP_SHARED so a
   * snapshot can save it in place; otherwise it is mapped privately
   * (copy-on-write), with `readOnly` the file is never written. `perInstance`:
   * the file is this run's alone (a lazy RAM file on FUSE, src/lazyfs): a
   * confined QEMU gets it as is, opened without blocking this process.
   */
  memoryFile?: { path: string; shared: boolean; readOnly?: boolean; perInstance?: boolean };
  /** Start paused waiting for an incoming migration (-incoming defer): restore with src/vm/snapshot.ts. */
  incoming?: boolean;
  /** The saved device state to restore: handed to QEMU as an open descriptor (VmHandle.incomingFd). */
  incomingFile?: string;
  /** Empty PCIe root ports hostme.rp0… (placed before the disks) for NICs hot-plugged after a resume. */
  hotplugPorts?: number;
  /** A vmgenid device with this generation id (a UUID): a resumed clone gets a new one. */
  vmgenid?: string;
  console: VmConsole;
  /**
   * Console pattern that means "ready". When it matches, `ready` resolves and
   * the VM is shut down, unless keepRunning is set. Without `until`, `ready`
   * resolves as soon as QEMU is up (QMP connected).
   */
  until?: RegExp;
  keepRunning?: boolean;
  /**
   * Deadline from launch: for reaching `until` if given (then cleared), else
   * for the whole run. On expiry QEMU is killed and `ready` (if still
   * pending) rejects with HostmeError 'vm-timeout'.
   */
  timeoutMs?: number;
  /** Passed as is: host paths here are opened by QEMU's own (unprivileged, see confine.ts) user, so prefer `disks`. */
  extraArgs?: string[];
  netdev?: VmNetdev;
  /** A second, separate NIC on a hostme overlay network (src/net). */
  overlay?: VmOverlayNic;
  /** QEMU binary (default: $HOSTME_QEMU, else qemu-system-x86_64 / qemu-system-i386 by arch). */
  qemuBinary?: string;
}

export interface VmReady {
  /** Milliseconds from spawning QEMU to the match (or to QMP being up without `until`). */
  ms: number;
  /** The matched text ('' without `until`). */
  match: string;
}

export interface VmExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Milliseconds from spawning QEMU to its exit. */
  ms: number;
  timedOut: boolean;
}

export interface VmHandle {
  readonly pid: number;
  readonly accel: Accel;
  /** Why this accelerator (hostme run --verbose). */
  readonly accelReason: string;
  /** The QEMU command line (binary first). */
  readonly argv: readonly string[];
  readonly ready: Promise<VmReady>;
  /** Always resolves (never rejects) once QEMU has exited and been cleaned up. */
  readonly exited: Promise<VmExit>;
  readonly qmp: QmpClient;
  /** QEMU's own folder (its user's when confined): sockets QEMU creates at run time go here. */
  readonly dir: string;
  /** With spec.incomingFile: the descriptor number QEMU holds it as (migrate-incoming fd:N). */
  readonly incomingFd?: number;
  /** Console output so far (the last 1 MiB). */
  readonly console: string;
  /** Total console characters seen so far (positions for waitForConsole's `since`). */
  readonly consoleLength: number;
  /** Types into the serial console. */
  sendConsole(text: string | Uint8Array): void;
  /** Resolves when console output after `since` (default: now) matches. */
  waitForConsole(pattern: RegExp, options?: { timeoutMs?: number; since?: number }): Promise<RegExpMatchArray>;
  /** Subscribes to console output; returns the unsubscribe function. */
  onConsole(listener: (text: string) => void): () => void;
  /**
   * Stops the VM and resolves when QEMU is gone. Default: QMP quit (instant).
   * graceful: ACPI power button first, waiting up to timeoutMs (default 5 s).
   * Falls back to SIGKILL; never hangs.
   */
  shutdown(options?: { graceful?: boolean; timeoutMs?: number }): Promise<VmExit>;
  /**
   * The display as PNG (QMP screendump into the VM's own runtime folder,
   * which a confined QEMU can write). Needs a display device (e.g.
   * extraArgs -device VGA); otherwise QMP's error.
   */
  screendump(): Promise<Buffer>;
}

const CONSOLE_KEEP = 1 << 20;
const STDERR_KEEP = 8192;
/** Ctrl-] on an interactive stdio console stops the VM (like telnet). */
const ESCAPE_BYTE = 0x1d;

function validateSpec(spec: VmSpec): void {
  const bad = (message: string) => new HostmeError('bad-vm-spec', message, {});
  // A restored machine needs no kernel: it is in the saved RAM.
  if (!spec.firmwareBoot && !spec.kernel && !spec.incoming) throw bad('VM spec needs a kernel (or firmwareBoot: true)');
  if (spec.firmwareBoot && spec.kernel) throw bad('VM spec cannot have both a kernel and firmwareBoot');
  if (spec.firmwareBoot && spec.disks.length === 0) throw bad('firmwareBoot needs at least one disk');
  if (!Number.isInteger(spec.memoryMiB) || spec.memoryMiB < 16) throw bad(`memoryMiB must be an integer >= 16, got ${spec.memoryMiB}`);
  if (!Number.isInteger(spec.cpus) || spec.cpus < 1) throw bad(`cpus must be a positive integer, got ${spec.cpus}`);
  spec.disks.forEach((d, i) => {
    if ((d.file === undefined) === (d.nbdSocket === undefined)) throw bad(`disk ${i} needs exactly one of file / nbdSocket`);
  });
  const ide = (spec.diskBus ?? (spec.arch === 'i686' ? 'ide' : 'nvme')) === 'ide';
  // QEMU's option syntax splits on commas: a socket path must not contain one.
  if (spec.overlay && (spec.overlay.socket.includes(',') || !/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(spec.overlay.mac))) throw bad('overlay NIC needs a socket path without "," and a lowercase MAC');
  if (ide && spec.disks.length > 4) throw bad(`an IDE machine has 4 disk slots; ${spec.disks.length} disks were given`);
}

/** The QEMU arguments for a spec (no binary). Exported for tests and --dry-run style output. */
export function buildQemuArgs(spec: VmSpec, accel: Accel, qmpSocket: string): string[] {
  const bus = spec.diskBus ?? (spec.arch === 'i686' ? 'ide' : 'nvme');
  const machine = spec.machine ?? (bus === 'ide' ? 'pc' : 'q35');
  const cpu = spec.cpuModel ?? (accel === 'kvm' ? 'host' : undefined);
  const args = [
    '-machine', spec.memoryFile ? `${machine},memory-backend=hostme.ram` : machine,
    '-accel', accel,
    ...(cpu ? ['-cpu', cpu] : []),
    '-m', String(spec.memoryMiB),
    '-smp', String(spec.cpus),
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    ...SANDBOX_ARGS,
    '-chardev', 'stdio,id=ser0,signal=off',
    '-serial', 'chardev:ser0',
    '-qmp', `unix:${qmpSocket},server=on,wait=off`,
  ];
  if (spec.memoryFile) {
    const { path: file, shared, readOnly } = spec.memoryFile;
    if (file.includes(',')) throw new HostmeError('bad-vm-spec', `memory file path must not contain a comma: ${file}`, {});
    args.push('-object', `memory-backend-file,id=hostme.ram,size=${spec.memoryMiB}M,mem-path=${file},share=${shared ? 'on' : 'off'}${readOnly ? ',readonly=on' : ''}`);
  }
  if (spec.incoming) args.push('-incoming', 'defer');
  // Before the disks: a saved machine and its resumed clones must get the same PCI addresses.
  for (let i = 0; i < (spec.hotplugPorts ?? 0); i++) args.push('-device', `pcie-root-port,id=hostme.rp${i},chassis=${i + 1}`);
  if (spec.vmgenid !== undefined) {
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(spec.vmgenid)) throw new HostmeError('bad-vm-spec', `vmgenid must be a UUID: ${spec.vmgenid}`, {});
    args.push('-device', `vmgenid,id=hostme.genid,guid=${spec.vmgenid}`);
  }
  if (spec.kernel) {
    args.push('-kernel', spec.kernel);
    if (spec.initrd) args.push('-initrd', spec.initrd);
    if (spec.cmdline) args.push('-append', spec.cmdline);
  }
  spec.disks.forEach((disk, i) => {
    const readOnly = disk.readOnly ?? false;
    const protocol: Record<string, unknown> = disk.nbdSocket
      ? { driver: 'nbd', server: { type: 'unix', path: disk.nbdSocket }, ...(disk.nbdExport ? { export: disk.nbdExport } : {}) }
      : { driver: 'file', filename: disk.file };
    protocol['read-only'] = readOnly;
    const node = { driver: disk.format ?? 'raw', 'node-name': `d${i}`, 'read-only': readOnly, file: protocol };
    args.push('-blockdev', JSON.stringify(node));
    const bootIndex = spec.firmwareBoot ? `,bootindex=${i}` : '';
    if (bus === 'ide') args.push('-device', `${readOnly ? 'ide-cd' : 'ide-hd'},drive=d${i},bus=ide.${i >> 1},unit=${i & 1}${bootIndex}`);
    else if (bus === 'virtio') args.push('-device', `virtio-blk-pci,drive=d${i},id=vd${i}${bootIndex}`);
    else args.push('-device', `nvme,drive=d${i},serial=d${i}${bootIndex}`);
  });
  if (spec.netdev) {
    const fwds = (spec.netdev.hostfwd ?? []).map(
      (f) => `,hostfwd=${f.proto ?? 'tcp'}:${f.hostAddr ?? '127.0.0.1'}:${f.hostPort}-:${f.guestPort}`,
    );
    args.push('-netdev', `user,id=n0${spec.netdev.restrict ? ',restrict=on' : ''}${fwds.join('')}`);
    args.push('-device', `${spec.netdev.model ?? 'virtio-net-pci'},netdev=n0`);
  }
  if (spec.overlay) {
    args.push('-netdev', `stream,id=ov0,server=on,addr.type=unix,addr.path=${spec.overlay.socket}`);
    args.push('-device', `virtio-net-pci,netdev=ov0,mac=${spec.overlay.mac}`);
  }
  args.push(...(spec.extraArgs ?? []));
  return args;
}

function tail(text: string, lines = 12): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/**
 * Starts QEMU for a spec. Under KVM it watches the guest: a guest that shows
 * no sign of life (no console output past the boot stub's, no disk read
 * through `activity`) within the watchdog bound, or a QEMU that dies at start
 * under KVM, is stopped and the same boot starts under TCG, with one notice.
 * The outcome is remembered for this machine (accel-verdict.ts), so the next
 * run pays neither a probe nor the watchdog.
 */
export async function launchVm(spec: VmSpec): Promise<VmHandle> {
  validateSpec(spec);
  const binary = await resolveQemuBinary(spec.qemuBinary ?? process.env.HOSTME_QEMU ?? defaultQemuBinary(spec.arch));
  const choice: AccelChoice = spec.accel
    ? { accel: spec.accel, reason: 'requested by the caller', source: 'caller', provisional: false }
    : await chooseAccel({ qemuBinary: binary });
  const boundMs = spec.kvmWatchdogMs ?? watchdogDefaultMs();
  // A VM waiting for an incoming migration runs nothing until it is restored, so it
  // cannot show life yet; its snapshot pins the accelerator it was made under.
  if (choice.accel === 'tcg' || boundMs === 0 || spec.incoming) return startQemu(spec, binary, choice.accel, choice.reason);

  const t0 = performance.now();
  const fallBack = async (why: string): Promise<VmHandle> => {
    const machine = choice.machine ?? (await machineIdentity(binary));
    await rememberVerdict({ accel: 'tcg', reason: why, evidence: 'guest', machine });
    resetAccelCache();
    spec.onNotice?.(`${why}: starting the same boot under TCG (remembered for this machine; 'hostme doctor' explains, HOSTME_ACCEL=kvm overrides)`);
    const timeoutMs = spec.timeoutMs === undefined ? undefined : Math.max(1000, spec.timeoutMs - (performance.now() - t0));
    return startQemu({ ...spec, timeoutMs }, binary, 'tcg', `KVM fallback: ${why}`);
  };
  let vm: VmHandle;
  try {
    vm = await startQemu(spec, binary, 'kvm', choice.reason);
  } catch (err) {
    if (!isHostmeError(err, 'qemu-failed')) throw err;
    return fallBack(`QEMU could not start under KVM (${err.message.split('\n')[0]})`);
  }
  const life = await watchForLife(vm, spec.activity, boundMs);
  if (life === 'silent') {
    await vm.shutdown();
    return fallBack(`the guest showed no sign of life under KVM within ${(boundMs / 1000).toFixed(0)} s (no console output, no disk read)`);
  }
  if (life === 'alive' && choice.source !== 'remembered') {
    await rememberVerdict({ accel: 'kvm', reason: 'a real guest showed life under KVM', evidence: 'guest', machine: choice.machine ?? (await machineIdentity(binary)) });
    resetAccelCache();
  }
  return vm;
}

function watchdogDefaultMs(): number {
  const fromEnv = Number(process.env.HOSTME_KVM_WATCHDOG_MS);
  return Number.isFinite(fromEnv) && fromEnv >= 0 && process.env.HOSTME_KVM_WATCHDOG_MS !== '' ? fromEnv : 12000;
}

/**
 * Lines a boot stub prints before the kernel proper runs: seen under a KVM
 * that then hangs in the kernel's early setup, so they prove nothing.
 */
const BOOT_STUB_PHRASES = ['Probing EDD', 'Decompressing Linux', 'Parsing ELF', 'Booting the kernel', 'early console'];

export function consoleShowsLife(consoleText: string): boolean {
  return consoleText.split(/\r?\n/).some((raw, i, lines) => {
    const line = raw.trim();
    if (line === '' || BOOT_STUB_PHRASES.some((phrase) => line.startsWith(phrase))) return false;
    // The last line may still be arriving: "Probing ED" is not yet a sign of anything.
    const incomplete = i === lines.length - 1;
    return !(incomplete && BOOT_STUB_PHRASES.some((phrase) => phrase.startsWith(line)));
  });
}

/** 'alive' at the first sign of life, 'silent' after boundMs without one, 'exited' if QEMU stopped first. */
function watchForLife(vm: VmHandle, activity: (() => number) | undefined, boundMs: number): Promise<'alive' | 'silent' | 'exited'> {
  const baseline = activity?.() ?? 0;
  return new Promise((resolve) => {
    let settled = false;
    const finish = (result: 'alive' | 'silent' | 'exited') => {
      if (settled) return;
      settled = true;
      clearInterval(poll);
      clearTimeout(timer);
      unsubscribe();
      resolve(result);
    };
    const check = () => {
      if (consoleShowsLife(vm.console) || (activity !== undefined && activity() !== baseline)) finish('alive');
    };
    const unsubscribe = vm.onConsole(check);
    const poll = setInterval(check, 50);
    const timer = setTimeout(() => finish('silent'), boundMs);
    void vm.exited.then(() => finish('exited'));
    check();
  });
}

let setprivLookup: Promise<string | undefined> | undefined;

function setprivBinary(): Promise<string | undefined> {
  setprivLookup ??= findOnPath(toolBinary('setpriv'));
  return setprivLookup;
}

async function startQemu(spec: VmSpec, binary: string, accel: Accel, accelReason: string): Promise<VmHandle> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'hostme-vm-'));
  const qmpSocket = path.join(dir, 'qmp.sock');
  // As root, QEMU runs as an unprivileged user and gets its files handed over (confine.ts).
  const user = await qemuUser();
  const handed = user ? await handOver(spec, dir, user).catch(async (err) => { await fs.rm(dir, { recursive: true, force: true }); throw err; }) : undefined;
  // The device state to restore, as a descriptor: `exec:cat` would be a spawn, which the sandbox forbids.
  const incomingHandle = spec.incomingFile ? await fs.open(spec.incomingFile, 'r').catch(async (err: NodeJS.ErrnoException) => {
    handed?.close();
    await fs.rm(dir, { recursive: true, force: true });
    throw new HostmeError('qemu-failed', `cannot open the saved machine state ${spec.incomingFile} (${err.code})`, { file: spec.incomingFile });
  }) : undefined;
  const extraFds = [...(handed?.fds ?? []), ...(incomingHandle ? [incomingHandle.fd] : [])];
  const incomingFd = incomingHandle ? 2 + extraFds.length : undefined;
  const args = buildQemuArgs(handed?.spec ?? spec, accel, qmpSocket);

  let logStream: WriteStream | undefined;
  if (typeof spec.console === 'object') {
    logStream = createWriteStream(spec.console.logFile, { flags: 'a' });
    logStream.on('error', () => {
      /* a broken log must not take the VM down */
    });
  }

  const t0 = performance.now();
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

  // ---- console and stderr
  let consoleText = '';
  let consoleBase = 0; // characters dropped from the front of consoleText
  let stderrText = '';
  const listeners = new Set<(text: string) => void>();
  const decoder = new TextDecoder('utf-8');
  child.stdout.on('data', (chunk: Buffer) => {
    if (spec.console === 'stdio') process.stdout.write(chunk);
    logStream?.write(chunk);
    const text = decoder.decode(chunk, { stream: true });
    if (!text) return;
    consoleText += text;
    if (consoleText.length > CONSOLE_KEEP * 2) {
      const drop = consoleText.length - CONSOLE_KEEP;
      consoleText = consoleText.slice(drop);
      consoleBase += drop;
    }
    for (const l of [...listeners]) l(text);
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderrText = (stderrText + chunk.toString('utf8')).slice(-STDERR_KEEP);
  });
  child.stdin.on('error', () => {
    /* QEMU gone: writes are dropped */
  });
  // Never leave an orphaned QEMU behind if this process exits first.
  const killOnExit = () => child.kill('SIGKILL');
  process.on('exit', killOnExit);

  // ---- exit
  let exitInfo: VmExit | undefined;
  let timedOut = false;
  let spawnError: Error | undefined;
  const exitListeners: Array<(e: VmExit) => void> = [];
  const exitedRaw = new Promise<VmExit>((resolve) => {
    child.on('error', (err) => {
      spawnError = err;
      // 'close' still follows for spawn errors in current Node; be safe anyway.
      setTimeout(() => {
        if (!exitInfo) {
          exitInfo = { code: null, signal: null, ms: performance.now() - t0, timedOut };
          resolve(exitInfo);
        }
      }, 100);
    });
    child.on('close', (code, signal) => {
      if (exitInfo) return;
      exitInfo = { code, signal, ms: performance.now() - t0, timedOut };
      resolve(exitInfo);
    });
  });
  exitedRaw.then((e) => exitListeners.forEach((l) => l(e)));

  let stdinCleanup: (() => void) | undefined;
  let qmp: QmpClient | undefined;
  const exited = exitedRaw.then(async (e) => {
    process.off('exit', killOnExit);
    stdinCleanup?.();
    if (timer) clearTimeout(timer);
    if (qmp) await qmp.close().catch(() => undefined);
    await new Promise<void>((r) => (logStream ? logStream.end(() => r()) : r()));
    await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
    return e;
  });

  // ---- timeout
  let timer: NodeJS.Timeout | undefined;
  let rejectReady: ((err: Error) => void) | undefined;
  if (spec.timeoutMs !== undefined) {
    const timeoutMs = spec.timeoutMs;
    timer = setTimeout(() => {
      if (exitInfo) return;
      timedOut = true;
      child.kill('SIGKILL');
      rejectReady?.(
        new HostmeError(
          'vm-timeout',
          spec.until
            ? `VM console did not match ${spec.until} within ${timeoutMs} ms; QEMU was killed`
            : `VM still running after ${timeoutMs} ms; QEMU was killed`,
          { timeoutMs, until: spec.until?.source, consoleTail: tail(consoleText) },
        ),
      );
    }, timeoutMs);
  }

  // ---- QMP: wait for the socket, or for QEMU to die trying
  const earlyExitError = (e: VmExit) =>
    spawnError
      ? new HostmeError('qemu-failed', `Cannot run ${binary}: ${spawnError.message}`, { binary }, { cause: spawnError })
      : new HostmeError(
          e.timedOut ? 'vm-timeout' : 'qemu-failed',
          `QEMU exited at start (${e.signal ?? `code ${e.code}`}): ${tail(stderrText, 4) || 'no error output'}`,
          { binary, args, code: e.code, signal: e.signal, stderrTail: tail(stderrText) },
        );
  try {
    const deadline = performance.now() + 15000;
    while (!qmp) {
      if (exitInfo) throw earlyExitError(exitInfo);
      try {
        await fs.access(qmpSocket);
        qmp = await QmpClient.connect(qmpSocket, { timeoutMs: 5000 });
      } catch (err) {
        if (exitInfo) throw earlyExitError(exitInfo);
        if (performance.now() > deadline) throw err;
        await sleep(15);
      }
    }
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    throw err;
  }
  const qmpClient = qmp;

  // ---- shutdown
  let shutdownPromise: Promise<VmExit> | undefined;
  const shutdown = (options: { graceful?: boolean; timeoutMs?: number } = {}): Promise<VmExit> => {
    if (exitInfo) return exited;
    shutdownPromise ??= (async () => {
      const gone = (ms: number) => Promise.race([exited.then(() => true), sleep(ms).then(() => false)]);
      if (options.graceful) {
        await qmpClient.execute('system_powerdown', undefined, { timeoutMs: 1000 }).catch(() => undefined);
        if (await gone(options.timeoutMs ?? 5000)) return exited;
      }
      await qmpClient.execute('quit', undefined, { timeoutMs: 1000 }).catch(() => undefined);
      if (await gone(2000)) return exited;
      child.kill('SIGKILL');
      return exited;
    })();
    return shutdownPromise;
  };

  // ---- interactive console
  if (spec.console === 'stdio' && process.stdin.readable) {
    const stdin = process.stdin;
    const wasRaw = stdin.isTTY ? stdin.isRaw : false;
    if (stdin.isTTY) stdin.setRawMode(true);
    const onData = (data: Buffer) => {
      if (stdin.isTTY && data.includes(ESCAPE_BYTE)) {
        void shutdown();
        return;
      }
      child.stdin.write(data);
    };
    stdin.on('data', onData);
    stdin.resume();
    stdinCleanup = () => {
      stdin.off('data', onData);
      if (stdin.isTTY) stdin.setRawMode(wasRaw);
      stdin.pause();
    };
  }

  // ---- readiness
  const ready = new Promise<VmReady>((resolve, reject) => {
    rejectReady = reject;
    if (!spec.until) {
      resolve({ ms: performance.now() - t0, match: '' });
      return;
    }
    const until = spec.until;
    let scanFrom = 0;
    let done = false;
    const check = () => {
      if (done) return;
      const start = Math.max(0, scanFrom - consoleBase - 256);
      const m = until.exec(consoleText.slice(start));
      scanFrom = consoleBase + consoleText.length;
      if (!m) return;
      done = true;
      listeners.delete(check);
      if (timer) clearTimeout(timer);
      resolve({ ms: performance.now() - t0, match: m[0] });
      if (!spec.keepRunning) void shutdown();
    };
    listeners.add(check);
    check();
    exitListeners.push((e) => {
      if (done) return;
      done = true;
      listeners.delete(check);
      if (e.timedOut) return; // already rejected by the timer
      reject(
        new HostmeError(
          'vm-exited',
          `QEMU exited (${e.signal ?? `code ${e.code}`}) before the console matched ${until}` +
            (stderrText.trim() ? `: ${tail(stderrText, 4)}` : ''),
          { code: e.code, signal: e.signal, stderrTail: tail(stderrText), consoleTail: tail(consoleText) },
        ),
      );
    });
  });
  ready.catch(() => undefined); // callers that only await `exited` must not crash on it

  let screens = 0;
  const handle: VmHandle = {
    pid: child.pid ?? -1,
    accel,
    accelReason,
    argv: [binary, ...args],
    dir,
    incomingFd,
    ready,
    exited,
    qmp: qmpClient,
    get console() {
      return consoleText;
    },
    get consoleLength() {
      return consoleBase + consoleText.length;
    },
    sendConsole(text: string | Uint8Array) {
      if (!exitInfo) child.stdin.write(text);
    },
    async screendump() {
      const file = path.join(dir, `screen-${++screens}.png`);
      try {
        await qmpClient.execute('screendump', { filename: file, format: 'png' }, { timeoutMs: 10_000 });
        return await fs.readFile(file);
      } finally {
        await fs.rm(file, { force: true });
      }
    },
    waitForConsole(pattern: RegExp, options: { timeoutMs?: number; since?: number } = {}) {
      const since = options.since ?? consoleBase + consoleText.length;
      return new Promise<RegExpMatchArray>((resolve, reject) => {
        let t: NodeJS.Timeout | undefined;
        const finish = (fn: () => void) => {
          listeners.delete(check);
          if (t) clearTimeout(t);
          fn();
        };
        const check = () => {
          const m = pattern.exec(consoleText.slice(Math.max(0, since - consoleBase)));
          if (m) finish(() => resolve(m));
        };
        if (options.timeoutMs !== undefined) {
          const ms = options.timeoutMs;
          t = setTimeout(
            () =>
              finish(() =>
                reject(
                  new HostmeError('console-timeout', `Console did not show ${pattern} within ${ms} ms`, {
                    pattern: pattern.source,
                    consoleTail: tail(consoleText),
                  }),
                ),
              ),
            ms,
          );
        }
        if (exitInfo) {
          check();
          finish(() => reject(new HostmeError('vm-exited', `VM exited before the console showed ${pattern}`, { consoleTail: tail(consoleText) })));
          return;
        }
        listeners.add(check);
        exitListeners.push(() =>
          finish(() =>
            reject(new HostmeError('vm-exited', `VM exited before the console showed ${pattern}`, { consoleTail: tail(consoleText) })),
          ),
        );
        check();
      });
    },
    onConsole(listener: (text: string) => void) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    shutdown,
  };
  return handle;
}
