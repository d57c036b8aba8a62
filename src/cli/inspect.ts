import type { Command } from 'commander';
import { openRepository } from '../repo/repository.js';
import { inspectImage } from '../repo/inspect.js';
import { emit, formatBytes, parseImageSpec } from './output.js';
import { addTrustOption, trustFrom } from './trust.js';

export function registerInspect(program: Command): void {
  addTrustOption(
    program
      .command('inspect')
      .description('show an image manifest, sizes, chunk statistics and sharing with other images')
      .argument('<repo>', 'repository directory or URL')
      .argument('<image>', 'NAME or NAME@VERSION'),
  )
    .option('--json', 'machine-readable output')
    .action(async (location: string, spec: string, options: { json?: boolean; pubkey?: string }) => {
      const { name, version } = parseImageSpec(spec);
      const report = await inspectImage(openRepository(location), name, version, await trustFrom(options));
      const m = report.manifest;
      emit(options, report, () =>
        [
          `${m.name}@${m.version}  created ${m.created}${m.description ? `\n  ${m.description}` : ''}`,
          `  hardware   ${m.hardware.arch}, ${m.hardware.memoryMiB} MiB, ${m.hardware.cpus} cpu`,
          `  boot       ${m.boot.mode === 'direct' ? `direct kernel, cmdline "${m.boot.cmdline}"` : 'firmware (BIOS) from disk 0'}`,
          `  signed by  ${report.signer}`,
          `  digest     ${report.manifestDigest}`,
          ...report.blobs.map(
            (b) =>
              `  ${b.label.padEnd(10)} ${formatBytes(b.size)} in ${b.chunks} chunks of ${formatBytes(b.chunkSize)}: ${b.holes} holes, ${b.distinctObjects} objects${b.storedBytes !== undefined ? `, ${formatBytes(b.storedBytes)} stored` : ''}`,
          ),
          m.prefetch ? `  prefetch   ${m.prefetch.length} chunks in boot order` : '  prefetch   none',
          m.memorySnapshot ? `  snapshot   ${formatBytes(m.memorySnapshot.size)} (${m.memorySnapshot.emulator})` : '',
          ...report.sharing.map((s) => `  shares ${s.sharedObjects} objects (${(s.share * 100).toFixed(0)}%) with ${s.image}@${s.version}`),
        ]
          .filter(Boolean)
          .join('\n'),
      );
    });
}
