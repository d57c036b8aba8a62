/**
 * cloud-init NoCloud seed images (a small vfat filesystem labelled CIDATA
 * holding meta-data, user-data and network-config), built with mtools so no
 * root or loop devices are needed; and kernel command-line presets for guests
 * without cloud-init.
 */
import { mkdtemp, rm, truncate, writeFile, rename } from 'node:fs/promises';
import { isIP } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, basename } from 'node:path';
import { stringify } from 'yaml';
import { HostmeError } from '../errors.js';
import { runTool } from '../process/tool.js';

export interface SeedNetwork {
  /** Static address with prefix length, e.g. 192.168.122.10/24 or 2001:db8::10/64. */
  address: string;
  gateway?: string;
  dns?: string[];
}

export interface SeedOptions {
  instanceId?: string;
  hostname: string;
  /** user-data content (default "#cloud-config\n"). */
  userData?: string;
  /** Static network on the first ethernet; without it the seed asks for DHCP. */
  network?: SeedNetwork;
}

export interface SeedFiles {
  'meta-data': string;
  'user-data': string;
  'network-config': string;
}

const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

function usage(message: string): HostmeError {
  return new HostmeError('usage', message);
}

export interface ParsedCidr {
  address: string;
  prefix: number;
  family: 4 | 6;
}

export function parseCidr(cidr: string): ParsedCidr {
  const match = /^([^/]+)\/(\d{1,3})$/.exec(cidr.trim());
  const family = match ? isIP(match[1]!) : 0;
  const prefix = match ? Number(match[2]) : NaN;
  if (!match || family === 0 || prefix > (family === 4 ? 32 : 128)) {
    throw usage(`"${cidr}" is not an address with a prefix length (examples: 192.168.122.10/24, 2001:db8::10/64)`);
  }
  return { address: match[1]!, prefix, family: family as 4 | 6 };
}

export function prefixToNetmask(prefix: number): string {
  const bits = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return [24, 16, 8, 0].map((shift) => (bits >>> shift) & 0xff).join('.');
}

function validate(options: SeedOptions): ParsedCidr | undefined {
  if (!HOSTNAME.test(options.hostname)) throw usage(`"${options.hostname}" is not a valid hostname (letters, digits, hyphens; dot-separated labels)`);
  if (options.instanceId !== undefined && !/^[\x21-\x7e]{1,128}$/.test(options.instanceId)) throw usage(`instance id "${options.instanceId}" must be 1-128 printable characters without spaces`);
  if (!options.network) return undefined;
  const cidr = parseCidr(options.network.address);
  const { gateway, dns = [] } = options.network;
  if (gateway !== undefined && isIP(gateway) !== cidr.family) throw usage(`gateway "${gateway}" is not an IPv${cidr.family} address`);
  for (const server of dns) if (isIP(server) === 0) throw usage(`DNS server "${server}" is not an IP address`);
  return cidr;
}

/** The three NoCloud files as text (what makeNoCloudSeed writes). */
export function renderSeedFiles(options: SeedOptions): SeedFiles {
  const cidr = validate(options);
  const metaData = stringify({ 'instance-id': options.instanceId ?? `iid-${options.hostname}`, 'local-hostname': options.hostname });
  const ethernet: Record<string, unknown> = { match: { name: 'e*' } };
  if (cidr && options.network) {
    ethernet.addresses = [`${cidr.address}/${cidr.prefix}`];
    if (options.network.gateway) ethernet.routes = [{ to: cidr.family === 4 ? '0.0.0.0/0' : '::/0', via: options.network.gateway }];
    if (options.network.dns?.length) ethernet.nameservers = { addresses: options.network.dns };
  } else {
    ethernet.dhcp4 = true;
  }
  const networkConfig = stringify({ version: 2, ethernets: { primary: ethernet } });
  return { 'meta-data': metaData, 'user-data': options.userData ?? '#cloud-config\n', 'network-config': networkConfig };
}

const MIB = 1024 * 1024;

/**
 * Writes a NoCloud seed image at outPath (atomically): a FAT filesystem
 * labelled CIDATA, sized to its content (at least 2 MiB), made by
 * mformat/mcopy from mtools.
 */
export async function makeNoCloudSeed(options: SeedOptions, outPath: string): Promise<SeedFiles> {
  const files = renderSeedFiles(options);
  const work = await mkdtemp(join(tmpdir(), 'hostme-seed-'));
  const temp = join(dirname(outPath), `.${basename(outPath)}.tmp-${process.pid}`);
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1', MTOOLSRC: '/dev/null' };
  const mtool = (binary: string, args: string[]) => runTool(binary, args, { env, failureCode: 'seed-tool-failed' });
  try {
    const content = Object.values(files).reduce((sum, text) => sum + Buffer.byteLength(text), 0);
    const size = Math.max(2, Math.ceil((content * 1.1) / MIB) + 1) * MIB;
    await writeFile(temp, '');
    await truncate(temp, size);
    // 64 heads x 32 sectors: a geometry mformat accepts for any size; FAT12/16 chosen by size.
    await mtool('mformat', ['-i', temp, '-v', 'CIDATA', '-h', '64', '-s', '32', '-T', String(size / 512), '::']);
    for (const [name, text] of Object.entries(files)) {
      const local = join(work, name);
      await writeFile(local, text);
      await mtool('mcopy', ['-i', temp, '-o', local, `::${name}`]);
    }
    await rename(temp, outPath);
    return files;
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

export interface CmdlinePresetOptions {
  hostname: string;
  network?: SeedNetwork;
  /** Interface for ip= (default eth0). */
  device?: string;
}

/**
 * Kernel command-line fragments for guests without cloud-init:
 * `ip=ADDR::GW:MASK:HOSTNAME:DEV:off[:DNS0[:DNS1]]` (kernel IP autoconfig,
 * IPv4 only) and `hostname=NAME` (read by the guest's init scripts).
 */
export function cmdlinePreset(options: CmdlinePresetOptions): string[] {
  const cidr = validate({ hostname: options.hostname, network: options.network });
  const fragments: string[] = [];
  if (cidr && options.network) {
    if (cidr.family !== 4) throw usage('the kernel ip= parameter takes IPv4 only; use a cloud-init seed for IPv6');
    const dns = (options.network.dns ?? []).filter((d) => isIP(d) === 4).slice(0, 2);
    const fields = [cidr.address, '', options.network.gateway ?? '', prefixToNetmask(cidr.prefix), options.hostname, options.device ?? 'eth0', 'off', ...dns];
    fragments.push(`ip=${fields.join(':')}`);
  }
  fragments.push(`hostname=${options.hostname}`);
  return fragments;
}
