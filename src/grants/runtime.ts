/**
 * Grants changed while the VM runs. `hostme run --instance NAME` serves a
 * control socket (`grants.sock`, mode 0600, in the instance folder); `hostme
 * grant|revoke|grants NAME` talk to it. Protocol: one JSON request line, one
 * JSON response line, then the server closes (requests over 4 KiB are
 * refused). Requests: {"op":"grant"|"revoke","kind":"net"} and
 * {"op":"status"}, and {"op":"screendump"} (answered {"ok":true,"png":BASE64}
 * only while the screen is granted). Every change is appended to `audit.log` (JSON lines) in
 * the same folder before the answer is sent.
 *
 * Caretaker of the network grant: the overlay NIC's link (QMP set_link on
 * netdev ov0): down, the guest's NIC reports no carrier and QEMU passes no
 * frame either way; the device stays, so a grant needs no reboot.
 */
import { appendFile, readFile } from 'node:fs/promises';
import path from 'node:path';
import { HostmeError, errorMessage } from '../errors.js';
import type { QmpClient } from '../vm/qmp.js';
import { parseEgress, type EgressProxy } from './egress.js';
import { FolderServer } from '../folder/server.js';
import { confineDir, grantRoot } from './grant-set.js';

import type { DiskAccess, DiskGate, IoLimit } from './disk-gate.js';
import type { ExtraDisk } from './extra-disks.js';
import { describePort, parsePortGrant, type PortCaretaker } from './ports.js';
import { parseCpus, type CpuLimit } from './cpu-limit.js';
import { formatDiskIo, parseDiskIo } from './grant-set.js';
import type { ConsoleGate, ScreenCaretaker } from './devices.js';
import { askControl, listenControl, type ControlSocket } from './control-socket.js';

export const RUNTIME_KINDS = ['net', 'egress', 'dir', 'disk', 'disk-io', 'bandwidth', 'port', 'cpus', 'console', 'screen'] as const;
export type RuntimeKind = (typeof RUNTIME_KINDS)[number];
/** A status, or a screendump's PNG in base64 (a 1024x768 screen is well under this). */
const MAX_ANSWER = 16 << 20;

export interface AuditEntry { time: string; op: 'grant' | 'revoke' | 'start'; kind: RuntimeKind | 'connect'; value?: string; ok: boolean; granted?: boolean | string[]; error?: string }
export interface Granted { net: boolean; egress: string[]; dirs: string[]; disks?: DiskAccess; /** The disk I/O limit (BYTES[:OPS] per second), absent = unlimited. */ diskIo?: string; /** Overlay bandwidth in Mbit/s each way, absent = unlimited. */ bandwidthMbit?: number; /** Extra disks by name: rw, ro or none (a stand-in). */ extraDisks?: Record<string, DiskAccess>; /** Published ports, HOSTADDR:HOSTPORT->GUESTPORT/PROTO. */ ports?: string[]; /** Host CPU time QEMU may use (cgroup), absent = unlimited. */ cpuQuota?: number; /** hostme forwards the serial console (absent: no gate). */ console?: boolean; /** Screendumps of the VGA adapter (absent: no adapter). */ screen?: boolean }
export interface RuntimeStatus { instance: string; granted: Granted; log: AuditEntry[] }
export interface GrantRequest { op: 'grant' | 'revoke'; kind: string; value?: string }

export function controlSocket(instanceDir: string): string {
  return path.join(instanceDir, 'grants.sock');
}
export function auditLog(instanceDir: string): string {
  return path.join(instanceDir, 'audit.log');
}

export type GrantControl = ControlSocket;

