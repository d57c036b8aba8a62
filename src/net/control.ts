/**
 * The machine's switch process and how `hostme` talks to it. The first
 * `hostme run --net` starts it (detached, shared by every later run; nobody
 * starts a daemon by hand). Requests are one JSON line over a unix socket
 * in a 0700 state directory: only the user who owns it can talk to it.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, openSync, closeSync } from 'node:fs';
import net from 'node:net';
import { homedir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { Writable } from 'node:stream';
import { HostmeError } from '../errors.js';

/** $HOSTME_NET_DIR, else $XDG_STATE_HOME/hostme/net, else ~/.local/state/hostme/net. */
export function netStateDir(): string {
  return path.resolve(process.env.HOSTME_NET_DIR || path.join(process.env.XDG_STATE_HOME || path.join(homedir(), '.local', 'state'), 'hostme', 'net'));
}

export function controlSocket(dir: string): string {
  return path.join(dir, 'control.sock');
}

export type ControlRequest =
  | { op: 'ping' }
  | { op: 'attach'; network: string; instance: string; socket: string; site?: string; hub?: string; token?: string; services?: Array<{ port: number; socket: string }>; isolated?: boolean }
  | { op: 'connect'; from: string; to: string; port: number; on: boolean }
  | { op: 'bandwidth'; instance: string; mbit?: number }
  | { op: 'ls' }
  | { op: 'leases'; network: string }
  | { op: 'token'; network: string }
  | { op: 'capture'; network: string }
  | { op: 'stop' };

export interface ControlReply {
  ok: boolean;
  code?: string;
  message?: string;
  [key: string]: unknown;
}

const MAX_REPLY = 4 << 20;

/** Sends one request; with `stream`, bytes after the reply line are piped there until the switch or caller closes. */
export function controlRequest(dir: string, request: ControlRequest, stream?: Writable): Promise<ControlReply> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(controlSocket(dir));
    let buf = Buffer.alloc(0);
    let replied = false;
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (!replied) reject(new HostmeError('net-switch-down', `the network switch at ${dir} is not running (${err.code ?? err.message})`, { dir }));
    });
    socket.on('connect', () => socket.write(JSON.stringify(request) + '\n'));
    socket.on('data', (chunk: Buffer) => {
      if (replied) return;
      buf = Buffer.concat([buf, chunk]);
      const newline = buf.indexOf(10);
      if (newline < 0) {
        if (buf.length > MAX_REPLY) socket.destroy();
        return;
      }
      replied = true;
      let reply: ControlReply;
      try {
        reply = JSON.parse(buf.subarray(0, newline).toString('utf8')) as ControlReply;
      } catch {
        socket.destroy();
        reject(new HostmeError('net-switch-protocol', 'the network switch sent an unreadable reply'));
        return;
      }
      if (!reply.ok) {
        socket.destroy();
        reject(new HostmeError(reply.code ?? 'net-switch-error', reply.message ?? 'the network switch refused the request', { dir }));
        return;
      }
      if (stream) {
        const rest = buf.subarray(newline + 1);
        if (rest.length) stream.write(rest);
        socket.pipe(stream);
        socket.once('close', () => resolve(reply));
        stream.once('error', () => socket.destroy());
        return;
      }
      socket.end();
      resolve(reply);
    });
    socket.once('close', () => {
      if (!replied) reject(new HostmeError('net-switch-protocol', 'the network switch closed the connection without a reply', { dir }));
    });
  });
}

const here = path.dirname(fileURLToPath(import.meta.url));

/** Starts the machine's switch process unless it already answers; waits until it does. */
export async function ensureSwitch(dir = netStateDir(), timeoutMs = 20_000): Promise<void> {
  if (await controlRequest(dir, { op: 'ping' }).then(() => true, () => false)) return;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const log = openSync(path.join(dir, 'switch.log'), 'a', 0o600);
  try {
    const child = spawn(process.execPath, [path.resolve(here, '..', '..', 'bin', 'hostme.js'), 'net', 'switchd', '--dir', dir], {
      detached: true,
      stdio: ['ignore', log, log],
    });
    child.unref();
  } finally {
    closeSync(log);
  }
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    await sleep(100);
    if (await controlRequest(dir, { op: 'ping' }).then(() => true, () => false)) return;
  }
  throw new HostmeError('net-switch-start', `the network switch did not start within ${timeoutMs / 1000} s; see ${path.join(dir, 'switch.log')}`, { dir });
}

/**
 * Puts a QEMU guest (listening on `socket`, see VmSpec.overlay) on `network`
 * of this machine's switch, starting the switch if needed.
 */
export async function attachGuest(options: { network: string; instance: string; socket: string; site?: string; dir?: string; hub?: string; token?: string; services?: Array<{ port: number; socket: string }>; isolated?: boolean }): Promise<{ subnet: string }> {
  const dir = options.dir ?? netStateDir();
  await ensureSwitch(dir);
  const reply = await controlRequest(dir, { op: 'attach', network: options.network, instance: options.instance, socket: options.socket, site: options.site, hub: options.hub, token: options.token, services: options.services, isolated: options.isolated });
  return { subnet: String(reply.subnet) };
}

/** A stable MAC for an instance on a network (QEMU's 52:54:00 prefix); the switch translates if two collide. */
export function overlayMac(network: string, instance: string): string {
  const digest = createHash('sha256').update(`${network}\0${instance}`).digest();
  return ['52', '54', '00', ...[...digest.subarray(0, 3)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}
