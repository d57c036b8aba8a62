import { resolve } from 'node:path';
import { readFile } from 'node:fs/promises';
import { HostmeError, errorMessage } from '../errors.js';
import type { SeedOptions } from '../seed/nocloud.js';
import type { Command } from 'commander';
import { parseInputPairs, readInputsFile } from '../build/inputs.js';
import { loadOrCreateDefaultKey } from '../pack/publisher-key.js';
import { emit, formatBytes } from './output.js';

interface BuildOptions {
  input: string[];
  inputs?: string;
  repo: string;
  key?: string;
  workDir?: string;
  cacheDir?: string;
  seed?: string;
  out?: string;
  json?: boolean;
}

async function readSeedFile(file: string): Promise<SeedOptions> {
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new HostmeError('usage', `--seed ${file}: cannot read it (${err.code ?? err.message})`);
  });
  try {
    return JSON.parse(text) as SeedOptions;
  } catch (err) {
    throw new HostmeError('usage', `--seed ${file}: not JSON (${errorMessage(err)})`);
  }
}

export function registerBuild(program: Command): void {
  program
    .command('build')
    .description('build an image from a build manifest (hostme.json / hostme.yaml) and publish it into a repository')
    .argument('<manifest>', 'hostme.json or hostme.yaml')
    .option('--input <key=value>', 'input value (repeatable)', (value: string, previous: string[]) => [...previous, value], [] as string[])
    .option('--inputs <file.json>', 'input values from a JSON object (--input wins)')
    .requiredOption('--repo <dir>', 'repository directory (created if missing)')
    .option('--key <keyfile>', 'publisher private key (default: ~/.config/hostme/publisher.key, created on first use)')
    .option('--work-dir <dir>', 'scratch directory (default: the OS temp dir)')
    .option('--cache-dir <dir>', 'cache for downloaded bases and .debs (default: ~/.cache/hostme/build)')
    .option('--seed <seed.json>', 'bake a cloud-init NoCloud seed into the image: {"hostname", "instanceId"?, "userData"?, "network"?: {"address", "gateway", "dns"}}')
    .option('--out <dir>', 'also write the built files there: disk.raw, kernel, initrd.img and image.json (paths, cmdline, hardware)')
    .option('--json', 'machine-readable output')
    .action(async (manifest: string, options: BuildOptions) => {
      const inputs = { ...(options.inputs ? await readInputsFile(options.inputs) : {}), ...parseInputPairs(options.input) };
      const { key, created, path } = await loadOrCreateDefaultKey(options.key);
      if (created) process.stderr.write(`created publisher key ${path}\n`);
      const started = performance.now();
      const result = await (await import('../build/index.js')).buildImage({
        manifestPath: manifest,
        inputs,
        repoDir: resolve(options.repo),
        key,
        workDir: options.workDir,
        cacheDir: options.cacheDir,
        seed: options.seed ? await readSeedFile(options.seed) : undefined,
        outDir: options.out,
        onStep: (step, done, total) => {
          if (step !== 'done') process.stderr.write(`hostme build: [${done + 1}/${total}] ${step}\n`);
        },
        log: (line) => process.stderr.write(`hostme build:       ${line}\n`),
      });
      const seconds = (performance.now() - started) / 1000;
      emit(options, { ...result, seconds }, () =>
        [
          `built ${result.name}@${result.version} into ${resolve(options.repo)} in ${seconds.toFixed(1)} s`,
          `  disk          ${formatBytes(result.pack.virtualSize)}, sha256 ${result.diskSha256}`,
          `  objects       ${result.pack.newChunks} new, ${result.pack.reusedChunks} reused (${formatBytes(result.pack.newStoredBytes)} new stored)`,
          `  manifest      ${result.manifestDigest}`,
          `  signed by     ${result.pack.keyId.slice(0, 16)}`,
          ...(result.outFiles ? [`  files         ${resolve(options.out!)} (image.json)`] : []),
        ].join('\n'),
      );
    });
}
