import { appendFile, stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { controlRequest, netStateDir } from '../net/control.js';
import { auditLog } from '../grants/runtime.js';
import { recordConnection } from '../grants/connections.js';
import { CacheDir } from '../runner/cache-dir.js';
import { parsePositiveInt, terminalSafe } from './output.js';
import { HostmeError } from '../errors.js';

/**
 * `hostme connect A B --port P` / `hostme disconnect A B --port P`: on the
 * network both run on, A may reach B's TCP port P (and B answer), nothing
 * else between them (the switch's per-port policy, docs/grants.md). Matters
 * for environments that are not members of that network (no
 * --allow-net=network:NAME): members already reach each other.
 */
export function registerConnect(program: Command): void {
  for (const op of ['connect', 'disconnect'] as const) {
    program
      .command(op)
      .description(op === 'connect' ? "let instance A reach instance B's TCP port on their network, and nothing else" : 'take back what hostme connect opened')
      .argument('<a>', 'the instance that connects')
      .argument('<b>', 'the instance that serves the port')
      .requiredOption('--port <port>', 'TCP port of B')
      .option('--dir <dir>', 'switch state directory (default $HOSTME_NET_DIR or ~/.local/state/hostme/net)')
      .option('--cache <dir>', 'cache directory (for the instances\' audit logs)')
      .action(async (a: string, b: string, options: { port: string; dir?: string; cache?: string }) => {
        const port = parsePositiveInt(options.port);
        if (port > 65535) throw new HostmeError('usage', `--port ${options.port}: a port is 1..65535`);
        const reply = await controlRequest(options.dir ?? netStateDir(), { op: 'connect', from: a, to: b, port, on: op === 'connect' });
        // Both instances' audit logs say so (when they are this user's instances).
        const cache = new CacheDir(options.cache);
        for (const [self, other] of [[a, `to ${b}:${port}`], [b, `from ${a} on port ${port}`]] as const) {
          const dir = cache.instanceDir(self);
          if (!(await stat(dir).catch(() => undefined))?.isDirectory()) continue;
          const entry = { time: new Date().toISOString(), op: op === 'connect' ? 'grant' : 'revoke', kind: 'connect', value: other, ok: true };
          await appendFile(auditLog(dir), JSON.stringify(entry) + '\n', { mode: 0o600 }).catch(() => {});
          // Part of the instance's state: hostme grants shows it, running or not.
          await recordConnection(dir, { from: a, to: b, port }, op === 'connect').catch(() => {});
        }
        process.stderr.write(`hostme: ${terminalSafe(a)} ${op === 'connect' ? 'can now reach' : 'no longer reaches'} ${terminalSafe(b)}:${port} on network ${terminalSafe(String(reply.network))}\n`);
      });
  }
}
