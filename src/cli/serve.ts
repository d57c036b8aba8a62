import { dirname, join, resolve } from 'node:path';
import { mkdir, stat } from 'node:fs/promises';
import type { RenderService } from '../render/render-service.js';
import { loadOrCreateDefaultKey } from '../pack/publisher-key.js';
import type { Command } from 'commander';
import { startRepoServer } from '../server/server.js';
import { removeStaleTemp } from '../repo/stale-temp.js';
import { HostmeError } from '../errors.js';
import { emit, parsePositiveInt } from './output.js';

interface ServeCliOptions {
  host: string;
  port: string;
  token?: string;
  quiet?: boolean;
  json?: boolean;
  render?: boolean;
  renderState?: string;
  concurrency: string;
  key?: string;
  renderOutputRoot: string[];
  renderAllowUrl: string[];
  renderAllowBucket: string[];
  renderAllowMirror: string[];
  renderAllowFetch: string[];
  renderMaxDisk: string;
  renderMaxSeconds: string;
  renderMaxQueued: string;
  renderRate: string;
  net?: boolean;
  netDir?: string;
  hub?: boolean;
  hubDomain?: string;
  hosting: string;
  invite?: string[];
  hubState?: string;
  fallback?: boolean;
  package?: string;
  publicUrl?: string;
  iso?: boolean;
  isoCache?: string;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function parseSize(text: string): number {
  const m = /^(\d+)([KMGT]?)$/.exec(text);
  if (!m) throw new HostmeError('usage', `"${text}" is not a size like 512M or 8G`);
  return Number(m[1]) * 1024 ** ' KMGT'.indexOf(m[2] || ' ');
}

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
    .option('--net', 'also be an overlay network hub: WebSocket ports for browser guests at /net/NETWORK (docs/net.md)')
    .option('--net-dir <dir>', 'hub state: networks, leases, join tokens (default REPO/.net; dotfiles are never served)')
    .option('--render-output-root <dir>', 'render outputs may go to directories under DIR (repeatable)', collect, [])
    .option('--render-allow-url <prefix>', 'render outputs may be PUT under this http(s) URL prefix, with $HOSTME_EXPORT_TOKEN (repeatable)', collect, [])
    .option('--render-allow-bucket <s3url>', 'render outputs may go under s3://BUCKET/PREFIX, with the server\'s AWS credentials (repeatable)', collect, [])
    .option('--render-allow-mirror <url>', 'Debian mirror a request may name in base.debootstrap.mirror (repeatable)', collect, [])
    .option('--render-allow-fetch <prefix>', 'URL prefix on a private or loopback address a request may fetch a base tarball from (repeatable)', collect, [])
    .option('--render-max-disk <size>', 'largest disk or file a render build may make, e.g. 8G', '8G')
    .option('--render-max-seconds <n>', 'wall-time limit of one render build', '3600')
    .option('--render-max-queued <n>', 'render builds waiting at once before new ones get 503', '20')
    .option('--render-rate <n>', 'render builds a token may submit per minute before 429', '10')
    .option('--hub', 'also be a HostMe hub: nodes host the images as sites, served at /s/NAME/ (docs/host.md)')
    .option('--hub-domain <domain>', 'with --hub: also route Host: NAME.DOMAIN to site NAME')
    .option('--hosting <policy>', 'with --hub: open (any node may host) or invite (nodes need an invite token)', 'open')
    .option('--invite <site:token...>', 'with --hub: create invite tokens (SITE:TOKEN)')
    .option('--package <tgz>', 'with --hub: serve this hostme package (npm pack) at /hostme.tgz for /install.sh')
    .option('--public-url <url>', 'the public origin written into /install.sh (--hub), ISOs and torrents (--iso); default: the listening address')
    .option('--fallback', 'with --hub: when no node hosts a site, the hub boots it itself (a node in this process; home REPO/.hub/fallback-node)')
    .option('--hub-state <file>', 'with --hub: SQLite file of the hub registry (default REPO/.hub/hub.db)')
    .option('--iso', 'generate and offer each direct-boot image\'s bootable ISO and its torrent (/i/NAME/NAME.iso[.torrent])')
    .option('--iso-cache <dir>', 'where generated ISOs are kept (default REPO/.iso-cache; dotfiles are never served)')
    .option('--quiet', 'do not log requests')
    .option('--json', 'print the listening URL as JSON')
    .action(async (repo: string, options: ServeCliOptions) => {
      const repoDir = resolve(repo);
      const info = await stat(repoDir).catch(() => null);
      if (!info?.isDirectory()) throw new HostmeError('repo-not-found', `${repoDir} is not a directory; pack an image into it first (hostme pack DISK --repo ${repo} --name NAME)`);
      const port = options.port === '0' ? 0 : parsePositiveInt(options.port);
      const token = options.token ?? process.env.HOSTME_PUSH_TOKEN;
      const stale = await removeStaleTemp(repoDir);
      if (stale) process.stderr.write(`removed ${stale} stale temporary file(s) left by an interrupted write\n`);
      let render: RenderService | undefined;
      if (options.render) {
        const stateDir = resolve(options.renderState ?? join(repoDir, '.render'));
        await mkdir(stateDir, { recursive: true });
        const { key } = await loadOrCreateDefaultKey(options.key);
        // Loaded only with --render: the builder and exporter are heavy to import.
        const { RenderService } = await import('../render/render-service.js');
        const { isolatedRepositoryBuild } = await import('../render/isolated-build.js');
        const { renderPolicy } = await import('../render/policy.js');
        const maxDisk = parseSize(options.renderMaxDisk);
        const policy = renderPolicy({
          outputRoots: options.renderOutputRoot,
          outputUrls: options.renderAllowUrl,
          outputBuckets: options.renderAllowBucket,
          mirrors: options.renderAllowMirror,
          fetchUrls: options.renderAllowFetch,
          limits: { maxDiskBytes: maxDisk, maxFileBytes: maxDisk, maxJobSeconds: parsePositiveInt(options.renderMaxSeconds), maxQueued: parsePositiveInt(options.renderMaxQueued), submitsPerMinute: parsePositiveInt(options.renderRate) },
        });
        render = new RenderService({ stateDir, token, concurrency: parsePositiveInt(options.concurrency), build: isolatedRepositoryBuild(repoDir, key), policy });
        const recovered = await render.start();
        if (recovered.requeued || recovered.failed) process.stderr.write(`render: after a restart, ${recovered.requeued} job(s) queued again, ${recovered.failed} failed\n`);
      }
      const hub = options.hub ? await startHub(repoDir, options) : undefined;
      const server = await startRepoServer({
        hub,
        render,
        iso: options.iso ? { cacheDir: resolve(options.isoCache ?? join(repoDir, '.iso-cache')), publicUrl: options.publicUrl } : undefined,
        repoDir,
        host: options.host,
        port,
        token,
        logger: options.quiet ? undefined : (e) => process.stderr.write(`${e.method} ${e.url} ${e.status} ${e.bytes}B ${e.ms.toFixed(0)}ms${e.error ? ` ${e.error}` : ''}\n`),
      });
      if (hub) {
        // Slow and hostile gateway clients are bounded in time.
        server.server.headersTimeout = 10_000;
        server.server.requestTimeout = 120_000;
        hub.attach(server.url);
      }
      // Loaded only with --net: the network hub pulls in ws and the switch.
      const netHub = options.net ? await (await import('../net/hub.js')).attachNetHub(server.server, { dir: resolve(options.netDir ?? join(repoDir, '.net')), log: options.quiet ? undefined : (line) => process.stderr.write(`net: ${line}\n`) }) : undefined;
      const netUrl = `${server.url.replace(/^http/, 'ws')}/net/`;
      emit(options, { url: server.url, repo: repoDir, push: Boolean(token), ...(netHub ? { net: netUrl } : {}) }, () => `serving ${repoDir} at ${server.url} (${token ? 'push enabled with token' : 'read-only'}${render ? ', render service at /api/builds' : ''}); landing pages at ${server.url}/i/NAME${hub ? `; hub: sites at ${server.url}/s/NAME/` : ''}${netHub ? `; network hub at ${netUrl}NETWORK (tokens: hostme net token NETWORK --dir ${netHub.daemon.sw.registry.dir})` : ''}`);
      await new Promise<void>((done) => {
        // Running builds are killed and cleaned up at once, not waited for (a build may take an hour).
        const stop = () => {
          void Promise.all([hub?.close(), netHub?.close(), server.close(), render?.close()]).then(() => done());
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}

async function startHub(repoDir: string, options: ServeCliOptions) {
  if (options.hosting !== 'open' && options.hosting !== 'invite') throw new HostmeError('usage', '--hosting must be open or invite');
  const { Hub } = await import('../hub/hub.js');
  const { SqliteHubStore } = await import('../hub/hub-store.js');
  const { repoSites } = await import('../hub/repo-sites.js');
  const store = new SqliteHubStore(resolve(options.hubState ?? join(repoDir, '.hub', 'hub.db')));
  for (const invite of options.invite ?? []) {
    const m = /^([a-z0-9-]+):(.{16,256})$/.exec(invite);
    if (!m) throw new HostmeError('usage', `--invite ${invite}: expected SITE:TOKEN with a token of at least 16 characters`);
    store.createInvite(m[1]!, m[2]!);
  }
  const fallback = options.fallback ? new (await import('../hub/fallback.js')).HubFallbackNode(join(resolve(options.hubState ? dirname(options.hubState) : join(repoDir, '.hub')), 'fallback-node'), (line) => process.stderr.write(`${line}\n`)) : undefined;
  const hub = new Hub({
    store,
    ...(fallback ? { fallback } : {}),
    hosting: options.hosting,
    domain: options.hubDomain,
    ...(options.package ? { packageFile: resolve(options.package) } : {}),
    ...(options.publicUrl ? { publicUrl: new URL(options.publicUrl).origin } : {}),
    ...repoSites(repoDir),
    log: options.quiet ? undefined : (line) => process.stderr.write(`${line}\n`),
    // Tests and benchmarks shorten the peers' heartbeat (and so their expiry).
    peerIntervalSeconds: Number(process.env.HOSTME_PEER_INTERVAL) || undefined,
  });
  return Object.assign(hub, {
    /** The fallback node dials the hub's own address once it listens. */
    attach: (url: string) => fallback?.attach(url),
    close: async () => {
      Hub.prototype.close.call(hub);
      await fallback?.stop();
      store.close();
    },
  });
}
