import { join, resolve } from 'node:path';
import { mkdir, stat } from 'node:fs/promises';
import type { RenderService } from '../render/render-service.js';
import { loadOrCreateDefaultKey } from '../pack/publisher-key.js';
import type { Command } from 'commander';
import { startRepoServer } from '../server/server.js';
import { HostmeError } from '../errors.js';
import { emit, parsePositiveInt } from './output.js';

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('serve a repository over HTTP: static files, landing pages, JSON API, optional authenticated push')
    .argument('<repo>', 'repository directory')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port (0 picks a free one)', '8080')
    .option('--token <token>', 'accept PUT (hostme push) with this bearer token (default: $HOSTME_PUSH_TOKEN; read-only without)')
    .option('--render', 'also run the render service: POST /api/builds builds images into this repository')
    .option('--render-state <dir>', 'where render jobs are kept (default REPO/.render; dotfiles are never served)')
    .option('--concurrency <n>', 'render builds at once', '1')
    .option('--key <keyfile>', 'publisher key that signs rendered images (default ~/.config/hostme/publisher.key)')
    .option('--iso', 'generate and offer each direct-boot image\'s bootable ISO and its torrent (/i/NAME/NAME.iso[.torrent])')
    .option('--public-url <url>', 'the public base URL written into ISOs and torrents (default: the listening address)')
    .option('--iso-cache <dir>', 'where generated ISOs are kept (default REPO/.iso-cache; dotfiles are never served)')
    .option('--quiet', 'do not log requests')
    .option('--json', 'print the listening URL as JSON')
    .action(async (repo: string, options: { host: string; port: string; token?: string; quiet?: boolean; json?: boolean; render?: boolean; renderState?: string; concurrency: string; key?: string; iso?: boolean; publicUrl?: string; isoCache?: string }) => {
      const repoDir = resolve(repo);
      const info = await stat(repoDir).catch(() => null);
      if (!info?.isDirectory()) throw new HostmeError('repo-not-found', `${repoDir} is not a directory; pack an image into it first (hostme pack DISK --repo ${repo} --name NAME)`);
      const port = options.port === '0' ? 0 : parsePositiveInt(options.port);
      const token = options.token ?? process.env.HOSTME_PUSH_TOKEN;
      let render: RenderService | undefined;
      if (options.render) {
        const stateDir = resolve(options.renderState ?? join(repoDir, '.render'));
        await mkdir(stateDir, { recursive: true });
        const { key } = await loadOrCreateDefaultKey(options.key);
        // Loaded only with --render: the builder and exporter are heavy to import.
        const { RenderService } = await import('../render/render-service.js');
        const { repositoryBuild } = await import('../render/repository-build.js');
        render = new RenderService({ stateDir, token, concurrency: parsePositiveInt(options.concurrency), build: repositoryBuild(repoDir, key) });
        const recovered = render.start();
        if (recovered.requeued || recovered.failed) process.stderr.write(`render: after a restart, ${recovered.requeued} job(s) queued again, ${recovered.failed} failed\n`);
      }
      const server = await startRepoServer({
        render,
        iso: options.iso ? { cacheDir: resolve(options.isoCache ?? join(repoDir, '.iso-cache')), publicUrl: options.publicUrl } : undefined,
        repoDir,
        host: options.host,
        port,
        token,
        logger: options.quiet ? undefined : (e) => process.stderr.write(`${e.method} ${e.url} ${e.status} ${e.bytes}B ${e.ms.toFixed(0)}ms${e.error ? ` ${e.error}` : ''}\n`),
      });
      emit(options, { url: server.url, repo: repoDir, push: Boolean(token) }, () => `serving ${repoDir} at ${server.url} (${token ? 'push enabled with token' : 'read-only'}${render ? ', render service at /api/builds' : ''}); landing pages at ${server.url}/i/NAME`);
      await new Promise<void>((done) => {
        const stop = () => void server.close().then(() => render?.close()).then(done);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