/** Serves grant changes for a running VM whose overlay NIC is netdev ov0. */
export async function serveGrantControl(options: { instanceDir: string; instance: string; qmp: QmpClient; /** The VM has the overlay NIC (netdev ov0); default true. */ nic?: boolean; net: boolean; egress?: EgressProxy; folders?: FolderServer; disks?: DiskGate[]; /** Extra disks (seed, --allow-disk), each granted by name. */ extraDisks?: ExtraDisk[]; /** Published ports (the VM has the user-mode NIC). */ ports?: PortCaretaker; /** The CPU caretaker (a cgroup on QEMU). */ cpu?: CpuLimit; /** The disk I/O limit at start (grant file / flags); revoke disk-io returns to it. */ diskIo?: IoLimit;
  /** The switch port's bandwidth caretaker: `initial` Mbit/s at start (undefined = unlimited); `set` changes it at the switch. */
  bandwidth?: { initial?: number; set: (mbit: number | undefined) => Promise<void> };
  /** The console caretaker (what hostme forwards to and from the serial). */ console?: ConsoleGate;
  /** The screen caretaker (the VGA adapter's screendumps). */ screen?: ScreenCaretaker }): Promise<GrantControl> {
  const egressList = () => (options.egress?.allowed ?? []).map((e) => `${e.host}:${e.port}`);
  const dirList = () => (options.folders?.granted ?? []).map((d) => `${d.path}:${d.mode} as ${d.name}`);
  const extras = options.extraDisks ?? [];
  const extraList = () => Object.fromEntries(extras.map((d) => [d.name, d.gate.access]));
  const granted: Granted = { net: options.net, egress: egressList(), dirs: dirList(), ...(options.disks?.length ? { disks: options.disks[0]!.access } : {}), ...(extras.length ? { extraDisks: extraList() } : {}) };
  const portList = () => (options.ports?.granted ?? []).map(describePort);
  if (options.ports) granted.ports = portList();
  const allGates = [...(options.disks ?? []), ...extras.map((d) => d.gate)];
  // Folders granted at runtime must be inside the same root as at start.
  const root = grantRoot();
  const audit = async (entry: Omit<AuditEntry, 'time'>) => {
    await appendFile(auditLog(options.instanceDir), JSON.stringify({ time: new Date().toISOString(), ...entry }) + '\n', { mode: 0o600 });
  };
  const setNet = async (up: boolean) => {
    await options.qmp.execute('set_link', { name: 'ov0', up }, { timeoutMs: 1000 });
    granted.net = up;
  };
  const setDiskIo = (limit: IoLimit) => {
    for (const gate of allGates) gate.setLimit(limit);
    if (limit.bytesPerSec === undefined && limit.opsPerSec === undefined) delete granted.diskIo;
    else granted.diskIo = formatDiskIo(limit);
  };
  if (allGates.length) setDiskIo(options.diskIo ?? {});
  if (options.bandwidth?.initial !== undefined) granted.bandwidthMbit = options.bandwidth.initial;
  const nic = options.nic !== false;
  // The VM starts with what was granted at start: apply it before anyone asks.
  if (nic) await setNet(options.net);
  else granted.net = false;
  await audit({ op: 'start', kind: 'net', ok: true, granted: granted.net });
  if (options.egress) await audit({ op: 'start', kind: 'egress', ok: true, granted: granted.egress });
  if (options.folders) await audit({ op: 'start', kind: 'dir', ok: true, granted: granted.dirs });
  if (options.ports) await audit({ op: 'start', kind: 'port', ok: true, granted: granted.ports });
  if (options.console) { granted.console = options.console.granted; await audit({ op: 'start', kind: 'console', ok: true, granted: granted.console }); }
  if (options.screen) { granted.screen = options.screen.granted; await audit({ op: 'start', kind: 'screen', ok: true, granted: granted.screen }); }
  if (extras.length) await audit({ op: 'start', kind: 'disk', ok: true, granted: extras.map((d) => `${d.name}:${d.gate.access}`) });
  /** Applies one change; throws a usage error for a bad value. */
  const apply = async (op: 'grant' | 'revoke', kind: RuntimeKind, value: string | undefined) => {
    if (kind === 'net') {
      if (value !== undefined) throw new HostmeError('usage', 'net takes no value');
      if (!nic) throw new HostmeError('usage', 'this instance has no network card (it was started without a network)');
      return setNet(op === 'grant');
    }
    if (kind === 'console' || kind === 'screen') {
      if (value !== undefined) throw new HostmeError('usage', `${kind} takes no value`);
      const device = options[kind];
      if (!device) throw new HostmeError('usage', kind === 'console' ? 'this instance has no console caretaker' : 'this instance has no screen (start it with --allow-screen or --deny-screen for a VGA adapter)');
      device.granted = op === 'grant';
      granted[kind] = device.granted;
      return;
    }
    if (kind === 'disk') {
      const named = /^([a-z0-9][a-z0-9_-]{0,31})(?::(ro|rw))?$/.exec(value ?? '');
      if (named && named[1] !== 'ro' && named[1] !== 'rw') {
        const extra = extras.find((d) => d.name === named[1]);
        if (!extra) throw new HostmeError('usage', `no extra disk is named "${named[1]}" (${extras.length ? `extra disks: ${extras.map((d) => d.name).join(', ')}` : 'this instance has none'})`);
        if (op === 'revoke' && named[2] !== undefined) throw new HostmeError('usage', 'revoke disk NAME takes no mode');
        const access: DiskAccess = op === 'revoke' ? 'none' : ((named[2] as 'ro' | 'rw' | undefined) ?? extra.ceiling);
        if (access === 'rw' && extra.ceiling === 'ro') throw new HostmeError('usage', `disk ${extra.name} was attached read-only (its file is open read-only); grant disk ${extra.name}:ro`);
        extra.gate.access = access;
        granted.extraDisks = extraList();
        return;
      }
      if (!options.disks?.length) throw new HostmeError('usage', 'this instance has no disk caretaker');
      const access: DiskAccess = op === 'revoke' ? 'none' : value === 'ro' ? 'ro' : value === undefined || value === 'rw' ? 'rw' : 'bad' as DiskAccess;
      if ((access as string) === 'bad' || (op === 'revoke' && value !== undefined)) throw new HostmeError('usage', 'grant disk [ro|rw] (the image\'s disks; default rw), grant disk NAME[:ro|:rw] (an extra disk), revoke disk [NAME]');
      for (const gate of options.disks) gate.access = access;
      granted.disks = access;
      return;
    }
    if (kind === 'disk-io') {
      if (!allGates.length) throw new HostmeError('usage', 'this instance has no disk caretaker');
      if (op === 'revoke') {
        if (value !== undefined) throw new HostmeError('usage', 'revoke disk-io takes no value (it returns to the limit given at start)');
        return setDiskIo(options.diskIo ?? {});
      }
      if (value === undefined) throw new HostmeError('usage', 'grant disk-io needs a rate BYTES[K|M|G][:OPS] per second');
      return setDiskIo(parseDiskIo(value));
    }
    if (kind === 'bandwidth') {
      if (!options.bandwidth) throw new HostmeError('usage', 'this instance is on no overlay network (bandwidth is policed at its switch port)');
      let mbit = options.bandwidth.initial;
      if (op === 'grant') {
        if (value === undefined || !/^\d{1,6}$/.test(value) || Number(value) < 1 || Number(value) > 100_000) throw new HostmeError('usage', 'grant bandwidth needs MBIT, 1..100000 (Mbit/s each way)');
        mbit = Number(value);
      } else if (value !== undefined) throw new HostmeError('usage', 'revoke bandwidth takes no value (it returns to the limit given at start)');
      await options.bandwidth.set(mbit);
      if (mbit === undefined) delete granted.bandwidthMbit;
      else granted.bandwidthMbit = mbit;
      return;
    }
    if (kind === 'cpus') {
      if (!options.cpu) throw new HostmeError('usage', 'this instance has no CPU caretaker');
      if (op === 'revoke' && value !== undefined) throw new HostmeError('usage', 'revoke cpus takes no value (it lifts the limit)');
      if (op === 'grant' && value === undefined) throw new HostmeError('usage', 'grant cpus needs host CPUs, 0.01..64 (e.g. 0.5)');
      const cpus = op === 'grant' ? parseCpus(value!) : undefined;
      await options.cpu.set(cpus);
      if (cpus === undefined) delete granted.cpuQuota;
      else granted.cpuQuota = cpus;
      return;
    }
    if (kind === 'port') {
      if (!options.ports) throw new HostmeError('usage', 'this instance has no port NIC (start it with a published port, --allow-port or --publish)');
      if (op === 'grant') {
        if (value === undefined) throw new HostmeError('usage', 'grant port needs PORT or HOSTPORT:GUESTPORT[/tcp|/udp]');
        await options.ports.grant(parsePortGrant(value));
      } else if (value === undefined) await options.ports.revoke();
      else {
        const p = parsePortGrant(value);
        await options.ports.revoke({ hostPort: p.hostPort, proto: p.proto });
      }
      granted.ports = portList();
      return;
    }
    if (kind === 'dir') {
      if (!options.folders) throw new HostmeError('usage', 'this instance has no folder caretaker');
      if (op === 'grant') {
        const m = /^(.*?)(?::(ro|rw))?$/s.exec(value ?? '')!;
        if (!m[1]) throw new HostmeError('usage', 'grant dir needs an absolute PATH[:ro|:rw]');
        if (!path.isAbsolute(m[1])) throw new HostmeError('usage', `dir ${m[1]}: an absolute path (hostme grant resolves it)`);
        const folder = confineDir(m[1], root, root, 'dir');
        await options.folders.grant({ name: FolderServer.exportName(folder), path: folder, mode: (m[2] as 'ro' | 'rw' | undefined) ?? 'ro' });
      } else options.folders.revoke(value);
      granted.dirs = dirList();
      return;
    }
    if (!options.egress) throw new HostmeError('usage', 'this instance has no egress caretaker');
    if (op === 'grant') {
      if (value === undefined) throw new HostmeError('usage', 'grant egress needs HOST:PORT');
      options.egress.grant(parseEgress(value));
    } else options.egress.revoke(value === undefined ? undefined : parseEgress(value));
    granted.egress = egressList();
  };
  const handle = async (line: string): Promise<unknown> => {
    let request: { op?: unknown; kind?: unknown; value?: unknown };
    try {
      request = JSON.parse(line) as typeof request;
    } catch {
      return { ok: false, code: 'usage', message: 'the request is not JSON' };
    }
    if (request.op === 'status') return { ok: true, ...(await status()) };
    if (request.op === 'screendump') return screendump();
    if ((request.op !== 'grant' && request.op !== 'revoke') || !RUNTIME_KINDS.includes(request.kind as RuntimeKind)) {
      return { ok: false, code: 'usage', message: `a request is {"op":"grant"|"revoke","kind":${RUNTIME_KINDS.map((k) => `"${k}"`).join('|')},"value"?:string} or {"op":"status"}` };
    }
    if (request.value !== undefined && (typeof request.value !== 'string' || request.value.length > 4096)) return { ok: false, code: 'usage', message: 'value: a string of at most 4096 characters' };
    const op = request.op;
    const kind = request.kind as RuntimeKind;
    const value = request.value as string | undefined;
    try {
      await apply(op, kind, value);
      await audit({ op, kind, ...(value !== undefined ? { value } : {}), ok: true });
      return { ok: true, granted };
    } catch (err) {
      if (err instanceof HostmeError && (err.code === 'usage' || err.code === 'grants-invalid')) return { ok: false, code: 'usage', message: err.message };
      await audit({ op, kind, ...(value !== undefined ? { value } : {}), ok: false, error: errorMessage(err) }).catch(() => {});
      return { ok: false, code: 'grant-failed', message: errorMessage(err) };
    }
  };
  const screendump = async (): Promise<unknown> => {
    if (!options.screen) return { ok: false, code: 'usage', message: `${options.instance} has no screen (start it with --allow-screen or --deny-screen for a VGA adapter)` };
    try {
      const png = await options.screen.screendump();
      return { ok: true, png: png.toString('base64') };
    } catch (err) {
      return { ok: false, code: err instanceof HostmeError ? err.code : 'grant-failed', message: errorMessage(err) };
    }
  };
  const status = async (): Promise<RuntimeStatus> => ({ instance: options.instance, granted, log: await readAudit(options.instanceDir) });

  // The answer may take a screendump's time (QMP's bound is 10 s).
  return listenControl(controlSocket(options.instanceDir), handle, { answerTimeoutMs: 15_000 });
}

