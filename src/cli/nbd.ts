import type { Command } from 'commander';
import { parseImageLink } from '../runner/link.js';
import { CacheDir } from '../runner/cache-dir.js';
import { resolveImage } from '../runner/image-source.js';
import { reportSourceProblems } from '../runner/source-reporter.js';
import { openImageDisks } from '../device/image-disks.js';
import { FetchScheduler } from '../store/fetch-scheduler.js';
import { NbdServer } from '../nbd/server.js';
import type { BlockDevice } from '../device/block-device.js';
import { emit } from './output.js';

export function registerNbd(program: Command): void {
  program
    .command('nbd')
    .description('export a published image read-only over NBD (lazy, verified, cached) without booting it')
    .argument('<link>', 'landing page URL, repository URL or directory')
    .argument('[name]', 'image name when the link is a repository')
    .requiredOption('--socket <path>', 'unix socket to listen on (exports disk0, disk1, … and "" for disk 0)')
    .option('--cache <dir>', 'cache directory')
    .option('--mirror <url...>', 'additional mirrors of the repository (manifests and objects)')
    .option('--json', 'machine-readable output')
    .action(async (link: string, name: string | undefined, options: { socket: string; cache?: string; mirror?: string[]; json?: boolean }) => {
      const resolved = await resolveImage(parseImageLink(link, name), { cache: new CacheDir(options.cache), extraMirrors: options.mirror });
      // One line per source that was refused, slow or unreachable, and when the cache had to stand in.
      if (resolved.offline) process.stderr.write(`hostme: repository unreachable (${resolved.offline}); serving from the local cache\n`);
      for (const notice of resolved.notices) process.stderr.write(`hostme: ${notice}\n`);
      const stopReporting = reportSourceProblems((line) => process.stderr.write(`hostme: ${line}\n`));
      const scheduler = new FetchScheduler(resolved.source, 8);
      const exports = new Map<string, BlockDevice>();
      // Read-only: the image itself, no overlay.
      for (const [i, disk] of (await openImageDisks(resolved.image.manifest, scheduler)).entries()) {
        exports.set(`disk${i}`, disk.device);
        if (i === 0) exports.set('', disk.device);
      }
      const server = new NbdServer({ exports });
      await server.listen(options.socket);
      const { name: image, version } = resolved.image.manifest;
      emit(options, { socket: options.socket, image, version, exports: [...exports.keys()] }, () => `exporting ${image}@${version} read-only on nbd+unix:///?socket=${options.socket} (Ctrl-C stops)`);
      await new Promise<void>((done) => {
        const stop = () => void server.close().then(() => scheduler.close()).then(stopReporting).then(done);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
