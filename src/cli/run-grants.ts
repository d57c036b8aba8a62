/**
 * `hostme run`'s grant options (Deno style, docs/grants.md): registered on
 * commander, turned back into flag strings for src/grants/flags.ts, which
 * parses and validates them (so the CLI and `applyGrantFlags` agree).
 */
import type { Command } from 'commander';
import { applyGrantFlags } from '../grants/flags.js';
import { loadGrantFile } from '../grants/flags.js';
import { emptyGrants, type GrantSet } from '../grants/grant-set.js';

const VALUED = ['net', 'dir', 'port', 'disk', 'disk-io', 'bandwidth', 'cpus', 'memory'] as const;
const SWITCHES = ['console', 'screen'] as const;

function collect(value: string | boolean | undefined, previous: Array<string | boolean | undefined> = []): Array<string | boolean | undefined> {
  return [...previous, value];
}

export function addGrantOptions(command: Command): Command {
  command
    .option('--grants <file>', 'grant file (JSON or YAML, docs/grants.md); flags add to it, --deny-* flags win')
    .option('--yes', 'grant everything the image asks for without asking')
    .option('--allow-net <items>', 'HOST:PORT (egress through the gateway proxy) or network:NAME, comma-separated', collect)
    .option('--deny-net [items]', 'deny these, or without a value all networks and egress', collect)
    .option('--allow-dir <items>', 'host folder PATH[:ro|:rw] served at the gateway (9P), default ro', collect)
    .option('--deny-dir [items]', 'deny these folders, or all', collect)
    .option('--allow-port <items>', 'publish host port P[:GUEST][/tcp|/udp] (fixed at start)', collect)
    .option('--deny-port [items]', 'deny these published ports, or all', collect)
    .option('--allow-disk <items>', 'IMAGE[:ro|:cow|:rw]', collect)
    .option('--deny-disk [items]', 'deny these disks, or all', collect)
    .option('--allow-disk-io <rate>', 'disk I/O limit BYTES[K|M|G][:OPS] per second (hostme grant NAME disk-io changes it)', collect)
    .option('--deny-disk-io', 'no disk I/O limit from the grant file', collect)
    .option('--allow-bandwidth <mbit>', 'overlay network bandwidth in Mbit/s each way (hostme grant NAME bandwidth changes it)', collect)
    .option('--deny-bandwidth', 'no bandwidth limit from the grant file', collect)
    .option('--allow-cpus <n>', 'vCPUs', collect)
    .option('--deny-cpus', 'image default vCPUs', collect)
    .option('--allow-memory <mib>', 'memory in MiB', collect)
    .option('--deny-memory', 'image default memory', collect)
    .option('--allow-console', 'the console (always on for hostme run in a terminal)', collect)
    .option('--deny-console', 'no console', collect)
    .option('--allow-screen', 'a screen', collect)
    .option('--deny-screen', 'no screen', collect);
  return command;
}

function camel(verb: 'allow' | 'deny', kind: string): string {
  return verb + kind.split('-').map((part) => part[0]!.toUpperCase() + part.slice(1)).join('');
}

/** The grant flags given, as `--allow-KIND=VALUE` strings. */
export function grantFlagsOf(options: Record<string, unknown>): string[] {
  const flags: string[] = [];
  for (const kind of [...VALUED, ...SWITCHES]) {
    for (const verb of ['allow', 'deny'] as const) {
      const values = options[camel(verb, kind)] as Array<string | boolean | undefined> | undefined;
      // A switch (--allow-console) reaches collect() with no value: undefined, or true from commander's own default.
      for (const value of values ?? []) flags.push(value === true || value === undefined ? `--${verb}-${kind}` : `--${verb}-${kind}=${String(value)}`);
    }
  }
  return flags;
}

/** The grant set of a run: the grant file (if any), then the flags. */
export async function grantsOf(options: Record<string, unknown>): Promise<{ set: GrantSet; given: boolean }> {
  const file = options.grants as string | undefined;
  const flags = grantFlagsOf(options);
  const base = file ? await loadGrantFile(file) : emptyGrants();
  return { set: applyGrantFlags(flags, base), given: Boolean(file) || flags.length > 0 };
}
