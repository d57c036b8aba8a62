/**
 * Deno-style grant flags and grant files. Allows add to the set (after the
 * grant file, if any); denies remove from it and always win, whatever their
 * order on the command line:
 *
 *   --allow-net=host:443,network:demo   --deny-net=host:443   --deny-net
 *   --allow-dir=./src:ro                --deny-dir=./src
 *   --allow-port=8080 | 8080:80[/udp]   --deny-port=8080
 *   --allow-disk=FILE[:ro|cow|rw]       --deny-disk=FILE  (a denied disk stays attached as a stand-in)
 *   --allow-disk-io=4M[:200]  (bytes[/ops] per second through the disk caretaker)
 *   --allow-bandwidth=MBIT  (overlay network, each way, through the switch port)
 *   --allow-cpus=2  --allow-memory=512  --allow-console  --allow-screen  (and their --deny-)
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { createRequire } from 'node:module';
import { HostmeError, errorMessage } from '../errors.js';
import { confineDir, emptyGrants, grantRoot, parseDiskIo, validateGrants, type GrantSet } from './grant-set.js';

const MAX_GRANT_FILE = 256 * 1024;
const FLAG = /^--(allow|deny)-(net|dir|port|disk-io|disk|bandwidth|cpus|memory|console|screen)(?:=(.*))?$/s;

export function isGrantFlag(arg: string): boolean {
  return FLAG.test(arg);
}

interface Flag { verb: 'allow' | 'deny'; kind: string; value: string | undefined; text: string }

function parseFlag(text: string): Flag {
  const m = FLAG.exec(text);
  if (!m) throw new HostmeError('grants-invalid', `${text}: not a grant flag (--allow-KIND or --deny-KIND; kinds: net, dir, port, disk, disk-io, bandwidth, cpus, memory, console, screen)`, { field: text });
  return { verb: m[1] as Flag['verb'], kind: m[2]!, value: m[3], text };
}

function bad(flag: Flag, message: string): HostmeError {
  return new HostmeError('grants-invalid', `${flag.text}: ${message}`, { field: flag.text });
}

function items(flag: Flag): string[] {
  if (flag.value === undefined || flag.value === '') throw bad(flag, 'needs a value');
  return flag.value.split(',').map((s) => s.trim());
}

function parsePort(flag: Flag, text: string): number {
  if (!/^\d{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) throw bad(flag, `port "${text}" is not 1..65535`);
  return Number(text);
}

function parseCount(flag: Flag, min: number, max: number): number {
  const v = flag.value ?? '';
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) throw bad(flag, `needs a whole number ${min}..${max}`);
  return Number(v);
}

export interface FlagOptions {
  /** Relative folders are resolved against this (default: working directory). */
  cwd?: string;
  /** Folders must be inside this (default grantRoot()). */
  root?: string;
}

/** Applies grant flags on top of `base` (default: nothing granted). */
export function applyGrantFlags(flags: readonly string[], base: GrantSet = emptyGrants(), options: FlagOptions = {}): GrantSet {
  const set = structuredClone(base);
  const parsed = flags.map(parseFlag);
  const cwd = options.cwd ?? process.cwd();
  const root = path.resolve(options.root ?? grantRoot());
  for (const flag of parsed.filter((f) => f.verb === 'allow')) allow(set, flag, cwd, root);
  for (const flag of parsed.filter((f) => f.verb === 'deny')) deny(set, flag, cwd, root);
  return set;
}

function netItem(flag: Flag, item: string): { network: string } | { host: string; port: number } {
  if (item.startsWith('network:')) {
    const network = item.slice('network:'.length);
    if (!/^[a-z0-9][a-z0-9-]{0,31}$/.test(network)) throw bad(flag, `network "${network}": lowercase letters, digits and "-", at most 32`);
    return { network };
  }
  const colon = item.lastIndexOf(':');
  if (colon <= 0) throw bad(flag, `"${item}" is neither host:port nor network:NAME`);
  const host = item.slice(0, colon).toLowerCase();
  if (!/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/.test(host) || host.includes('..')) throw bad(flag, `host "${host}" is not a DNS name or IPv4 address`);
  return { host, port: parsePort(flag, item.slice(colon + 1)) };
}

function portItem(flag: Flag, item: string): { hostPort: number; guestPort: number; proto: 'tcp' | 'udp' } {
  const m = /^([^:/]+)(?::([^/]+))?(?:\/(tcp|udp))?$/.exec(item);
  if (!m) throw bad(flag, `"${item}" is not PORT, HOSTPORT:GUESTPORT or either with /tcp or /udp`);
  const hostPort = parsePort(flag, m[1]!);
  return { hostPort, guestPort: m[2] === undefined ? hostPort : parsePort(flag, m[2]), proto: (m[3] as 'tcp' | 'udp' | undefined) ?? 'tcp' };
}

function splitMode<M extends string>(flag: Flag, item: string, modes: readonly M[], fallback: M): { name: string; mode: M } {
  const colon = item.lastIndexOf(':');
  const suffix = colon >= 0 ? item.slice(colon + 1) : '';
  if (colon >= 0 && (modes as readonly string[]).includes(suffix)) return { name: item.slice(0, colon), mode: suffix as M };
  if (item === '') throw bad(flag, 'empty item');
  return { name: item, mode: fallback };
}

