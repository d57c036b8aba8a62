import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { BootOnceRequest } from '../runner/profile.js';
import { loadOrCreateDefaultKey } from '../pack/publisher-key.js';
import { parseImageSpec, parsePositiveInt } from './output.js';

export interface BootOnceOptions {
  repo: string;
  until: string;
  version?: string;
  key?: string;
  timeout: string;
  json?: boolean;
}

/**
 * The shared shape of the commands that boot an image once from a local
 * repository until a ready point and publish a derived version (profile,
 * snapshot): same argument, options and defaults. The caller adds the action.
 */
export function bootOnceCommand(program: Command, name: string, description: string, untilHelp: string): Command {
  return program
    .command(name)
    .description(description)
    .argument('<image>', 'NAME or NAME@VERSION')
    .requiredOption('--repo <dir>', 'local repository directory')
    .option('--until <regex>', untilHelp, 'HOSTME-READY')
    .option('--version <v>', 'version to publish (default: next integer)')
    .option('--key <keyfile>', 'publisher private key (default: ~/.config/hostme/publisher.key)')
    .option('--timeout <seconds>', 'give up when the ready point has not come after this many seconds', '300')
    .option('--json', 'machine-readable output');
}

export async function bootOnceRequest(spec: string, options: BootOnceOptions): Promise<BootOnceRequest> {
  const { name, version } = parseImageSpec(spec);
  const { key } = await loadOrCreateDefaultKey(options.key);
  return {
    repoDir: resolve(options.repo),
    name,
    version,
    newVersion: options.version,
    key,
    until: new RegExp(options.until),
    timeoutMs: parsePositiveInt(options.timeout) * 1000,
  };
}
