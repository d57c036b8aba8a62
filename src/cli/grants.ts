import type { Command } from 'commander';
import { controlGrants, readAudit, type AuditEntry } from '../grants/runtime.js';
import { CacheDir } from '../runner/cache-dir.js';
import { isHostmeError } from '../errors.js';
import { terminalSafe } from './output.js';
import { describeConnection, readConnections } from '../grants/connections.js';

/** `hostme grants NAME`: the running instance's grants and its audit log (the log alone when it is not running). */
export function registerGrants(program: Command): void {
  program
    .command('grants')
    .description("show an instance's current grants and its audit log")
    .argument('<instance>', 'the instance name given to hostme run --instance')
    .option('--cache <dir>', 'cache directory (default $HOSTME_CACHE_DIR or ~/.cache/hostme)')
    .option('--json', 'print as JSON')
    .action(async (instance: string, options: { cache?: string; json?: boolean }) => {
      const dir = new CacheDir(options.cache).instanceDir(instance);
      const status = await controlGrants(dir, { op: 'status' }).catch((err: unknown) => {
        if (isHostmeError(err, 'instance-not-running')) return undefined;
        throw err;
      });
      const log = (status?.log as AuditEntry[] | undefined) ?? (await readAudit(dir));
      const connections = await readConnections(dir);
      if (options.json) {
        process.stdout.write(JSON.stringify({ instance, running: status !== undefined, granted: status?.granted ?? null, connections, log }, null, 2) + '\n');
        return;
      }
      const granted = status?.granted as Record<string, boolean | number | string | string[] | Record<string, string>> | undefined;
      const lines = [`${terminalSafe(instance)}: ${granted ? 'running' : 'not running'}`];
      const shown = (on: boolean | number | string | string[] | Record<string, string>): string => {
        if (Array.isArray(on)) return on.length ? on.map(terminalSafe).join(', ') : 'none';
        if (typeof on === 'object') return Object.entries(on).map(([k, v]) => `${terminalSafe(k)} ${terminalSafe(v)}`).join(', ') || 'none';
        if (typeof on === 'boolean') return on ? 'granted' : 'denied';
        return terminalSafe(String(on));
      };
      if (granted) for (const [kind, on] of Object.entries(granted)) lines.push(`  ${kind}: ${shown(on)}`);
      lines.push(`connections: ${connections.length ? connections.map((c) => terminalSafe(describeConnection(c, instance))).join(', ') : 'none'}`);
      lines.push('audit log:');
      for (const e of log) lines.push(`  ${e.time} ${e.op} ${e.kind}${e.value !== undefined ? ` ${terminalSafe(e.value)}` : ''}${e.granted !== undefined ? ` (${shown(e.granted)})` : ''}${e.ok ? '' : ` FAILED: ${terminalSafe(e.error ?? '')}`}`);
      if (log.length === 0) lines.push('  (empty)');
      process.stdout.write(lines.join('\n') + '\n');
    });
}
