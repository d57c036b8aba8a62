import { resolve } from 'node:path';
import { mkdir } from 'node:fs/promises';
import type { Command } from 'commander';
import { packImage } from '../pack/pack-image.js';
import { loadOrCreateDefaultKey } from '../pack/publisher-key.js';
import { openRepository } from '../repo/repository.js';
import { HostmeError } from '../errors.js';
import { emit, formatBytes, parsePositiveInt, parseSize } from './output.js';
import { ProgressBar } from './progress.js';

interface PackOptions {
  repo: string;
  name: string;
  version?: string;
  key?: string;
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  memory?: string;
  cpus?: string;
  arch?: string;
  chunkSize?: string;
  description?: string;
  mirror?: string[];
  json?: boolean;
}

export function registerPack(program: Command): void {
  program
    .command('pack')
    .description('chunk, compress and sign a disk image into a repository')
    .argument('<disk>', 'raw disk or any format qemu-img reads')
    .requiredOption('--repo <dir>', 'repository directory (created if missing)')
    .requiredOption('--name <name>', 'image name')
    .option('--version <v>', 'version (default: next integer)')
    .option('--key <keyfile>', 'publisher private key (default: ~/.config/hostme/publisher.key, created on first use)')
    .option('--kernel <file>', 'kernel for direct boot (ELF vmlinux or bzImage)')
    .option('--initrd <file>', 'initrd for direct boot')
    .option('--cmdline <text>', 'kernel command line')
    .option('--memory <MiB>', 'guest memory in MiB', '256')
    .option('--cpus <n>', 'virtual CPUs', '1')
    .option('--arch <arch>', 'x86_64 or i686', 'x86_64')
    .option('--chunk-size <size>', 'chunk size, power of two 64K..4M (default 256K)')
    .option('--description <text>', 'one-line description shown on the landing page')
    .option('--mirror <url...>', 'mirror URLs recorded in the manifest')
    .option('--json', 'machine-readable output')
    .action(async (disk: string, options: PackOptions) => {
      if (options.arch !== 'x86_64' && options.arch !== 'i686') throw new HostmeError('usage', `--arch must be x86_64 or i686, not ${options.arch}`);
      if ((options.initrd || options.cmdline) && !options.kernel) throw new HostmeError('usage', '--initrd and --cmdline need --kernel');
      const repoDir = resolve(options.repo);
      await mkdir(repoDir, { recursive: true });
      const { key, created, path } = await loadOrCreateDefaultKey(options.key);
      if (created && !options.json) process.stderr.write(`created publisher key ${path}\n`);
      const bar = new ProgressBar('packing');
      const summary = await packImage({
        repo: openRepository(repoDir),
        workDir: repoDir,
        disk,
        name: options.name,
        version: options.version,
        key,
        kernel: options.kernel,
        initrd: options.initrd,
        cmdline: options.cmdline,
        memoryMiB: parsePositiveInt(options.memory ?? '256'),
        cpus: parsePositiveInt(options.cpus ?? '1'),
        arch: options.arch,
        chunkSize: options.chunkSize ? parseSize(options.chunkSize) : undefined,
        description: options.description,
        mirrors: options.mirror,
        onProgress: (step, done, total) => bar.update(done, total, step),
      });
      bar.done();
      emit(options, summary, () =>
        [
          `packed ${summary.name}@${summary.version} into ${repoDir}`,
          `  virtual size  ${formatBytes(summary.virtualSize)} (${summary.inputFormat})`,
          `  chunks        ${summary.chunks} of ${formatBytes(summary.chunkSize)}, ${summary.holes} holes`,
          `  objects       ${summary.newChunks} new, ${summary.reusedChunks} reused`,
          `  stored        ${formatBytes(summary.newStoredBytes)} new, ${formatBytes(summary.storedBytes)} referenced`,
          `  throughput    ${summary.throughputMBps.toFixed(0)} MB/s (${summary.seconds.toFixed(1)} s)`,
          `  signed by     ${summary.keyId.slice(0, 16)}`,
        ].join('\n'),
      );
    });
}
