import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';

/**
 * IP address rules of the swarm (docs/peers.md "Addresses"): which peer
 * addresses a tracker may hand to an asker, and which a runner may dial.
 * Only literal IPs are ever used: no host names (no DNS rebinding), no URLs
 * from the wire (a peer URL is built here from address + port).
 */

/** '::ffff:1.2.3.4' → '1.2.3.4'; lower case; undefined for anything that is not an IP literal. */
export function normalizeIp(raw: string | undefined): string | undefined {
  if (!raw) return undefined;
  const ip = raw.toLowerCase().replace(/^::ffff:(\d+\.\d+\.\d+\.\d+)$/, '$1');
  return isIP(ip) ? ip : undefined;
}

function v4Bytes(ip: string): number[] {
  return ip.split('.').map(Number);
}

/** Eight 16-bit groups of an IPv6 literal. */
function v6Groups(ip: string): number[] {
  const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, undefined];
  const parse = (s: string | undefined) => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const h = parse(head);
  const t = parse(tail);
  return [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
}

/** Loopback, RFC 1918, link-local, CGNAT, unique-local: reachable only on some LAN. */
export function isPrivateIp(ip: string): boolean {
  if (isIP(ip) === 4) {
    const [a, b] = v4Bytes(ip) as [number, number];
    return a === 10 || a === 127 || (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168) || (a === 169 && b === 254) || (a === 100 && b >= 64 && b < 128) || a === 0;
  }
  const g = v6Groups(ip);
  const first = g[0]!;
  return g.every((x, i) => (i < 7 ? x === 0 : x <= 1)) || (first & 0xfe00) === 0xfc00 || (first & 0xffc0) === 0xfe80;
}

/** Never dialled: unspecified, multicast, broadcast. */
export function isUnusableIp(ip: string): boolean {
  if (isIP(ip) === 4) {
    const [a] = v4Bytes(ip) as [number];
    return a === 0 || a >= 224;
  }
  const g = v6Groups(ip);
  return g.every((x) => x === 0) || (g[0]! & 0xff00) === 0xff00;
}

/**
 * Same LAN, as the tracker sees it: the same IPv4 /24 or IPv6 /64 (both
 * loopback counts as one LAN: one machine). A heuristic the tracker can apply
 * without knowing netmasks; runners check again against their interfaces.
 */
export function sameSubnet(a: string, b: string): boolean {
  const fa = isIP(a);
  if (fa !== isIP(b) || fa === 0) return false;
  if (fa === 4) {
    if (a.startsWith('127.') && b.startsWith('127.')) return true;
    return v4Bytes(a).slice(0, 3).join('.') === v4Bytes(b).slice(0, 3).join('.');
  }
  return v6Groups(a).slice(0, 4).join(':') === v6Groups(b).slice(0, 4).join(':');
}

/** The subnets this machine is on (address + netmask of each interface). */
export interface LocalNet {
  address: string;
  netmask: string;
}

export function localNets(): LocalNet[] {
  return Object.values(networkInterfaces())
    .flatMap((list) => list ?? [])
    .map((i) => ({ address: normalizeIp(i.address) ?? '', netmask: i.netmask }))
    .filter((i) => i.address !== '');
}

function maskedEqual(a: number[], b: number[], mask: number[]): boolean {
  return a.every((x, i) => (x & mask[i]!) === (b[i]! & mask[i]!));
}

/** True when `ip` lies inside one of `nets` (this machine's own LANs). */
export function onLocalNet(ip: string, nets: LocalNet[] = localNets()): boolean {
  const family = isIP(ip);
  return nets.some((n) => {
    if (isIP(n.address) !== family || isIP(n.netmask) !== family) return false;
    return family === 4 ? maskedEqual(v4Bytes(ip), v4Bytes(n.address), v4Bytes(n.netmask)) : maskedEqual(v6Groups(ip), v6Groups(n.address), v6Groups(n.netmask));
  });
}

/**
 * Whether a runner may dial a peer the tracker named: a literal IP, a port in
 * 1..65535, never unusable ranges, and a private address only when it lies on
 * one of this machine's own networks.
 */
export function dialable(address: string, port: number, nets?: LocalNet[]): boolean {
  const ip = normalizeIp(address);
  if (!ip || ip !== address.toLowerCase() || !Number.isInteger(port) || port < 1 || port > 65535) return false;
  if (isUnusableIp(ip)) return false;
  return !isPrivateIp(ip) || onLocalNet(ip, nets);
}

/** http://IP:PORT built from parts the caller checked (never a URL from the wire). */
export function peerUrl(address: string, port: number): string {
  return isIP(address) === 6 ? `http://[${address}]:${port}` : `http://${address}:${port}`;
}
