import type { Command } from 'commander';
import { openRepository } from '../repo/repository.js';
import { pushImage } from '../repo/push.js';
import { emit, formatBytes, parseImageSpec } from './output.js';
import { ProgressBar } from './progress.js';

export function registerPush(program: Command): void {
  program
    .command('push')
    .description('publish an image version from a local repository to a remote one (HTTP PUT, objects first, manifest last)')
    .argument('<repo>', 'local repository directory')
    .argument('<image>', 'NAME or NAME@VERSION')
    .argument('<target>', 'target repository URL (hostme serve --token) or directory')
    .option('--token <token>', 'bearer token (default: $HOSTME_PUSH_TOKEN)')
    .option('--json', 'machine-readable output')
    .action(async (repo: string, spec: string, target: string, options: { token?: string; json?: boolean }) => {
      const { name, version } = parseImageSpec(spec);
      const bar = new ProgressBar('pushing');
      const result = await pushImage(openRepository(repo), openRepository(target, { token: options.token ?? process.env.HOSTME_PUSH_TOKEN }), name, version, (d, t) => bar.status(`${d}/${t} objects`));
      bar.done();
      emit(options, result, () => `pushed ${result.image} to ${target}: ${result.uploaded} objects uploaded (${formatBytes(result.bytes)}), ${result.skipped} already there`);
    });
}
