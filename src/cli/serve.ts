import { resolve } from 'node:path';
import { stat } from 'node:fs/promises';
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
    .option('--quiet', 'do not log requests')
    .option('--json', 'print the listening URL as JSON')
    .action(async (repo: string, options: { host: string; port: string; token?: string; quiet?: boolean; json?: boolean }) => {
      const repoDir = resolve(repo);
      const info = await stat(repoDir).catch(() => null);
      if (!info?.isDirectory()) throw new HostmeError('repo-not-found', `${repoDir} is not a directory; pack an image into it first (hostme pack DISK --repo ${repo} --name NAME)`);
      const port = options.port === '0' ? 0 : parsePositiveInt(options.port);
      const token = options.token ?? process.env.HOSTME_PUSH_TOKEN;
      const server = await startRepoServer({
        repoDir,
        host: options.host,
        port,
        token,
        logger: options.quiet ? undefined : (e) => process.stderr.write(`${e.method} ${e.url} ${e.status} ${e.bytes}B ${e.ms.toFixed(0)}ms${e.error ? ` ${e.error}` : ''}\n`),
      });
      emit(options, { url: server.url, repo: repoDir, push: Boolean(token) }, () => `serving ${repoDir} at ${server.url} (${token ? 'push enabled with token' : 'read-only'}); landing pages at ${server.url}/i/NAME`);
      await new Promise<void>((done) => {
        const stop = () => void server.close().then(done);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}
