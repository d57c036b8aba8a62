import { resolve } from 'node:path';
import type { Command } from 'commander';
import { snapshotImage } from '../snapshot/index.js';
import { loadOrCreateDefaultKey } from '../pack/publisher-key.js';
import { emit, formatBytes, parseImageSpec, parsePositiveInt } from './output.js';
import { ProgressBar } from './progress.js';

export function registerSnapshot(program: Command): void {
  program
    .command('snapshot')
    .description('boot an i686 image once in v86, save the machine at the ready point and publish it as a new version the browser restores in seconds')
    .argument('<image>', 'NAME or NAME@VERSION')
    .requiredOption('--repo <dir>', 'local repository directory')
    .option('--until <regex>', 'the ready point: save once the serial console matches this', 'HOSTME-READY')
    .option('--version <v>', 'version of the snapshot image (default: next integer)')
    .option('--key <keyfile>', 'publisher private key (default: ~/.config/hostme/publisher.key)')
    .option('--timeout <seconds>', 'give up when the ready point has not come after this many seconds', '300')
    .option('--json', 'machine-readable output')
    .action(async (spec: string, options: { repo: string; until: string; version?: string; key?: string; timeout: string; json?: boolean }) => {
      const { name, version } = parseImageSpec(spec);
      const { key } = await loadOrCreateDefaultKey(options.key);
      const progress = new ProgressBar('snapshot');
      const started = performance.now();
      const timer = setInterval(() => progress.status(`${step} (${Math.round((performance.now() - started) / 1000)} s)`), 1000);
      let step = 'starting';
      try {
        const result = await snapshotImage({
          repoDir: resolve(options.repo),
          name,
          version,
          newVersion: options.version,
          key,
          until: new RegExp(options.until),
          timeoutMs: parsePositiveInt(options.timeout) * 1000,
          onStep: (_, detail) => {
            step = detail;
            progress.status(detail);
          },
        });
        progress.done();
        emit(
          options,
          result,
          () =>
            `snapshot of ${name}@${result.baseVersion} at ${(result.msToReady / 1000).toFixed(1)} s into its boot: ${formatBytes(result.stateBytes)} of machine state, ` +
            `${formatBytes(result.storedBytes)} stored in ${result.chunks} chunks (${formatBytes(result.newStoredBytes)} new); published ${name}@${result.version} (${result.emulator})`,
        );
      } finally {
        clearInterval(timer);
        progress.done();
      }
    });
}
