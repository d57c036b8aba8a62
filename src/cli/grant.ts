import { resolve } from 'node:path';
import type { Command } from 'commander';
import { HostmeError } from '../errors.js';
import { RUNTIME_KINDS, controlGrants } from '../grants/runtime.js';
import { CacheDir } from '../runner/cache-dir.js';

/** `hostme grant NAME KIND` and `hostme revoke NAME KIND`: change a running instance's grants (within 1 s). */
export function registerGrant(program: Command): void {
  for (const op of ['grant', 'revoke'] as const) {
    program
      .command(op)
      .description(`${op} a running instance ${op === 'grant' ? 'access to' : 'its access to'} a feature; kinds: ${RUNTIME_KINDS.join(', ')} (recorded in its audit log)`)
      .argument('<instance>', 'the instance name given to hostme run --instance')
      .argument('<kind>', RUNTIME_KINDS.join(' | '))
      .argument('[value]', 'egress: HOST:PORT; dir: PATH[:ro|:rw] (default ro); disk: ro|rw (the image\'s disks) or NAME[:ro|:rw] (an extra disk); port: P[:G][/tcp|/udp]; cpus: host CPUs (0.5); revoke without a value: all of that kind')
      .option('--cache <dir>', 'cache directory (default $HOSTME_CACHE_DIR or ~/.cache/hostme)')
      .action(async (instance: string, kind: string, value: string | undefined, options: { cache?: string }) => {
        if (!(RUNTIME_KINDS as readonly string[]).includes(kind)) throw new HostmeError('usage', `${op} ${instance} ${kind}: kinds that change at runtime: ${RUNTIME_KINDS.join(', ')}`);
        const dir = new CacheDir(options.cache).instanceDir(instance);
        // A folder is named relative to where the user is; the instance checks it against its allowed root.
        // (revoke also takes the export's name, which has no "/".)
        if (kind === 'dir' && value !== undefined && (op === 'grant' || value.includes('/') || value.startsWith('.'))) {
          const m = /^(.*?)(:ro|:rw)?$/s.exec(value)!;
          value = resolve(m[1]!) + (m[2] ?? '');
        }
        await controlGrants(dir, { op, kind, ...(value !== undefined ? { value } : {}) });
        process.stderr.write(`hostme: ${kind}${value !== undefined ? ` ${value}` : ''} ${op === 'grant' ? 'granted to' : 'revoked from'} ${instance}\n`);
      });
  }
}
