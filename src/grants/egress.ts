/**
 * The egress caretaker: an HTTP CONNECT proxy the guest reaches at
 * GATEWAY:3128 (the switch splices that TCP port to this unix socket, see
 * src/net/gateway-tcp.ts). It opens a host connection only to a host:port on
 * the instance's allow-list, compared exactly (lowercase name or IPv4
 * literal, port); everything else is answered 403. Taking a host:port off the
 * list closes its open tunnels at once.
 *
 * Limits: the request head is at most 8 KiB and must arrive within 10 s; 64
 * tunnels at a time; the host connection must open within 10 s.
 */
import { rm } from 'node:fs/promises';
import net from 'node:net';
import { HostmeError } from '../errors.js';
import type { EgressGrant } from './grant-set.js';

export const EGRESS_PORT = 3128;
const MAX_HEAD = 8192;
const HEAD_TIMEOUT_MS = 10_000;
const CONNECT_TIMEOUT_MS = 10_000;
const MAX_TUNNELS = 64;

export interface EgressStats { allowed: number; denied: number; open: number }

export class EgressProxy {
  private allow: EgressGrant[];
  private readonly tunnels = new Set<{ target: EgressGrant; sockets: net.Socket[] }>();
  private readonly server: net.Server;
  readonly stats: EgressStats = { allowed: 0, denied: 0, open: 0 };

  private constructor(allow: EgressGrant[], readonly socketPath: string) {
    this.allow = allow.map((e) => ({ host: e.host.toLowerCase(), port: e.port }));
    this.server = net.createServer((client) => this.handle(client));
  }

  static async listen(socketPath: string, allow: EgressGrant[]): Promise<EgressProxy> {
    const proxy = new EgressProxy(allow, socketPath);
    await rm(socketPath, { force: true });
    await new Promise<void>((resolve, reject) => {
      proxy.server.once('error', reject);
      proxy.server.listen(socketPath, () => resolve());
    });
    return proxy;
  }

  get allowed(): EgressGrant[] {
    return this.allow.map((e) => ({ ...e }));
  }

  private permits(target: EgressGrant): boolean {
    return this.allow.some((e) => e.host === target.host && e.port === target.port);
  }

  grant(target: EgressGrant): void {
    const t = { host: target.host.toLowerCase(), port: target.port };
    if (!this.permits(t)) this.allow.push(t);
  }

  /** Takes host:port (or, without one, everything) off the list and closes the tunnels it no longer permits. */
  revoke(target?: EgressGrant): void {
    this.allow = target ? this.allow.filter((e) => !(e.host === target.host.toLowerCase() && e.port === target.port)) : [];
    for (const tunnel of this.tunnels) {
      if (!this.permits(tunnel.target)) for (const s of tunnel.sockets) s.destroy();
    }
  }

  private handle(client: net.Socket): void {
    let head = Buffer.alloc(0);
    client.setTimeout(HEAD_TIMEOUT_MS, () => client.destroy());
    client.on('error', () => {});
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_HEAD) this.refuse(client, 431, 'Request Header Fields Too Large');
        return;
      }
      client.off('data', onData);
      client.pause();
      client.setTimeout(0);
      this.open(client, head.subarray(0, end).toString('latin1'), head.subarray(end + 4));
    };
    client.on('data', onData);
  }

  private refuse(client: net.Socket, status: number, reason: string): void {
    client.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
  }

  private open(client: net.Socket, head: string, rest: Buffer): void {
    const m = /^CONNECT ([a-z0-9.-]{1,253}):(\d{1,5}) HTTP\/1\.[01]\r?$/im.exec(head.split('\n')[0] ?? '');
    if (!m) return this.refuse(client, 405, 'Only CONNECT host:port');
    const target = { host: m[1]!.toLowerCase(), port: Number(m[2]) };
    if (!this.permits(target) || target.port < 1 || target.port > 65535) {
      this.stats.denied++;
      return this.refuse(client, 403, 'Forbidden by the environment\'s grants');
    }
    if (this.tunnels.size >= MAX_TUNNELS) return this.refuse(client, 503, 'Too many tunnels');
    this.stats.allowed++;
    const upstream = net.connect({ host: target.host, port: target.port });
    const tunnel = { target, sockets: [client, upstream] };
    this.tunnels.add(tunnel);
    this.stats.open++;
    let connected = false;
    const close = () => {
      if (!this.tunnels.delete(tunnel)) return;
      this.stats.open--;
      upstream.destroy();
      // Never connected (refused, timed out): the guest gets a 502 before the close.
      if (connected || client.destroyed) client.destroy();
      else this.refuse(client, 502, 'Bad Gateway');
    };
    upstream.setTimeout(CONNECT_TIMEOUT_MS, () => upstream.destroy());
    upstream.on('error', () => {});
    upstream.once('connect', () => {
      upstream.setTimeout(0);
      // Revoked while connecting: the tunnel was destroyed already.
      if (!this.tunnels.has(tunnel)) return;
      connected = true;
      client.write('HTTP/1.1 200 Connection established\r\n\r\n');
      if (rest.length) upstream.write(rest);
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
    upstream.once('close', close);
    client.once('close', close);
  }

  async close(): Promise<void> {
    for (const tunnel of this.tunnels) for (const s of tunnel.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    await rm(this.socketPath, { force: true });
  }
}

/** "host:port" from the CLI or the control socket. */
export function parseEgress(text: string): EgressGrant {
  const m = /^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?):(\d{1,5})$/i.exec(text);
  const port = m ? Number(m[3]) : 0;
  if (!m || port < 1 || port > 65535 || m[1]!.includes('..')) throw new HostmeError('usage', `egress "${text}": expected HOST:PORT (a DNS name or IPv4 address, port 1..65535)`);
  return { host: m[1]!.toLowerCase(), port };
}
