import type { Command } from 'commander';
import { createKeyFiles } from '../pack/publisher-key.js';
import { emit, type OutputOptions } from './output.js';

export function registerKeygen(program: Command): void {
  program
    .command('keygen')
    .description('create a publisher key pair (KEYFILE, mode 0600, and KEYFILE.pub)')
    .argument('<keyfile>', 'where to write the private key')
    .option('--json', 'machine-readable output')
    .action(async (keyfile: string, options: OutputOptions) => {
      const { keyId, publicPath } = await createKeyFiles(keyfile);
      emit(options, { keyfile, publicKey: publicPath, keyId }, () => `created publisher key ${keyfile} (public key ${publicPath})\nfingerprint ${keyId}`);
    });
}
