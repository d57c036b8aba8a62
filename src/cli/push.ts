import type { Command } from 'commander';
import { HostmeError } from '../errors.js';
import { openRepository } from '../repo/repository.js';
import type { S3Transport } from '../repo/s3-transport.js';
import { pushImage } from '../repo/push.js';
import { emit, formatBytes, parseImageSpec } from './output.js';
import { ProgressBar } from './progress.js';

export function registerPush(program: Command): void {
  program
    .command('push')
    .description('publish an image version from a local repository to a remote one (HTTP PUT, objects first, manifest last)')
    .argument('<repo>', 'local repository directory')
    .argument('<image>', 'NAME or NAME@VERSION')
    .argument('<target>', 'target repository: URL (hostme serve --token), directory, or s3://BUCKET/PREFIX (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID…)')
    .option('--token <token>', 'bearer token (default: $HOSTME_PUSH_TOKEN)')
    .option('--cors', 's3: allow browsers on any origin to read the bucket (GET/HEAD, Range), so the run page can boot from it')
    .option('--json', 'machine-readable output')
    .action(async (repo: string, spec: string, target: string, options: { token?: string; json?: boolean; cors?: boolean }) => {
      const { name, version } = parseImageSpec(spec);
      if (options.cors && !/^s3:\/\//i.test(target)) throw new HostmeError('usage', '--cors applies to s3:// targets only');
      const bar = new ProgressBar('pushing');
      const to = openRepository(target, { token: options.token ?? process.env.HOSTME_PUSH_TOKEN });
      try {
        if (options.cors) await (to.transport as S3Transport).allowCors();
        const result = await pushImage(openRepository(repo), to, name, version, (d, t) => bar.status(`${d}/${t} objects`));
        bar.done();
        emit(options, result, () => `pushed ${result.image} to ${target}: ${result.uploaded} objects uploaded (${formatBytes(result.bytes)}), ${result.skipped} already there`);
      } finally {
        await to.transport.close?.();
      }
    });
}
