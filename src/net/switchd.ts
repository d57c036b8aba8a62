/**
 * The switch process (`hostme net switchd`, started by ensureSwitch): one
 * NetSwitch for the machine, its control socket, and the list of QEMU
 * sockets it dialed (ports.json) so that after a restart it dials them
 * again and every guest is back on its network with the same address.
 */
import { createHash } from 'node:crypto';
import { chmodSync, statSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { errorMessage, HostmeError, isHostmeError } from '../errors.js';
import { controlSocket, type ControlRequest } from './control.js';
import { PCAP_HEADER, pcapRecord } from './pcap.js';
import { formatSubnet, NetRegistry, networkNamePattern } from './registry.js';
import { dialQemuPort, type GatewayService } from './stream-port.js';
import { NetSwitch, type SwitchLimits } from './switch.js';
import { Trunk } from './trunk.js';

interface PortRecord {
  network: string;
  instance: string;
  socket: string;
  site?: string;
  /** Set when the network is joined through a hub (a trunk). */
  hub?: string;
  token?: string;
  services?: GatewayService[];
  isolated?: boolean;
}

const MAX_REQUEST = 64 * 1024;
const instancePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface SwitchDaemon {
  sw: NetSwitch;
  /** Stops serving; guests stay recorded, so the next switch dials them again. */
  close(): Promise<void>;
  /** Resolves once closed (by close() or a 'stop' request). */
  closed: Promise<void>;
}

interface SavedConnection { from: string; to: string; port: number }
const MAX_SAVED_CONNECTIONS = 1024;

/**
 * Runs the switch for `dir`. Returns undefined when another switch process
 * already serves that directory (an abstract unix socket is the lock: the
 * kernel frees it when the holder dies, so no stale lock files).
 */
export async function startSwitchDaemon(dir: string, limits?: SwitchLimits, log: (line: string) => void = () => {}): Promise<SwitchDaemon | undefined> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const lock = net.createServer();
  const lockName = `\0hostme-net-${createHash('sha256').update(path.resolve(dir)).digest('hex').slice(0, 24)}`;
  const locked = await new Promise<boolean>((resolve, reject) => {
    lock.once('error', (err: NodeJS.ErrnoException) => (err.code === 'EADDRINUSE' ? resolve(false) : reject(err)));
    lock.listen(lockName, () => resolve(true));
  });
  if (!locked) return undefined;

  const registry = new NetRegistry(dir);
  const sw = new NetSwitch(registry, limits);
  const portsFile = path.join(dir, 'ports.json');
  const records = new Map<string, PortRecord>();
  const saveRecords = () => {
    writeFileSync(`${portsFile}.tmp`, JSON.stringify([...records.values()], null, 1) + '\n', { mode: 0o600 });
    renameSync(`${portsFile}.tmp`, portsFile);
  };

  // hostme connect A B --port P, kept across restarts: applied whenever both A and B have a port on one network.
  const connectionsFile = path.join(dir, 'connections.json');
  const connections = new Map<string, SavedConnection>();
  try {
    const loaded = JSON.parse(readFileSync(connectionsFile, 'utf8')) as unknown;
    for (const c of Array.isArray(loaded) ? loaded.slice(0, MAX_SAVED_CONNECTIONS) : []) {
      const { from, to, port } = (c ?? {}) as Partial<SavedConnection>;
      if (typeof from === 'string' && typeof to === 'string' && instancePattern.test(from) && instancePattern.test(to) && Number.isInteger(port) && port! >= 1 && port! <= 65535) connections.set(`${from}>${to}:${port}`, { from, to, port: port! });
    }
  } catch {
    // none saved yet
  }
  const saveConnections = () => {
    writeFileSync(`${connectionsFile}.tmp`, JSON.stringify([...connections.values()], null, 1) + '\n', { mode: 0o600 });
    renameSync(`${connectionsFile}.tmp`, connectionsFile);
  };
  const applyConnections = () => {
    for (const c of connections.values()) sw.networkOf(c.from, c.to)?.connect(c.from, c.to, c.port, true);
  };
  const remember = (c: SavedConnection, on: boolean) => {
    const key = `${c.from}>${c.to}:${c.port}`;
    if (on && !connections.has(key) && connections.size >= MAX_SAVED_CONNECTIONS) throw new HostmeError('usage', `at most ${MAX_SAVED_CONNECTIONS} connections are kept`);
    if (on) connections.set(key, c);
    else connections.delete(key);
    saveConnections();
  };

  const sockets = new Set<net.Socket>();
  let closing = false;
  const trunks = new Map<string, Trunk>();
  const ensureTrunk = async (record: PortRecord) => {
    if (!record.hub) {
      if (trunks.has(record.network)) throw new HostmeError('net-trunked', `network ${record.network} is joined through ${trunks.get(record.network)!.options.hub} on this machine; join it the same way (--net ${record.network}@HUB)`);
      return;
    }
    const existing = trunks.get(record.network);
    if (existing) {
      if (existing.options.hub !== record.hub) throw new HostmeError('net-trunked', `network ${record.network} is already joined through ${existing.options.hub}`);
      if (!record.token || record.token === existing.options.token) return;
      // Another token for the same hub (the hub was reset, or the old token refused): redial with it.
      existing.close();
      trunks.delete(record.network);
    } else if (sw.registry.has(record.network) && sw.activeNetworks().some((n) => n.name === record.network && [...n.ports].length > 0)) {
      throw new HostmeError('net-trunked', `network ${record.network} is a local network on this machine; pick another name to join the hub's`);
    }
    const trunk = new Trunk(sw, { network: record.network, hub: record.hub, token: record.token ?? '', log });
    trunks.set(record.network, trunk);
    try {
      await trunk.ready();
    } catch (err) {
      trunk.close();
      trunks.delete(record.network);
      throw err;
    }
  };
  const dial = async (record: PortRecord) => {
    await ensureTrunk(record);
    const { port, socket } = await dialQemuPort(sw, record, () => {
      sockets.delete(socket);
      log(`port ${record.instance} on ${record.network} closed`);
      if (!closing && records.get(record.socket) === record) {
        records.delete(record.socket);
        saveRecords();
      }
    });
    sockets.add(socket);
    records.set(record.socket, record);
    saveRecords();
    applyConnections();
    log(`port ${port.id}: ${record.instance} on ${record.network} (${record.socket})`);
  };

  // Guests that were attached before a restart: dial them again.
  let previous: PortRecord[] = [];
  try {
    previous = JSON.parse(readFileSync(portsFile, 'utf8')) as PortRecord[];
  } catch {
    previous = [];
  }
  for (const record of Array.isArray(previous) ? previous : []) {
    await dial(record).catch((err) => log(`not re-dialing ${record.socket}: ${errorMessage(err)}`));
  }
  saveRecords();

  const socketPath = controlSocket(dir);
  try {
    unlinkSync(socketPath);
  } catch {
    // not there
  }
  const control = net.createServer((conn) => handleControl(conn, { sw, registry, dial, remember, close: () => void daemon.close() }));
  await new Promise<void>((resolve, reject) => {
    control.once('error', reject);
    control.listen(socketPath, () => resolve());
  });
  chmodSync(socketPath, 0o600);
  log(`switch serving ${dir}`);

  let markClosed: () => void = () => {};
  const daemon: SwitchDaemon = {
    sw,
    closed: new Promise<void>((resolve) => (markClosed = resolve)),
    close: async () => {
      closing = true;
      control.close();
      lock.close();
      for (const socket of sockets) socket.destroy();
      for (const trunk of trunks.values()) trunk.close();
      markClosed();
    },
  };
  return daemon;
}