/** The audit log, oldest first (the last 1000 entries). */
export async function readAudit(instanceDir: string): Promise<AuditEntry[]> {
  const text = await readFile(auditLog(instanceDir), 'utf8').catch(() => '');
  return text.split('\n').filter(Boolean).slice(-1000).flatMap((line) => {
    try {
      return [JSON.parse(line) as AuditEntry];
    } catch {
      return [];
    }
  });
}

/** One request to a running instance's control socket. */
export async function controlGrants(instanceDir: string, request: GrantRequest | { op: 'status' } | { op: 'screendump' }): Promise<Record<string, unknown>> {
  const socketPath = controlSocket(instanceDir);
  const answer = await askControl(socketPath, request, { waitMs: request.op === 'screendump' ? 15_000 : 5000, maxAnswer: MAX_ANSWER }).catch((err: unknown) => {
    throw new HostmeError('instance-not-running', `no running instance answers at ${socketPath} (${errorMessage(err)}); start it with hostme run … --instance NAME`, { socket: socketPath });
  });
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(answer) as Record<string, unknown>;
  } catch {
    throw new HostmeError('grant-failed', `the instance's answer is not JSON: ${answer.slice(0, 200)}`);
  }
  if (parsed.ok !== true) throw new HostmeError(typeof parsed.code === 'string' ? parsed.code : 'grant-failed', String(parsed.message ?? 'refused'));
  return parsed;
}
