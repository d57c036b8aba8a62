import { rmSync } from 'node:fs';
import type { Command } from 'commander';
import { HostmeError } from '../errors.js';
import { DESTINATIONS } from '../export/destinations/index.js';
import { exportImage, type ExportProgress } from '../export/export-image.js';
import { EXPORT_FORMATS } from '../export/formats/index.js';
import type { SiteReference } from '../export/iso.js';
import { killActiveTools } from '../export/tools.js';
import { emit, formatBytes, parseImageSpec } from './output.js';
import { ProgressBar } from './progress.js';
import { addTrustOption, trustFrom } from './trust.js';

interface ExportCliOptions {
  repo: string;
  format: string;
  to: string;
  compress?: boolean;
  provider?: string;
  workDir?: string;
  bootloader?: boolean;
  siteLink?: string;
  hub?: string;
  joinToken?: string;
  pubkey?: string;
  json?: boolean;
}

export function registerExport(program: Command): void {
  addTrustOption(
    program
      .command('export')
      .description('export an image\'s disk 0 as a standard VM disk or appliance, to a directory, HTTP PUT URL or S3 bucket')
      .argument('<image>', 'NAME or NAME@VERSION')
      .requiredOption('--repo <dir|url>', 'repository directory or URL')
      .requiredOption('--format <format>', `one of: ${EXPORT_FORMATS.map((f) => f.name).join(', ')}`)
      .requiredOption('--to <dest>', `destination: ${DESTINATIONS.map((d) => d.example).join(' | ')}`)
      .option('--compress', 'qcow2: compress clusters')
      .option('--provider <provider>', 'vagrant: libvirt or virtualbox', undefined)
      .option('--no-bootloader', 'direct-boot images: do not write a BIOS bootloader with the kernel into the disk (the disk is then byte-identical to the published one; boot it with -kernel)')
      .option('--site-link <url>', 'iso: the hostme link written into the ISO (default: REPO/i/NAME when --repo is a URL)')
      .option('--hub <url>', 'iso: the hub URL written into the ISO (default: the repository URL)')
      .option('--join-token <token>', 'iso: join token of an invite-only site, written into the ISO (or HOSTME_JOIN_TOKEN)')
      .option('--work-dir <dir>', 'where to build temporary files (default: the destination directory, or the OS temp dir)'),
  )
    .option('--json', 'machine-readable summary on stdout')
    .addHelpText('after', `\nFormats:\n${EXPORT_FORMATS.map((f) => `  ${f.name.padEnd(8)} ${f.description}`).join('\n')}\n\nEnvironment: HOSTME_EXPORT_TOKEN (HTTP bearer token), AWS_ENDPOINT_URL or HOSTME_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION (S3).`)
    .action(async (spec: string, options: ExportCliOptions) => {
      const { name, version } = parseImageSpec(spec);
      if (options.provider !== undefined && options.provider !== 'libvirt' && options.provider !== 'virtualbox') {
        throw new HostmeError('usage', `--provider must be libvirt or virtualbox, not "${options.provider}"`);
      }
      const bar = new ProgressBar('export');
      let lastStep = '';
      const onProgress = (event: ExportProgress) => {
        if (event.phase === 'materialize') bar.update(event.done, event.total, 'reading chunks');
        else if (event.phase === 'upload') bar.update(event.done, event.total, `uploading ${event.file}`);
        else if (event.step !== lastStep) {
          lastStep = event.step;
          bar.done();
          process.stderr.write(`hostme: ${event.step}\n`);
        }
      };
      // Ctrl-C / kill: do not leave a half-built .hostme-export-* directory behind.
      let workDir: string | undefined;
      const onSignal = (signal: NodeJS.Signals) => {
        killActiveTools();
        if (workDir) rmSync(workDir, { recursive: true, force: true });
        bar.done();
        process.stderr.write(`hostme: export interrupted (${signal}); temporary files removed\n`);
        process.exit(signal === 'SIGINT' ? 130 : 143);
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      const result = await exportImage({
        repo: options.repo,
        name,
        version,
        format: options.format,
        to: options.to,
        compress: options.compress,
        provider: options.provider as 'libvirt' | 'virtualbox' | undefined,
        workDir: options.workDir,
        bootloader: options.bootloader,
        site: siteFrom(options, name),
        ...(await trustFrom(options)),
        onProgress,
        onWorkDir: (dir) => (workDir = dir),
      }).finally(() => {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      });
      bar.done();
      emit(options, result, () =>
        [
          `exported ${result.image} as ${result.format} to ${result.destination} in ${result.seconds} s`,
          ...result.files.map((f) => `  ${f.url}  ${formatBytes(f.size)}  sha256 ${f.sha256}`),
        ].join('\n'),
      );
    });
}

/** --site-link/--hub/--join-token → the ISO's website reference (undefined: exportImage derives it from --repo). */
function siteFrom(options: ExportCliOptions, name: string): SiteReference | undefined {
  const token = options.joinToken ?? (process.env.HOSTME_JOIN_TOKEN || undefined);
  if (!options.siteLink && !options.hub && !token) return undefined;
  const repoUrl = /^https?:\/\//i.test(options.repo) ? options.repo.replace(/\/+$/, '') : undefined;
  const link = options.siteLink ?? (repoUrl ? `${repoUrl}/i/${name}` : undefined);
  if (!link) throw new HostmeError('usage', '--hub/--join-token need --site-link when --repo is a local directory');
  return { link, hub: options.hub ?? repoUrl, ...(token ? { token } : {}) };
}