function allow(set: GrantSet, flag: Flag, cwd: string, root: string): void {
  switch (flag.kind) {
    case 'net':
      for (const item of items(flag)) {
        const it = netItem(flag, item);
        if ('network' in it) { if (!set.net.networks.includes(it.network)) set.net.networks.push(it.network); }
        else if (!set.net.egress.some((e) => e.host === it.host && e.port === it.port)) set.net.egress.push(it);
      }
      return;
    case 'dir':
      for (const item of items(flag)) {
        const { name, mode } = splitMode(flag, item, ['ro', 'rw'] as const, 'ro');
        const dir = confineDir(name, cwd, root, flag.text);
        set.dirs = set.dirs.filter((d) => d.path !== dir);
        set.dirs.push({ path: dir, mode });
      }
      return;
    case 'port':
      for (const item of items(flag)) {
        const p = portItem(flag, item);
        set.net.ports = set.net.ports.filter((q) => !(q.hostPort === p.hostPort && q.proto === p.proto));
        set.net.ports.push(p);
      }
      return;
    case 'disk':
      for (const item of items(flag)) {
        const { name, mode } = splitMode(flag, item, ['ro', 'cow', 'rw'] as const, 'cow');
        const image = confineDir(name, cwd, root, flag.text);
        set.disks = set.disks.filter((d) => d.image !== image);
        set.disks.push({ image, mode });
      }
      return;
    case 'disk-io':
      try {
        set.resources.diskIo = parseDiskIo(flag.value ?? '');
      } catch (err) {
        throw bad(flag, (err as HostmeError).message);
      }
      return;
    case 'bandwidth': set.resources.bandwidthMbit = parseCount(flag, 1, 100_000); return;
    case 'cpus': set.resources.cpus = parseCount(flag, 1, 64); return;
    case 'memory': set.resources.memoryMiB = parseCount(flag, 16, 1 << 20); return;
    case 'console':
    case 'screen':
      if (flag.value !== undefined) throw bad(flag, 'takes no value');
      set[flag.kind] = true;
  }
}

function deny(set: GrantSet, flag: Flag, cwd: string, root: string): void {
  const all = flag.value === undefined;
  switch (flag.kind) {
    case 'net':
      if (all) { set.net = { networks: [], egress: [], ports: set.net.ports }; return; }
      for (const item of items(flag)) {
        const it = netItem(flag, item);
        if ('network' in it) set.net.networks = set.net.networks.filter((n) => n !== it.network);
        else set.net.egress = set.net.egress.filter((e) => !(e.host === it.host && e.port === it.port));
      }
      return;
    case 'dir':
      if (all) { set.dirs = []; return; }
      for (const item of items(flag)) {
        const dir = path.resolve(cwd, splitMode(flag, item, ['ro', 'rw'] as const, 'ro').name);
        // Denying a folder also denies every granted folder inside it.
        set.dirs = set.dirs.filter((d) => d.path !== dir && !d.path.startsWith(dir + path.sep));
      }
      void root;
      return;
    case 'port':
      if (all) { set.net.ports = []; return; }
      for (const item of items(flag)) {
        const p = portItem(flag, item);
        set.net.ports = set.net.ports.filter((q) => !(q.hostPort === p.hostPort && q.proto === p.proto));
      }
      return;
    case 'disk':
      // A denied disk is not removed: it stays attached as a stand-in (every I/O fails) that hostme grant can hand over.
      if (all) { set.disks = set.disks.map((d) => ({ ...d, mode: 'none' })); return; }
      for (const item of items(flag)) {
        const image = confineDir(splitMode(flag, item, ['ro', 'cow', 'rw'] as const, 'cow').name, cwd, root, flag.text);
        set.disks = [...set.disks.filter((d) => d.image !== image), { image, mode: 'none' }];
      }
      return;
    case 'disk-io': delete set.resources.diskIo; return;
    case 'bandwidth': delete set.resources.bandwidthMbit; return;
    case 'cpus': delete set.resources.cpus; return;
    case 'memory': delete set.resources.memoryMiB; return;
    case 'console':
    case 'screen':
      if (flag.value !== undefined) throw bad(flag, 'takes no value');
      set[flag.kind] = false;
  }
}

/** Reads a grant file (JSON, or YAML by extension .yaml/.yml). Folders are relative to the file's folder. */
export async function loadGrantFile(file: string, options: { root?: string } = {}): Promise<GrantSet> {
  let text: string;
  try {
    const buf = await readFile(file);
    if (buf.length > MAX_GRANT_FILE) throw new HostmeError('grants-invalid', `${file}: larger than ${MAX_GRANT_FILE} bytes`, { source: file });
    text = buf.toString('utf8');
  } catch (err) {
    if (err instanceof HostmeError) throw err;
    throw new HostmeError('grants-invalid', `${file}: cannot read the grant file: ${errorMessage(err)}`, { source: file });
  }
  return parseGrantText(text, { source: file, base: path.dirname(path.resolve(file)), root: options.root, yaml: /\.ya?ml$/i.test(file) });
}

/** The YAML parser, loaded on first use: every `hostme run` loads this module, few read a YAML grant file (yaml costs ~0.1 s to load). */
function yamlParser(): typeof import('yaml').parse {
  return (createRequire(import.meta.url)('yaml') as typeof import('yaml')).parse;
}

export function parseGrantText(text: string, options: { source: string; base: string; root?: string; yaml: boolean }): GrantSet {
  let doc: unknown;
  try {
    doc = options.yaml ? yamlParser()(text, { maxAliasCount: 16 }) : JSON.parse(text);
  } catch (err) {
    throw new HostmeError('grants-invalid', `${options.source}: not valid ${options.yaml ? 'YAML' : 'JSON'}: ${errorMessage(err)}`, { source: options.source });
  }
  return validateGrants(doc, options);
}
