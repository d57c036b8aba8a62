/**
 * What a switch or hub remembers across restarts: its networks (name, subnet,
 * join-token hashes) and each network's leases (one address per instance,
 * for good). Kept as JSON files replaced atomically (write + fsync + rename):
 * changes are rare (a new network, a new instance), reads happen once at start.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import path from 'node:path';
import { HostmeError } from '../errors.js';
import { formatIp, formatMac, parseIp } from './frame.js';

export { networkNamePattern } from '../format/manifest.js';
import { networkNamePattern } from '../format/manifest.js';
/** Default subnets come from the shared address space (RFC 6598), one /24 each. */
const POOL_BASE = parseIp('100.64.0.0')!;
const POOL_PREFIX = 10;
const DEFAULT_PREFIX = 24;

export interface Subnet {
  base: number;
  prefix: number;
}

export function parseSubnet(text: string): Subnet {
  const [ip, bits] = text.split('/');
  const base = ip === undefined ? undefined : parseIp(ip);
  const prefix = Number(bits);
  if (base === undefined || !Number.isInteger(prefix) || prefix < 16 || prefix > 29) {
    throw new HostmeError('usage', `subnet ${text}: expected A.B.C.D/N with N from 16 to 29`);
  }
  if ((base & ~maskOf(prefix)) !== 0) throw new HostmeError('usage', `subnet ${text}: host bits are set (did you mean ${formatIp(base & maskOf(prefix))}/${prefix}?)`);
  return { base, prefix };
}

export function formatSubnet(s: Subnet): string {
  return `${formatIp(s.base)}/${s.prefix}`;
}

export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export function overlaps(a: Subnet, b: Subnet): boolean {
  const prefix = Math.min(a.prefix, b.prefix);
  return ((a.base & maskOf(prefix)) >>> 0) === ((b.base & maskOf(prefix)) >>> 0);
}

/** The gateway (DHCP, DNS, ARP, ping) is the first host address. */
export function gatewayOf(s: Subnet): number {
  return (s.base + 1) >>> 0;
}

export interface Lease {
  /** The instance this address belongs to (or "mac-…" for a guest that gave no name). */
  instance: string;
  /** DNS label (INSTANCE.NETWORK.hostme). */
  host: string;
  ip: string;
  mac: string;
  site?: string;
  updated: string;
}

interface NetworkRecord {
  subnet: string;
  created: string;
  /** SHA-256 (hex) of each join token issued for this network. */
  tokens: string[];
  leases: Lease[];
}

interface RegistryFile {
  version: 1;
  networks: Record<string, NetworkRecord>;
}

export function validateNetworkName(name: string): void {
  if (!networkNamePattern.test(name)) {
    throw new HostmeError('usage', `network name "${name}": use lowercase letters, digits and "-", at most 32, starting with a letter or digit`);
  }
}

/** An instance name as a DNS label ("my_vm.2" → "my-vm-2"). */
export function hostLabel(instance: string): string {
  const label = instance.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 63);
  return label || 'guest';
}

export class NetRegistry {
  private data: RegistryFile;
  private readonly file: string;

  constructor(readonly dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.file = path.join(dir, 'networks.json');
    this.data = this.load();
  }

