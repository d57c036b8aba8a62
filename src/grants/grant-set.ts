/**
 * The authority an environment (a running VM) is granted. Deny by default:
 * the empty set grants nothing but what hostme always keeps for itself (the
 * QMP control socket). Each kind maps to one device in the VM and one
 * hostme-controlled caretaker that can take it back (docs/grants.md).
 */
import path from 'node:path';
import { z } from 'zod';
import { HostmeError } from '../errors.js';

/** How an extra disk (a local raw image file) is attached; 'none' = a stand-in (present, every I/O fails) until granted at runtime. */
export type DiskMode = 'ro' | 'cow' | 'rw' | 'none';
export type DirMode = 'ro' | 'rw';

export interface DiskGrant { image: string; mode: DiskMode }
export interface EgressGrant { host: string; port: number }
export interface PublishedPort { hostPort: number; guestPort: number; proto: 'tcp' | 'udp' }
export interface NetGrant { networks: string[]; egress: EgressGrant[]; ports: PublishedPort[] }
export interface DirGrant { path: string; mode: DirMode }
/** Disk I/O limit per second; an absent field is unlimited. */
export interface DiskIoGrant { bytesPerSec?: number; opsPerSec?: number }
export interface ResourceGrant { cpus?: number; memoryMiB?: number; diskIo?: DiskIoGrant; /** Overlay network bandwidth, Mbit/s each way (the switch port). */ bandwidthMbit?: number }

const UNIT: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };
const MAX_RATE = 1024 ** 4;

/**
 * A disk I/O rate: `BYTES[K|M|G][:OPS]` per second (binary units), e.g.
 * `4M`, `4M:200`, `:200` (operations only). Throws a message (no field).
 */
export function parseDiskIo(text: string): DiskIoGrant {
  const m = /^(?:(\d{1,13})([KMG]?))?(?::(\d{1,9}))?$/i.exec(text.trim());
  if (!m || (m[1] === undefined && m[3] === undefined)) throw new HostmeError('usage', `"${text}" is not a disk I/O rate (BYTES[K|M|G][:OPS] per second, e.g. 4M or 4M:200)`);
  const out: DiskIoGrant = {};
  if (m[1] !== undefined) out.bytesPerSec = Number(m[1]) * UNIT[m[2]!.toUpperCase()]!;
  if (m[3] !== undefined) out.opsPerSec = Number(m[3]);
  if (out.bytesPerSec !== undefined && (out.bytesPerSec < 4096 || out.bytesPerSec > MAX_RATE)) throw new HostmeError('usage', `"${text}": bytes per second must be 4K..1024G`);
  if (out.opsPerSec !== undefined && (out.opsPerSec < 1 || out.opsPerSec > 1e8)) throw new HostmeError('usage', `"${text}": operations per second must be 1..100000000`);
  return out;
}

/** `4M:200` for a DiskIoGrant (hostme grants). */
export function formatDiskIo(io: DiskIoGrant): string {
  const b = io.bytesPerSec;
  const unit = b === undefined ? '' : b % UNIT.G! === 0 ? `${b / UNIT.G!}G` : b % UNIT.M! === 0 ? `${b / UNIT.M!}M` : b % UNIT.K! === 0 ? `${b / UNIT.K!}K` : String(b);
  return `${unit}${io.opsPerSec !== undefined ? `:${io.opsPerSec}` : ''}`;
}

export interface GrantSet {
  disks: DiskGrant[];
  net: NetGrant;
  dirs: DirGrant[];
  resources: ResourceGrant;
  console: boolean;
  screen: boolean;
}

export const GRANT_KINDS = ['disk', 'net', 'dir', 'resources', 'console', 'screen'] as const;
export type GrantKind = (typeof GRANT_KINDS)[number];

/** Nothing granted. */
export function emptyGrants(): GrantSet {
  return { disks: [], net: { networks: [], egress: [], ports: [] }, dirs: [], resources: {}, console: false, screen: false };
}

const networkName = z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'a network name is lowercase letters, digits and "-", at most 32');
/** A DNS name or an IPv4 literal; no wildcards, no URLs, no userinfo. */
const hostName = z
  .string()
  .max(253)
  .regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i, 'a host is a DNS name or an IPv4 address');
const port = z.number({ error: 'a port is a number' }).int('a port is an integer').min(1, 'a port is 1..65535').max(65535, 'a port is 1..65535');

const fileSchema = z
  .object({
    version: z.literal(1).optional(),
    disks: z.array(z.strictObject({ image: z.string().min(1).max(4096), mode: z.enum(['ro', 'cow', 'rw', 'none']).default('cow') })).max(16).default([]),
    net: z
      .strictObject({
        networks: z.array(networkName).max(16).default([]),
        egress: z.array(z.strictObject({ host: hostName, port })).max(256).default([]),
        ports: z.array(z.strictObject({ hostPort: port, guestPort: port, proto: z.enum(['tcp', 'udp']).default('tcp') })).max(64).default([]),
      })
      .default({ networks: [], egress: [], ports: [] }),
    dirs: z.array(z.strictObject({ path: z.string().min(1).max(4096), mode: z.enum(['ro', 'rw']).default('ro') })).max(16).default([]),
    resources: z
      .strictObject({
        cpus: z.number().int().min(1).max(64).optional(),
        memoryMiB: z.number().int().min(16).max(1 << 20).optional(),
        diskIo: z.string().max(64).optional(),
        bandwidthMbit: z.number().int().min(1, 'bandwidth is 1..100000 Mbit/s').max(100_000, 'bandwidth is 1..100000 Mbit/s').optional(),
      })
      .default({}),
    console: z.boolean().default(false),
    screen: z.boolean().default(false),
  })
  .strict();

