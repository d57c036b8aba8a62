import type { Command } from 'commander';
import { openRepository } from '../repo/repository.js';
import { verifyImage } from '../repo/verify.js';
import { HostmeError } from '../errors.js';
import { emit, formatBytes, parseImageSpec } from './output.js';
import { ProgressBar } from './progress.js';
import { addTrustOption, trustFrom } from './trust.js';

export function registerVerify(program: Command): void {
  addTrustOption(
    program
      .command('verify')
      .description('check the signature and every object of an image')
      .argument('<repo>', 'repository directory or URL')
      .argument('<image>', 'NAME or NAME@VERSION'),
  )
    .option('--json', 'machine-readable output')
    .action(async (location: string, spec: string, options: { json?: boolean; pubkey?: string }) => {
      const { name, version } = parseImageSpec(spec);
      const repo = openRepository(location);
      const bar = new ProgressBar('verifying');
      const report = await verifyImage(repo, name, version, { ...(await trustFrom(options)), onProgress: (d, t) => bar.status(`${d}/${t} objects`) });
      bar.done();
      // With --json a failed verify prints a single {error} document that carries the report.
      const failure = report.ok
        ? undefined
        : new HostmeError('verify-failed', `${report.bad.length} bad object(s) in ${name}@${report.version}; re-pack or re-push the image`, { bad: report.bad.length, report });
      if (!failure || !options.json) emit(options, report, () => {
        const head = `${report.ok ? 'OK' : 'FAILED'} ${name}@${report.version}: signature by ${report.signer.slice(0, 16)} valid, ${report.objectsChecked} objects (${formatBytes(report.bytesChecked)}) checked`;
        const lines = report.bad.map((b) => `  ${b.problem} object ${b.id} (${b.blob}, chunk ${b.chunks.slice(0, 5).join(',')}${b.chunks.length > 5 ? ',…' : ''}) at ${b.where}: ${b.detail}`);
        return [head, ...lines].join('\n');
      });
      if (failure) throw failure;
    });
}
