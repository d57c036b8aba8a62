import type { Command } from 'commander';
import { openRepository } from '../repo/repository.js';
import { emit } from './output.js';

export function registerLs(program: Command): void {
  program
    .command('ls')
    .description('list the images and versions in a repository')
    .argument('<repo>', 'repository directory or URL')
    .option('--json', 'machine-readable output')
    .action(async (location: string, options: { json?: boolean }) => {
      const listing = await openRepository(location).listing();
      emit(options, listing, () => {
        const names = Object.keys(listing.images).sort();
        if (names.length === 0) return `no images in ${location}`;
        return names
          .map((name) => {
            const image = listing.images[name]!;
            const versions = image.versions.map((v) => (v.version === image.latest ? `${v.version} (latest)` : v.version));
            return `${name}  ${versions.join(', ')}`;
          })
          .join('\n');
      });
    });
}
