import type { Command } from 'commander';
import { loadPublicKey } from '../pack/publisher-key.js';
import type { TrustOptions } from '../repo/repository.js';

export function addTrustOption(command: Command): Command {
  return command.option('--pubkey <file>', 'require manifests signed by this public (or private) key');
}

export async function trustFrom(options: { pubkey?: string }): Promise<TrustOptions> {
  return options.pubkey ? { trusted: [await loadPublicKey(options.pubkey)] } : {};
}
