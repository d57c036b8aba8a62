/**
 * Saving and restoring a running QEMU machine (QEMU 7.2, docs/run.md
 * "Snapshots"). Guest RAM lives in a file (VmSpec.memoryFile): the saving VM
 * maps it shared, so after `stop` the file *is* the RAM, and the migration
 * stream only needs the device state (x-ignore-shared skips shared RAM). A
 * restoring VM maps the same bytes privately (copy-on-write) and reads the
 * device state with migrate-incoming.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { createWriteStream } from 'node:fs';
import { chmod } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { HostmeError, errorMessage } from '../errors.js';
import type { QmpClient } from './qmp.js';
import { qemuVersionLine } from './qemu-binary.js';
import type { VmHandle, VmNetdev, VmOverlayNic } from './qemu.js';

const IGNORE_SHARED = { capabilities: [{ capability: 'x-ignore-shared', state: true }] };

interface MigrateInfo {
  status?: string;
  'error-desc'?: string;
}

/**
 * Stops the VM and writes its device state (not its shared RAM) to
 * `stateFile`. QEMU 7.2's outgoing `fd:` wants a descriptor passed over QMP
 * (SCM_RIGHTS, which Node cannot send) and `exec:` is a spawn the sandbox
 * forbids, so QEMU connects to a unix socket in its own folder and hostme
 * writes what arrives.
 */
export async function saveMachine(vm: Pick<VmHandle, 'qmp' | 'dir'>, stateFile: string, timeoutMs = 60_000): Promise<void> {
  const socket = join(vm.dir, 'migrate.sock');
  const server = createServer();
  let settle: (err?: unknown) => void = () => {};
  const received = new Promise<void>((resolve, reject) => {
    settle = (err) => (err ? reject(err) : resolve());
  });
  received.catch(() => {});
  server.once('connection', (conn) => {
    server.close(); // one stream, from QEMU
    pipeline(conn, createWriteStream(stateFile)).then(() => settle(), settle);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socket, resolve);
  });
  try {
    // The folder is QEMU's user's alone; the socket inode must let that user connect.
    await chmod(socket, 0o666);
    await vm.qmp.execute('stop');
    await vm.qmp.execute('migrate-set-capabilities', IGNORE_SHARED);
    await vm.qmp.execute('migrate', { uri: `unix:${socket}` });
    await waitForMigration(vm.qmp, 'migrate', timeoutMs);
    await Promise.race([received, sleep(timeoutMs).then(() => Promise.reject(new HostmeError('snapshot-save-failed', `the saved state did not arrive within ${timeoutMs} ms`, {})))]);
  } catch (err) {
    if (err instanceof HostmeError) throw err;
    throw new HostmeError('snapshot-save-failed', `cannot write the machine state to ${stateFile}: ${errorMessage(err)}`, { stateFile }, { cause: err });
  } finally {
    server.close();
  }
}

/**
 * Loads device state into a VM started with `incoming: true` and
 * `incomingFile` (QEMU holds it as descriptor `fd`) and resumes it. Throws
 * 'snapshot-restore-failed' when QEMU rejects the stream (another machine,
 * another QEMU): the caller then boots from scratch.
 */
export async function restoreMachine(qmp: QmpClient, fd: number, options: { timeoutMs?: number; beforeContinue?: () => Promise<void> } = {}): Promise<void> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  await qmp.execute('migrate-set-capabilities', IGNORE_SHARED);
  // A numeric fd: name is a descriptor QEMU inherited (its own monitor_fd_param).
  await qmp.execute('migrate-incoming', { uri: `fd:${fd}` });
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const status = await qmp.execute<{ status: string }>('query-status');
    if (status.status === 'paused' || status.status === 'running') break;
    if (status.status !== 'inmigrate') {
      throw new HostmeError('snapshot-restore-failed', `QEMU did not accept the saved machine state (status ${status.status})`, { status: status.status });
    }
    if (performance.now() > deadline) throw new HostmeError('snapshot-restore-failed', `loading the saved machine state took more than ${timeoutMs} ms`, {});
    await sleep(5);
  }
  const info = await qmp.execute<MigrateInfo>('query-migrate');
  if (info.status === 'failed') {
    throw new HostmeError('snapshot-restore-failed', `QEMU did not accept the saved machine state: ${info['error-desc'] ?? 'migration failed'}`, {});
  }
  // The machine was stopped when saved, so it arrives paused: it runs once what it must find is there (a lazy RAM's working set).
  await options.beforeContinue?.();
  await qmp.execute('cont');
}

