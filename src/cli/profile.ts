import { resolve } from 'node:path';
import type { Command } from 'commander';
import { profileImage } from '../runner/profile.js';
import { loadOrCreateDefaultKey } from '../pack/publisher-key.js';
import { emit, formatBytes, parseImageSpec, parsePositiveInt } from './output.js';

export function registerProfile(program: Command): void {
  program
    .command('profile')
    .description('boot an image once, record its boot working set and publish it as a new version with a prefetch list')
    .argument('<image>', 'NAME or NAME@VERSION')
    .requiredOption('--repo <dir>', 'local repository directory')
    .option('--until <regex>', 'the ready point', 'HOSTME-READY')
    .option('--version <v>', 'version of the profiled image (default: next integer)')
    .option('--key <keyfile>', 'publisher private key (default: ~/.config/hostme/publisher.key)')
    .option('--timeout <seconds>', 'give up after this many seconds', '300')
    .option('--json', 'machine-readable output')
    .action(async (spec: string, options: { repo: string; until: string; version?: string; key?: string; timeout: string; json?: boolean }) => {
      const { name, version } = parseImageSpec(spec);
      const { key } = await loadOrCreateDefaultKey(options.key);
      const result = await profileImage({
        repoDir: resolve(options.repo),
        name,
        version,
        newVersion: options.version,
        key,
        until: new RegExp(options.until),
        timeoutMs: parsePositiveInt(options.timeout) * 1000,
      });
      emit(options, result, () => `profiled ${name}@${result.baseVersion}: ${result.chunks} chunks (${formatBytes(result.bytes)}) read before ready; published ${name}@${result.version} with the prefetch list`);
    });
}
