/**
 * Launches QEMU for a hostme guest: direct kernel boot (PVH for an ELF
 * vmlinux) or firmware boot, NVMe disks backed by local files or NBD unix
 * sockets, the serial console on QEMU's stdio (which we both show and scan),
 * and a QMP socket for control.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { HostmeError, isHostmeError } from '../errors.js';
import { chooseAccel, resetAccelCache, type Accel, type AccelChoice } from './accel.js';
import { machineIdentity, rememberVerdict } from './accel-verdict.js';
import { QmpClient } from './qmp.js';
import { SANDBOX_ARGS } from './confine.js';
import { ConsoleBuffer, consoleShowsLife, tailLines } from './console-buffer.js';
import { spawnQemu, type QemuProcess } from './qemu-process.js';
import { stdioBridge } from './stdio-bridge.js';
import { defaultQemuBinary, resolveQemuBinary, type VmArch } from './qemu-binary.js';

export { defaultQemuBinary, resolveQemuBinary, type VmArch };
export { consoleShowsLife };


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
  /** The last lines QEMU wrote to its stderr (its own account of a failure), '' when it wrote none. */
  stderrTail(lines?: number): string;
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

/** QEMU up to its QMP socket, or the reason it did not get there (then it is gone). */
async function connectQmp(qemu: QemuProcess, socket: string, exited: Promise<unknown>, timedOut: () => boolean): Promise<QmpClient> {
  try {
    const deadline = performance.now() + 15000;
    for (;;) {
      if (qemu.exit) throw qemu.startFailure(timedOut());
      try {
        await fs.access(socket);
        return await QmpClient.connect(socket, { timeoutMs: 5000 });
      } catch (err) {
        if (qemu.exit) throw qemu.startFailure(timedOut());
        if (performance.now() > deadline) throw err;
        await sleep(15);
      }
    }
  } catch (err) {
    qemu.kill();
    await exited;
    throw err;
  }
}

function openConsoleLog(console: VmConsole): WriteStream | undefined {
  if (typeof console !== 'object') return undefined;
  const log = createWriteStream(console.logFile, { flags: 'a' });
  log.on('error', () => {
    /* a broken log must not take the VM down */
  });
  return log;
}

/**
 * One QEMU run: the process (qemu-process.ts) with its console scanned
 * (console-buffer.ts), shown or logged (stdio-bridge.ts), the deadline, QMP,
 * the ready mark and shutdown.
 */
async function startQemu(spec: VmSpec, binary: string, accel: Accel, accelReason: string): Promise<VmHandle> {
  const consoleBuffer = new ConsoleBuffer();
  const logStream = openConsoleLog(spec.console);
  const terminal = spec.console === 'stdio' ? stdioBridge() : undefined;
  let qmpSocket = '';
  let qemu: QemuProcess;
  try {
    qemu = await spawnQemu({
      binary,
      spec,
      args: (handed, dir) => buildQemuArgs(handed, accel, (qmpSocket = path.join(dir, 'qmp.sock'))),
      onStdout: (chunk) => {
        terminal?.show(chunk);
        logStream?.write(chunk);
        consoleBuffer.write(chunk);
      },
    });
  } catch (err) {
    logStream?.end();
    throw err;
  }
  const t0 = qemu.startedAt;

  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  let qmp: QmpClient | undefined;
  const exitedRaw = qemu.exited.then((e): VmExit => ({ ...e, timedOut }));
  void exitedRaw.then(() => consoleBuffer.end());
  const exited = exitedRaw.then(async (e) => {
    terminal?.detach();
    if (timer) clearTimeout(timer);
    if (qmp) await qmp.close().catch(() => undefined);
    await new Promise<void>((r) => (logStream ? logStream.end(() => r()) : r()));
    await qemu.cleanUp();
    return e;
  });

  let rejectReady: ((err: Error) => void) | undefined;
  if (spec.timeoutMs !== undefined) {
    const timeoutMs = spec.timeoutMs;
    timer = setTimeout(() => {
      if (qemu.exit) return;
      timedOut = true;
      qemu.kill();
      rejectReady?.(
        new HostmeError(
          'vm-timeout',
          spec.until
            ? `VM console did not match ${spec.until} within ${timeoutMs} ms; QEMU was killed`
            : `VM still running after ${timeoutMs} ms; QEMU was killed`,
          { timeoutMs, until: spec.until?.source, consoleTail: consoleBuffer.tail() },
        ),
      );
    }, timeoutMs);
  }

  const qmpClient = (qmp = await connectQmp(qemu, qmpSocket, exited, () => timedOut));

  let shutdownPromise: Promise<VmExit> | undefined;
  const shutdown = (options: { graceful?: boolean; timeoutMs?: number } = {}): Promise<VmExit> => {
    if (qemu.exit) return exited;
    shutdownPromise ??= (async () => {
      const gone = (ms: number) => Promise.race([exited.then(() => true), sleep(ms).then(() => false)]);
      if (options.graceful) {
        await qmpClient.execute('system_powerdown', undefined, { timeoutMs: 1000 }).catch(() => undefined);
        if (await gone(options.timeoutMs ?? 5000)) return exited;
      }
      await qmpClient.execute('quit', undefined, { timeoutMs: 1000 }).catch(() => undefined);
      if (await gone(2000)) return exited;
      qemu.kill();
      return exited;
    })();
    return shutdownPromise;
  };

  terminal?.attachInput(qemu.stdin, () => void shutdown());

  const ready = new Promise<VmReady>((resolve, reject) => {
    rejectReady = reject;
    const until = spec.until;
    if (!until) return resolve({ ms: performance.now() - t0, match: '' });
    consoleBuffer.waitFor(until, { since: 0, overlap: 256 }).then(
      (m) => {
        if (timer) clearTimeout(timer);
        resolve({ ms: performance.now() - t0, match: m[0] });
        if (!spec.keepRunning) void shutdown();
      },
      async () => {
        const e = await exitedRaw;
        if (e.timedOut) return; // already rejected by the timer
        const stderr = qemu.stderr;
        reject(
          new HostmeError(
            'vm-exited',
            `QEMU exited (${e.signal ?? `code ${e.code}`}) before the console matched ${until}` + (stderr.trim() ? `: ${tailLines(stderr, 4)}` : ''),
            { code: e.code, signal: e.signal, stderrTail: tailLines(stderr), consoleTail: consoleBuffer.tail() },
          ),
        );
      },
    );
  });
  ready.catch(() => undefined); // callers that only await `exited` must not crash on it

  let screens = 0;
  return {
    pid: qemu.pid,
    accel,
    accelReason,
    argv: qemu.argv,
    dir: qemu.dir,
    incomingFd: qemu.incomingFd,
    ready,
    exited,
    qmp: qmpClient,
    get console() {
      return consoleBuffer.text;
    },
    get consoleLength() {
      return consoleBuffer.length;
    },
    sendConsole: (text) => qemu.write(text),
    stderrTail: (lines = 4) => tailLines(qemu.stderr, lines),
    async screendump() {
      const file = path.join(qemu.dir, `screen-${++screens}.png`);
      try {
        await qmpClient.execute('screendump', { filename: file, format: 'png' }, { timeoutMs: 10_000 });
        return await fs.readFile(file);
      } finally {
        await fs.rm(file, { force: true });
      }
    },
    waitForConsole: (pattern, options = {}) => consoleBuffer.waitFor(pattern, options),
    onConsole: (listener) => consoleBuffer.subscribe(listener),
    shutdown,
  };
}
