import { resolve } from 'node:path';
import type { Command } from 'commander';
import { CacheDir, defaultCacheLimit } from '../runner/cache-dir.js';
import { resetInstance } from '../runner/instance.js';
import { commitInstance } from '../runner/commit.js';
import { TrustPins } from '../runner/trust-pins.js';
import { loadOrCreateDefaultKey } from '../pack/publisher-key.js';
import { emit, formatBytes, parseSize } from './output.js';
import { ProgressBar } from './progress.js';

export function registerInstanceCommands(program: Command): void {
  program
    .command('reset')
    .description("delete an instance's changes (its copy-on-write overlay)")
    .argument('<name>', 'instance name (the image name unless --instance was used)')
    .option('--cache <dir>', 'cache directory')
    .option('--json', 'machine-readable output')
    .action(async (name: string, options: { cache?: string; json?: boolean }) => {
      const existed = await resetInstance(new CacheDir(options.cache).instanceDir(name));
      emit(options, { instance: name, existed }, () => (existed ? `reset ${name}: its changes are gone` : `no changes stored for ${name}`));
    });

  program
    .command('commit')
    .description('pack an instance (image + your changes) as a new version in a repository')
    .argument('<name>', 'instance name')
    .requiredOption('--repo <dir>', 'target repository directory')
    .option('--version <v>', 'new version (default: next integer)')
    .option('--key <keyfile>', 'publisher private key')
    .option('--cache <dir>', 'cache directory')
    .option('--json', 'machine-readable output')
    .action(async (name: string, options: { repo: string; version?: string; key?: string; cache?: string; json?: boolean }) => {
      const { key } = await loadOrCreateDefaultKey(options.key);
      const bar = new ProgressBar('committing');
      const result = await commitInstance({ instance: name, repoDir: resolve(options.repo), version: options.version, key, cacheDir: options.cache, onProgress: (d, t) => bar.status(`${d}/${t} chunks`) });
      bar.done();
      emit(options, result, () => `committed ${name} as ${result.name}@${result.version} (from ${result.baseVersion}): ${result.changedChunks} changed chunks, ${result.reusedChunks} reused, ${formatBytes(result.newStoredBytes)} new`);
    });

  const cache = program.command('cache').description('inspect and manage the local chunk cache');
  cache
    .command('ls')
    .description('show cache size, objects and instances')
    .option('--cache <dir>', 'cache directory')
    .option('--json', 'machine-readable output')
    .action(async (options: { cache?: string; json?: boolean }) => {
      const dir = new CacheDir(options.cache);
      const usage = await dir.usage();
      const instances = await dir.instances();
      const limit = defaultCacheLimit();
      emit(options, { root: dir.root, ...usage, limit, instances }, () =>
        [`cache ${dir.root}: ${usage.objects} objects, ${formatBytes(usage.bytes)} of ${formatBytes(limit)}`, ...instances.map((i) => `  instance ${i.name}: ${formatBytes(i.bytes)} of changes`)].join('\n'),
      );
    });
  cache
    .command('gc')
    .description('evict least recently used objects down to a size limit')
    .option('--max-size <size>', 'limit (default $HOSTME_CACHE_MAX_BYTES or 20G)')
    .option('--cache <dir>', 'cache directory')
    .option('--json', 'machine-readable output')
    .action(async (options: { maxSize?: string; cache?: string; json?: boolean }) => {
      const result = await new CacheDir(options.cache).gc(options.maxSize ? parseSize(options.maxSize) : defaultCacheLimit());
      emit(options, result, () => `removed ${result.removed} objects (${formatBytes(result.freedBytes)}), ${formatBytes(result.keptBytes)} kept`);
    });
  cache
    .command('clear')
    .description('delete every cached object and manifest (instances are kept)')
    .option('--cache <dir>', 'cache directory')
    .option('--json', 'machine-readable output')
    .action(async (options: { cache?: string; json?: boolean }) => {
      const dir = new CacheDir(options.cache);
      await dir.clear();
      emit(options, { cleared: dir.root }, () => `cleared ${dir.root}`);
    });

  program
    .command('trust')
    .description('manage publisher keys pinned on first use')
    .requiredOption('--forget <name>', 'forget the pinned key of an image')
    .option('--cache <dir>', 'cache directory')
    .option('--json', 'machine-readable output')
    .action(async (options: { forget: string; cache?: string; json?: boolean }) => {
      const removed = await new TrustPins(new CacheDir(options.cache).root).forget(options.forget);
      emit(options, { forgotten: removed }, () => `forgot ${removed} pinned key(s) for ${options.forget}`);
    });
}