interface ControlContext {
  sw: NetSwitch;
  registry: NetRegistry;
  /** Persists a hostme connect (on) or disconnect. */
  remember: (c: SavedConnection, on: boolean) => void;
  dial: (record: PortRecord) => Promise<void>;
  close: () => void;
}

function handleControl(conn: net.Socket, ctx: ControlContext): void {
  let buf = '';
  conn.setEncoding('utf8');
  conn.on('error', () => {});
  const onData = (chunk: string) => {
    buf += chunk;
    const newline = buf.indexOf('\n');
    if (newline < 0) {
      if (buf.length > MAX_REQUEST) conn.destroy();
      return;
    }
    conn.off('data', onData);
    let request: ControlRequest;
    try {
      request = JSON.parse(buf.slice(0, newline)) as ControlRequest;
    } catch {
      conn.end(JSON.stringify({ ok: false, code: 'usage', message: 'the request is not JSON' }) + '\n');
      return;
    }
    answer(conn, request, ctx).catch((err) => {
      const reply = isHostmeError(err) ? { ok: false, code: err.code, message: err.message } : { ok: false, code: 'net-switch-error', message: errorMessage(err) };
      conn.end(JSON.stringify(reply) + '\n');
    });
  };
  conn.on('data', onData);
}

function requireNetwork(value: unknown): string {
  if (typeof value !== 'string' || !networkNamePattern.test(value)) throw new HostmeError('usage', 'network: lowercase letters, digits and "-", at most 32');
  return value;
}

/** Caretakers at the gateway: at most 8, each a TCP port and an absolute path to a unix socket. */
function requireServices(value: unknown): GatewayService[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > 8) throw new HostmeError('usage', 'services: at most 8 {port, socket}');
  return value.map((item: unknown) => {
    const { port, socket } = (item ?? {}) as { port?: unknown; socket?: unknown };
    if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new HostmeError('usage', 'services[].port: 1..65535');
    if (typeof socket !== 'string' || !path.isAbsolute(socket) || socket.length > 1024) throw new HostmeError('usage', 'services[].socket: an absolute path to a unix socket');
    return { port, socket };
  });
}