/** "grants.dirs[1].path" from zod's path. */
function fieldName(where: string, at: ReadonlyArray<PropertyKey>): string {
  let name = where;
  for (const key of at) name += typeof key === 'number' ? `[${key}]` : `.${String(key)}`;
  return name;
}

function invalid(field: string, message: string, source?: string): HostmeError {
  return new HostmeError('grants-invalid', `${source ? `${source}: ` : ''}${field}: ${message}`, { field, ...(source ? { source } : {}) });
}

export interface ValidateOptions {
  /** Relative folder paths are resolved against this (the grant file's folder, or the working directory). */
  base: string;
  /** Host folders must be inside this (default: $HOSTME_GRANT_ROOT, else the working directory). */
  root?: string;
  /** Named in messages (the grant file). */
  source?: string;
}

export function grantRoot(): string {
  return path.resolve(process.env.HOSTME_GRANT_ROOT ?? process.cwd());
}

/**
 * Validates a parsed grant document (from JSON or YAML) into a GrantSet with
 * absolute folder paths. Throws HostmeError 'grants-invalid' naming the field.
 */
export function validateGrants(doc: unknown, options: ValidateOptions): GrantSet {
  const parsed = fileSchema.safeParse(doc ?? {});
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const keys = issue.code === 'unrecognized_keys' ? issue.keys : [];
    if (keys.length) {
      const field = fieldName('grants', [...issue.path, keys[0]!]);
      const what = issue.path.length === 0 ? `unknown kind (kinds: ${GRANT_KINDS.map((k) => (k === 'disk' || k === 'dir' ? `${k}s` : k)).join(', ')})` : 'unknown field';
      throw invalid(field, what, options.source);
    }
    throw invalid(fieldName('grants', issue.path), issue.message, options.source);
  }
  const { version: _version, ...data } = parsed.data;
  const { diskIo, ...resources } = data.resources;
  const set: GrantSet = { ...data, resources };
  if (diskIo !== undefined) {
    try {
      set.resources.diskIo = parseDiskIo(diskIo);
    } catch (err) {
      throw invalid('grants.resources.diskIo', (err as HostmeError).message, options.source);
    }
  }
  const root = path.resolve(options.root ?? grantRoot());
  set.dirs = set.dirs.map((dir, i) => ({ mode: dir.mode, path: confineDir(dir.path, options.base, root, `grants.dirs[${i}].path`, options.source) }));
  // Extra disks are host files: confined like folders.
  set.disks = set.disks.map((disk, i) => ({ mode: disk.mode, image: confineDir(disk.image, options.base, root, `grants.disks[${i}].image`, options.source) }));
  return set;
}

/** An absolute host folder inside root; throws naming `field` otherwise. */
export function confineDir(given: string, base: string, root: string, field: string, source?: string): string {
  if (given.includes('\0')) throw invalid(field, 'contains a NUL byte', source);
  const resolved = path.resolve(base, given);
  const rel = path.relative(root, resolved);
  if (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) throw invalid(field, `outside the allowed root ${root}`, source);
  return resolved;
}

/** A stable, human-readable rendering (hostme grants). */
export function describeGrants(set: GrantSet): string[] {
  const lines: string[] = [];
  const none = (items: unknown[]) => items.length === 0;
  lines.push(`console: ${set.console ? 'granted' : 'denied'}`, `screen: ${set.screen ? 'granted' : 'denied'}`);
  lines.push(`disks: ${none(set.disks) ? 'none' : set.disks.map((d) => `${d.image} (${d.mode})`).join(', ')}`);
  lines.push(`networks: ${none(set.net.networks) ? 'none' : set.net.networks.join(', ')}`);
  lines.push(`egress: ${none(set.net.egress) ? 'none' : set.net.egress.map((e) => `${e.host}:${e.port}`).join(', ')}`);
  lines.push(`ports: ${none(set.net.ports) ? 'none' : set.net.ports.map((p) => `${p.hostPort}->${p.guestPort}/${p.proto}`).join(', ')}`);
  lines.push(`dirs: ${none(set.dirs) ? 'none' : set.dirs.map((d) => `${d.path} (${d.mode})`).join(', ')}`);
  const r = set.resources;
  const parts = [r.cpus !== undefined ? `${r.cpus} cpus` : '', r.memoryMiB !== undefined ? `${r.memoryMiB} MiB` : '', r.diskIo ? `disk I/O ${formatDiskIo(r.diskIo)}/s` : '', r.bandwidthMbit !== undefined ? `${r.bandwidthMbit} Mbit/s network` : ''].filter(Boolean);
  lines.push(`resources: ${parts.length ? parts.join(', ') : 'image defaults'}`);
  return lines;
}