  private load(): RegistryFile {
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, networks: {} };
      throw err;
    }
    try {
      const parsed = JSON.parse(text) as RegistryFile;
      if (parsed.version !== 1 || typeof parsed.networks !== 'object') throw new HostmeError('net-state-corrupt', 'unknown layout');
      return parsed;
    } catch (err) {
      throw new HostmeError('net-state-corrupt', `${this.file} is not a hostme network registry (${(err as Error).message}); move it away to start afresh`, { file: this.file });
    }
  }

  private save(): void {
    const tmp = `${this.file}.${process.pid}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeSync(fd, JSON.stringify(this.data, null, 1) + '\n');
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.file);
  }

  names(): string[] {
    return Object.keys(this.data.networks).sort();
  }

  has(name: string): boolean {
    return Object.hasOwn(this.data.networks, name);
  }

  subnet(name: string): Subnet {
    return parseSubnet(this.record(name).subnet);
  }

  /** Creates the network if needed (default subnet: a free /24 of 100.64.0.0/10 picked by name). */
  ensure(name: string, subnet?: string): Subnet {
    validateNetworkName(name);
    if (this.has(name)) {
      const existing = this.subnet(name);
      if (subnet !== undefined && formatSubnet(parseSubnet(subnet)) !== formatSubnet(existing)) {
        throw new HostmeError('net-subnet-mismatch', `network ${name} already uses ${formatSubnet(existing)}, not ${subnet}`, { network: name });
      }
      return existing;
    }
    const wanted = subnet !== undefined ? parseSubnet(subnet) : this.freeDefaultSubnet(name);
    for (const other of this.names()) {
      if (overlaps(wanted, this.subnet(other))) {
        throw new HostmeError('net-subnet-overlap', `subnet ${formatSubnet(wanted)} overlaps network ${other} (${formatSubnet(this.subnet(other))})`, { network: name, other });
      }
    }
    this.data.networks[name] = { subnet: formatSubnet(wanted), created: new Date().toISOString(), tokens: [], leases: [] };
    this.save();
    return wanted;
  }

  private freeDefaultSubnet(name: string): Subnet {
    const slots = 2 ** (DEFAULT_PREFIX - POOL_PREFIX);
    const start = createHash('sha256').update(name).digest().readUInt32BE(0) % slots;
    const taken = this.names().map((n) => this.subnet(n));
    for (let i = 0; i < slots; i++) {
      // Slot 0 (100.64.0.0/24) is skipped: it looks like a carrier's own range.
      const slot = ((start + i) % (slots - 1)) + 1;
      const candidate = { base: (POOL_BASE + slot * 256) >>> 0, prefix: DEFAULT_PREFIX };
      if (!taken.some((t) => overlaps(t, candidate))) return candidate;
    }
    throw new HostmeError('net-pool-full', 'every /24 of 100.64.0.0/10 is taken; give --subnet');
  }

  private record(name: string): NetworkRecord {
    const record = this.has(name) ? this.data.networks[name] : undefined;
    if (!record) throw new HostmeError('net-unknown', `no network named ${name}`, { network: name });
    return record;
  }

  leases(name: string): Lease[] {
    return [...this.record(name).leases];
  }

  /**
   * The instance's address: the one it had before, else the lowest free one.
   * The MAC is recorded (for `hostme net leases`), not part of the identity:
   * clones restored from one snapshot are told apart by instance.
   */
  lease(name: string, instance: string, mac: number, site?: string): Lease {
    const record = this.record(name);
    const subnet = parseSubnet(record.subnet);
    const existing = record.leases.find((l) => l.instance === instance);
    if (existing) {
      if (existing.mac !== formatMac(mac) || existing.site !== site) {
        existing.mac = formatMac(mac);
        if (site === undefined) delete existing.site;
        else existing.site = site;
        existing.updated = new Date().toISOString();
        this.save();
      }
      return existing;
    }
    const used = new Set(record.leases.map((l) => parseIp(l.ip)));
    const last = (subnet.base + 2 ** (32 - subnet.prefix) - 2) >>> 0; // before broadcast
    for (let ip = gatewayOf(subnet) + 1; ip <= last; ip++) {
      if (used.has(ip)) continue;
      const lease: Lease = { instance, host: uniqueHost(record.leases, hostLabel(instance)), ip: formatIp(ip), mac: formatMac(mac), updated: new Date().toISOString() };
      if (site !== undefined) lease.site = site;
      record.leases.push(lease);
      this.save();
      return lease;
    }
    throw new HostmeError('net-pool-full', `network ${name} (${record.subnet}) has no free address left; remove leases with hostme net release`, { network: name });
  }

  /** Replaces the network's leases with the authority's (a hub, over a trunk). */
  adoptLeases(name: string, leases: Lease[]): void {
    const record = this.record(name);
    const subnet = parseSubnet(record.subnet);
    const valid = leases.filter((l) => {
      const ip = typeof l.ip === 'string' ? parseIp(l.ip) : undefined;
      return ip !== undefined && ((ip & maskOf(subnet.prefix)) >>> 0) === subnet.base && typeof l.instance === 'string' && typeof l.host === 'string' && /^[a-z0-9-]{1,63}$/.test(l.host);
    });
    const before = JSON.stringify(record.leases);
    record.leases = valid.slice(0, 2 ** (32 - subnet.prefix)).map((l) => ({ instance: l.instance, host: l.host, ip: l.ip, mac: String(l.mac), ...(l.site ? { site: String(l.site) } : {}), updated: String(l.updated) }));
    if (JSON.stringify(record.leases) !== before) this.save();
  }

  release(name: string, instance: string): boolean {
    const record = this.record(name);
    const before = record.leases.length;
    record.leases = record.leases.filter((l) => l.instance !== instance);
    if (record.leases.length === before) return false;
    this.save();
    return true;
  }

  /** A new join token for the network (only its hash is stored). */
  issueToken(name: string): string {
    this.ensure(name);
    const token = `hmn_${name}_${randomBytes(24).toString('base64url')}`;
    this.record(name).tokens.push(hashToken(token));
    this.save();
    return token;
  }

  checkToken(name: string, token: string): boolean {
    if (!this.has(name)) return false;
    const digest = Buffer.from(hashToken(token), 'hex');
    return this.record(name).tokens.some((t) => timingSafeEqual(Buffer.from(t, 'hex'), digest));
  }
}

function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

function uniqueHost(leases: Lease[], label: string): string {
  const taken = new Set(leases.map((l) => l.host));
  if (!taken.has(label)) return label;
  for (let i = 2; ; i++) if (!taken.has(`${label}-${i}`)) return `${label}-${i}`;
}
