import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { HostmeError, errorMessage } from '../errors.js';
import { EgressProxy, parseEgress } from '../grants/egress.js';
import { FolderServer } from '../folder/server.js';
import { askControl, listenControl } from '../grants/control-socket.js';
import { emit } from './output.js';

/**
 * Plumbing: each caretaker started and inspected on its own, like `hostme
 * nbd`. `hostme caretaker egress` (the CONNECT proxy) and `hostme caretaker
 * folder DIR` (the 9P2000.L server) listen on a unix socket; beside it,
 * `SOCKET.ctl` (mode 0600) answers `{"op":"status"}` with what the caretaker
 * grants and has served, which `hostme caretaker status SOCKET` prints.
 */
export function registerCaretaker(program: Command): void {
  const caretaker = program.command('caretaker').description('start or inspect one caretaker on its own (plumbing: the egress proxy, the folder server)');
  caretaker
    .command('egress')
    .description('the egress CONNECT proxy: lets through exactly the allowed HOST:PORT')
    .requiredOption('--socket <path>', 'unix socket to listen on')
    .option('--allow <items...>', 'HOST:PORT allowed (DNS name or IPv4, port 1..65535)')
    .option('--json', 'machine-readable output')
    .action(async (options: { socket: string; allow?: string[]; json?: boolean }) => {
      const allow = (options.allow ?? []).map((item) => {
        try {
          return parseEgress(item);
        } catch (err) {
          throw new HostmeError('usage', `--allow ${item}: ${errorMessage(err)}`);
        }
      });
      const proxy = await EgressProxy.listen(path.resolve(options.socket), allow);
      const status = () => ({ caretaker: 'egress', socket: proxy.socketPath, allowed: proxy.allowed.map((e) => `${e.host}:${e.port}`), stats: { ...proxy.stats } });
      await serveUntilStopped(proxy.socketPath, status, () => proxy.close(), options, () => `egress proxy on ${proxy.socketPath}, allowing ${status().allowed.join(', ') || 'nothing'} (Ctrl-C stops)`);
    });
  caretaker
    .command('folder')
    .description('the 9P2000.L folder server: serves DIR read-only (default) or read-write, confined to it')
    .argument('<dir>', 'the folder to serve')
    .requiredOption('--socket <path>', 'unix socket to listen on')
    .option('--rw', 'serve read-write (default read-only)')
    .option('--ro', 'serve read-only (the default)')
    .option('--name <aname>', "the name a client attaches (default: the folder's base name)")
    .option('--json', 'machine-readable output')
    .action(async (dir: string, options: { socket: string; rw?: boolean; ro?: boolean; name?: string; json?: boolean }) => {
      if (options.rw && options.ro) throw new HostmeError('usage', '--ro and --rw: choose one');
      const folder = path.resolve(dir);
      if (!(await stat(folder).catch(() => undefined))?.isDirectory()) throw new HostmeError('usage', `${dir}: not a folder`);
      const name = options.name ?? FolderServer.exportName(folder);
      if (!/^[^/\0]{1,255}$/.test(name)) throw new HostmeError('usage', `--name ${name}: one path component`);
      const server = await FolderServer.listen(path.resolve(options.socket), [{ name, path: folder, mode: options.rw ? 'rw' : 'ro' }]);
      const status = () => ({ caretaker: 'folder', socket: server.socketPath, exports: server.granted, connections: server.connections });
      await serveUntilStopped(server.socketPath, status, () => server.close(), options, () => `folder server on ${server.socketPath}: ${folder} as "${name}" ${options.rw ? 'read-write' : 'read-only'} (Ctrl-C stops)`);
    });
  caretaker
    .command('status')
    .description("print a running caretaker's status (from SOCKET.ctl)")
    .argument('<socket>', 'the socket the caretaker listens on')
    .option('--json', 'machine-readable output')
    .action(async (socket: string, options: { json?: boolean }) => {
      const answer = await askStatus(`${path.resolve(socket)}.ctl`);
      emit(options, answer, () => Object.entries(answer).map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`).join('\n'));
    });
}

/** Prints the start line, serves SOCKET.ctl, and runs until SIGINT/SIGTERM. */
async function serveUntilStopped(socket: string, status: () => Record<string, unknown>, close: () => Promise<void>, options: { json?: boolean }, human: () => string): Promise<void> {
  const control = await listenControl(`${socket}.ctl`, async (line) => {
    let op: unknown;
    try {
      op = (JSON.parse(line) as { op?: unknown }).op;
    } catch {
      op = undefined;
    }
    return op === 'status' ? { ok: true, ...status() } : { ok: false, code: 'usage', message: 'a request is {"op":"status"}' };
  });
  emit(options, status(), human);
  await new Promise<void>((done) => {
    const stop = () => void Promise.all([control.close(), close()]).then(() => done(), () => done());
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}

async function askStatus(ctl: string): Promise<Record<string, unknown>> {
  const text = await askControl(ctl, { op: 'status' }, { waitMs: 5000, maxAnswer: 1 << 20 }).catch((err: unknown) => {
    throw new HostmeError('caretaker-not-running', `no caretaker answers at ${ctl} (${errorMessage(err)})`, { socket: ctl });
  });
  try {
    const parsed = JSON.parse(text) as Record<string, unknown>;
    delete parsed.ok;
    return parsed;
  } catch {
    throw new HostmeError('caretaker-not-running', `the caretaker's answer is not JSON: ${text.slice(0, 200)}`);
  }
}