async function answer(conn: net.Socket, request: ControlRequest, ctx: ControlContext): Promise<void> {
  const reply = (value: Record<string, unknown>): void => void conn.end(JSON.stringify({ ok: true, ...value }) + '\n');
  switch (request.op) {
    case 'ping':
      return reply({ pid: process.pid });
    case 'attach': {
      const network = requireNetwork(request.network);
      if (typeof request.instance !== 'string' || !instancePattern.test(request.instance)) throw new HostmeError('usage', 'instance: letters, digits, ".", "_" or "-", at most 64');
      if (request.site !== undefined && (typeof request.site !== 'string' || !networkNamePattern.test(request.site))) throw new HostmeError('usage', 'site: a DNS label');
      // Only ever connect to a socket file: the switch never opens other kinds of paths for a caller.
      // A symlink to a socket is fine (a confined QEMU listens in its own folder, see vm/confine.ts).
      if (typeof request.socket !== 'string' || !path.isAbsolute(request.socket) || !statSync(request.socket, { throwIfNoEntry: false })?.isSocket()) {
        throw new HostmeError('usage', 'socket: an absolute path to a unix socket');
      }
      if (request.hub !== undefined && (typeof request.hub !== 'string' || typeof request.token !== 'string')) throw new HostmeError('usage', 'hub: a URL, with token: the join token');
      const services = requireServices(request.services);
      if (request.isolated !== undefined && typeof request.isolated !== 'boolean') throw new HostmeError('usage', 'isolated: true or false');
      if (!request.hub) ctx.sw.network(network);
      await ctx.dial({ network, instance: request.instance, socket: request.socket, site: request.site, ...(services.length ? { services } : {}), ...(request.isolated ? { isolated: true } : {}), ...(request.hub ? { hub: request.hub, token: request.token } : {}) });
      return reply({ network, subnet: formatSubnet(ctx.registry.subnet(network)) });
    }
    case 'connect': {
      const { from, to, port, on } = request;
      for (const name of [from, to]) if (typeof name !== 'string' || !instancePattern.test(name)) throw new HostmeError('usage', 'from, to: instance names');
      if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) throw new HostmeError('usage', 'port: 1..65535');
      if (from === to) throw new HostmeError('usage', 'an instance is always connected to itself');
      const network = ctx.sw.networkOf(from, to);
      if (!network) throw new HostmeError('net-not-connected', `${from} and ${to} are not both running on one network of this machine's switch`);
      network.connect(from, to, port, on === true);
      ctx.remember({ from, to, port }, on === true);
      return reply({ network: network.name, connections: network.connectionList });
    }
    case 'bandwidth': {
      const { instance, mbit } = request;
      if (typeof instance !== 'string' || !instancePattern.test(instance)) throw new HostmeError('usage', 'instance: an instance name');
      if (mbit !== undefined && (typeof mbit !== 'number' || !Number.isInteger(mbit) || mbit < 1 || mbit > 100_000)) throw new HostmeError('usage', 'mbit: 1..100000, or absent for unlimited');
      if (ctx.sw.setBandwidth(instance, mbit) === 0) throw new HostmeError('net-not-connected', `${instance} has no port on this machine's switch`);
      return reply({ instance, ...(mbit !== undefined ? { mbit } : {}) });
    }
    case 'ls':
      return reply({
        networks: ctx.registry.names().map((name) => ({ name, subnet: formatSubnet(ctx.registry.subnet(name)), leases: ctx.registry.leases(name).length, ports: ctx.sw.ports(name), connections: ctx.sw.activeNetworks().find((n) => n.name === name)?.connectionList ?? [] })),
      });
    case 'leases': {
      const network = requireNetwork(request.network);
      return reply({ network, leases: ctx.registry.has(network) ? ctx.registry.leases(network) : [] });
    }
    case 'token': {
      const network = requireNetwork(request.network);
      return reply({ network, token: ctx.registry.issueToken(network) });
    }
    case 'capture': {
      const network = ctx.sw.network(requireNetwork(request.network));
      conn.write(JSON.stringify({ ok: true, network: network.name }) + '\n');
      conn.write(PCAP_HEADER);
      const tap = (frame: Buffer) => {
        // A reader that cannot keep up loses frames, the switch never waits for it.
        if (conn.writableLength < 8 << 20) conn.write(pcapRecord(frame));
      };
      network.taps.add(tap);
      conn.once('close', () => network.taps.delete(tap));
      conn.resume();
      return;
    }
    case 'stop':
      reply({});
      ctx.close();
      return;
    default:
      throw new HostmeError('usage', `unknown request ${JSON.stringify((request as { op?: unknown }).op)}`);
  }
}