async function waitForMigration(qmp: QmpClient, what: string, timeoutMs: number): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const info = await qmp.execute<MigrateInfo>('query-migrate');
    if (info.status === 'completed') return;
    if (info.status === 'failed' || info.status === 'cancelled') {
      throw new HostmeError('snapshot-save-failed', `QEMU could not save the machine (${what}): ${info['error-desc'] ?? info.status}`, { status: info.status });
    }
    if (performance.now() > deadline) throw new HostmeError('snapshot-save-failed', `saving the machine took more than ${timeoutMs} ms`, {});
    await sleep(5);
  }
}

/** The concrete machine type behind an alias such as "q35" ("pc-q35-7.2"). */
export async function resolveMachineType(qmp: QmpClient, alias: string): Promise<string> {
  const machines = await qmp.execute<Array<{ name: string; alias?: string }>>('query-machines');
  return machines.find((m) => m.alias === alias)?.name ?? alias;
}

/** The QEMU version a running VM reports ("7.2.22"). */
export function qmpQemuVersion(qmp: QmpClient): string {
  const v = qmp.greeting.version?.qemu;
  return v ? `${v.major}.${v.minor}.${v.micro}` : 'unknown';
}

/** `qemu-system-… --version` as "7.2.22" (cached per binary), or 'unknown'. */
export async function qemuBinaryVersion(binary: string): Promise<string> {
  return /version (\d+\.\d+\.\d+)/.exec((await qemuVersionLine(binary)) ?? '')?.[1] ?? 'unknown';
}

/** The NICs a run wants, to be hot-plugged into a resumed machine. */
export interface HotNics {
  netdev?: VmNetdev;
  overlay?: VmOverlayNic;
}

export function nicCount(nics: HotNics): number {
  return (nics.netdev ? 1 : 0) + (nics.overlay ? 1 : 0);
}

/**
 * Plugs the run's NICs into a resumed machine's empty root ports
 * (hostme.rp0…), in cold-boot order (user network, then overlay). A NIC that
 * came through the migration would keep the saved MAC; a new one has the
 * instance's own, and the guest sees a new device (ACPI/PCIe hotplug) it
 * configures like at boot.
 */
export async function plugNics(qmp: QmpClient, nics: HotNics, ports: number): Promise<void> {
  if (nicCount(nics) > ports) {
    throw new HostmeError('snapshot-restore-failed', `the snapshot has ${ports} free slot(s) for NICs and this run needs ${nicCount(nics)}`, { ports });
  }
  let port = 0;
  if (nics.netdev) {
    const { hostfwd = [], restrict, model } = nics.netdev;
    const forwards = hostfwd.map((f) => ({ str: `${f.proto ?? 'tcp'}:${f.hostAddr ?? '127.0.0.1'}:${f.hostPort}-:${f.guestPort}` }));
    await qmp.execute('netdev_add', { type: 'user', id: 'n0', ...(restrict ? { restrict: true } : {}), ...(forwards.length ? { hostfwd: forwards } : {}) });
    await qmp.execute('device_add', { driver: model ?? 'virtio-net-pci', netdev: 'n0', id: 'hostme.nic0', bus: `hostme.rp${port++}` });
  }
  if (nics.overlay) {
    await qmp.execute('netdev_add', { type: 'stream', id: 'ov0', server: true, addr: { type: 'unix', path: nics.overlay.socket } });
    await qmp.execute('device_add', { driver: 'virtio-net-pci', netdev: 'ov0', id: 'hostme.nic1', bus: `hostme.rp${port++}`, mac: nics.overlay.mac });
  }
}

/** The console command a snapshot asks for after a resume, its placeholders filled. */
export function afterResumeCommand(template: string, nics: number, now = Date.now()): string {
  return template.replaceAll('{epoch}', String(Math.floor(now / 1000))).replaceAll('{nics}', String(nics));
}
