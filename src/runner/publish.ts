import { HostmeError } from '../errors.js';
import type { HostForward, VmNetdev } from '../vm/qemu.js';

/** A host port forwarded to a guest port (`hostme run --publish`). */
export type PortPublish = Required<HostForward>;

const PUBLISH = /^(?:(\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):)?(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/;

function port(text: string, what: string, allowZero: boolean): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value > 65535 || value < (allowZero ? 0 : 1)) throw new HostmeError('usage', `--publish: ${what} port ${text} is not in 1..65535`);
  return value;
}

/**
 * Parse `[HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|udp]` (docker -p). The host side
 * is bound to 127.0.0.1 unless an address is given: publishing to the LAN is
 * a decision the user spells out.
 */
export function parsePublish(spec: string): PortPublish {
  const m = PUBLISH.exec(spec.trim());
  if (!m) throw new HostmeError('usage', `--publish ${spec}: expected [HOSTADDR:]HOSTPORT:GUESTPORT[/tcp|udp], e.g. 8080:80`);
  const hostAddr = (m[1] ?? '127.0.0.1').replace(/^\[|\]$/g, '');
  if (!hostAddr.includes(':') && hostAddr.split('.').some((octet) => Number(octet) > 255)) throw new HostmeError('usage', `--publish ${spec}: ${hostAddr} is not an IPv4 address`);
  return { hostAddr, hostPort: port(m[2]!, 'host', false), guestPort: port(m[3]!, 'guest', false), proto: (m[4] as 'tcp' | 'udp' | undefined) ?? 'tcp' };
}

/**
 * The user-mode network for a run: none unless something is published or
 * the internet is asked for; published-only guests are restricted (they
 * cannot reach the host or the internet, only answer on their forwards).
 */
export function userNetwork(publish: PortPublish[] | undefined, internet: boolean | undefined): VmNetdev | undefined {
  if (!publish?.length && !internet) return undefined;
  const seen = new Set<string>();
  for (const p of publish ?? []) {
    const key = `${p.proto}:${p.hostAddr}:${p.hostPort}`;
    if (seen.has(key)) throw new HostmeError('usage', `--publish: host port ${p.hostAddr}:${p.hostPort}/${p.proto} is given twice`);
    seen.add(key);
  }
  return { hostfwd: publish ?? [], restrict: !internet };
}
