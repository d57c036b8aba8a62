/**
 * The published-port caretaker: a host port forwarded to a guest port,
 * granted and revoked while the VM runs.
 *
 * TCP: hostme listens on the host port itself and splices each connection
 * to a loopback port that QEMU's user networking forwards to the guest
 * (`hostfwd_add` through QMP's human-monitor-command, added and removed
 * with the grant). Revoking closes hostme's listener, destroys every open
 * connection at once and removes QEMU's forward; it never depends on the
 * guest. UDP has no connections to cut: a UDP grant is QEMU's own forward
 * on the host port (`hostfwd_add` / `hostfwd_remove`).
 *
 * Needs the VM's user-mode NIC (netdev n0, restricted): present when the run
 * started with a published port or --internet.
 */
import net from 'node:net';
import { HostmeError, errorMessage } from '../errors.js';
import { freeLoopbackPort } from '../host/ports.js';

export interface PortGrant { hostAddr: string; hostPort: number; guestPort: number; proto: 'tcp' | 'udp' }

/** Sends one HMP command line; resolves with its text output. */
export type Hmp = (commandLine: string) => Promise<string>;

const NETDEV = 'n0';
/** Open connections per published TCP port. */
const MAX_CONNECTIONS = 256;

interface Forward { grant: PortGrant; server?: net.Server; internal?: number; sockets: Set<net.Socket> }

/** `P`, `P:G`, either with `/tcp` or `/udp` (as --allow-port); the host side is 127.0.0.1. */
export function parsePortGrant(text: string): PortGrant {
  const m = /^(\d{1,5})(?::(\d{1,5}))?(?:\/(tcp|udp))?$/.exec(text);
  const check = (p: string | undefined) => (p === undefined || (Number(p) >= 1 && Number(p) <= 65535));
  if (!m || !check(m[1]) || !check(m[2])) throw new HostmeError('usage', `port "${text}": PORT or HOSTPORT:GUESTPORT (1..65535), optionally /tcp or /udp`);
  return { hostAddr: '127.0.0.1', hostPort: Number(m[1]), guestPort: Number(m[2] ?? m[1]), proto: (m[3] as 'tcp' | 'udp' | undefined) ?? 'tcp' };
}

export function describePort(p: PortGrant): string {
  return `${p.hostAddr}:${p.hostPort}->${p.guestPort}/${p.proto}`;
}

export class PortCaretaker {
  private readonly forwards = new Map<string, Forward>();

  constructor(private readonly hmp: Hmp) {}

  get granted(): PortGrant[] {
    return [...this.forwards.values()].map((f) => ({ ...f.grant }));
  }

  private async hostfwd(add: boolean, rule: string): Promise<void> {
    const out = (await this.hmp(`${add ? 'hostfwd_add' : 'hostfwd_remove'} ${NETDEV} ${rule}`)).trim();
    // HMP answers in prose: nothing (add) or "… removed" on success.
    if (/could not|not found|invalid|error|unknown|usage|no such/i.test(out)) throw new HostmeError('grant-failed', `QEMU ${add ? 'hostfwd_add' : 'hostfwd_remove'} ${rule}: ${out}`);
  }

  /** Publishes a port; a port already published (same host port and protocol) is replaced. */
  async grant(grant: PortGrant): Promise<void> {
    const key = `${grant.proto}:${grant.hostPort}`;
    if (this.forwards.has(key)) await this.revokeOne(key);
    if (grant.proto === 'udp') {
      await this.hostfwd(true, `udp:${grant.hostAddr}:${grant.hostPort}-:${grant.guestPort}`);
      this.forwards.set(key, { grant, sockets: new Set() });
      return;
    }
    const internal = await freeLoopbackPort();
    await this.hostfwd(true, `tcp:127.0.0.1:${internal}-:${grant.guestPort}`);
    const forward: Forward = { grant, internal, sockets: new Set() };
    const server = net.createServer((client) => this.splice(forward, client));
    server.maxConnections = MAX_CONNECTIONS;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(grant.hostPort, grant.hostAddr, () => resolve());
      });
    } catch (err) {
      await this.hostfwd(false, `tcp:127.0.0.1:${internal}`).catch(() => {});
      throw new HostmeError('port-busy', `cannot publish ${grant.hostAddr}:${grant.hostPort}: ${errorMessage(err)}`, { port: grant.hostPort });
    }
    server.on('error', () => {});
    forward.server = server;
    this.forwards.set(key, forward);
  }

  private splice(forward: Forward, client: net.Socket): void {
    const guest = net.connect(forward.internal!, '127.0.0.1');
    for (const s of [client, guest]) {
      forward.sockets.add(s);
      s.on('error', () => { client.destroy(); guest.destroy(); });
      s.on('close', () => forward.sockets.delete(s));
    }
    client.pipe(guest);
    guest.pipe(client);
  }

  private async revokeOne(key: string): Promise<void> {
    const forward = this.forwards.get(key)!;
    this.forwards.delete(key);
    const { grant } = forward;
    if (grant.proto === 'udp') return this.hostfwd(false, `udp:${grant.hostAddr}:${grant.hostPort}`);
    forward.server?.close();
    for (const s of forward.sockets) s.destroy();
    await this.hostfwd(false, `tcp:127.0.0.1:${forward.internal}`);
  }

  /** Records a UDP forward QEMU was started with (-netdev user,hostfwd=…), so it can be revoked. */
  adopt(grant: PortGrant): void {
    if (grant.proto !== 'udp') throw new HostmeError('usage', 'only a UDP forward is adopted (TCP passes hostme\'s listener)');
    this.forwards.set(`udp:${grant.hostPort}`, { grant, sockets: new Set() });
  }

  /** Takes one published port back (HOSTPORT and protocol), or all; open TCP connections end at once. */
  async revoke(which?: { hostPort: number; proto: 'tcp' | 'udp' }): Promise<void> {
    if (!which) {
      for (const key of [...this.forwards.keys()]) await this.revokeOne(key);
      return;
    }
    const key = `${which.proto}:${which.hostPort}`;
    if (!this.forwards.has(key)) throw new HostmeError('usage', `port ${which.hostPort}/${which.proto} is not published`);
    await this.revokeOne(key);
  }

  /** Closes hostme's listeners and connections (QEMU's forwards go with QEMU). */
  close(): void {
    for (const forward of this.forwards.values()) {
      forward.server?.close();
      for (const s of forward.sockets) s.destroy();
    }
    this.forwards.clear();
  }
}
