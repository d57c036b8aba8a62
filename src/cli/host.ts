import type { Command } from 'commander';
import { HostmeError } from '../errors.js';
import { emit, parsePositiveInt } from './output.js';
import { parseImageLink } from '../runner/link.js';

interface HostCliOptions {
  home?: string;
  port: string;
  maxVms: string;
  maxMemory: string;
  maxCache: string;
  lan?: string;
  vga?: boolean;
  lanOrigin?: string[];
  json?: boolean;
  install?: boolean;
  uninstall?: boolean;
}

/** Default dashboard port: the HostMe button probes http://127.0.0.1:7480/api/hello. */
export const DEFAULT_NODE_PORT = 7480;

export function registerHost(program: Command): void {
  const host = program
    .command('host')
    .description('host websites in VMs on this computer and serve them through their hub (docs/host.md)')
    .option('--home <dir>', 'node home: site list, identity key, cache (default $XDG_DATA_HOME/hostme/node)')
    .option('--port <port>', 'dashboard port on 127.0.0.1 (0 picks a free one)', String(DEFAULT_NODE_PORT))
    .option('--max-vms <n>', 'site VMs running at once', '4')
    .option('--max-memory <mib>', 'memory of all site VMs together, MiB', '4096')
    .option('--max-cache <mib>', 'disk the node\'s cache may take (chunks, decoded copies, site overlays), MiB', '10240')
    .option('--vga', 'give each site VM a standard VGA adapter and show its screen on the dashboard')
    .option('--lan <addr[:port]>', 'also listen on this LAN address (default port 7481) for paired browsers on other devices (docs/host.md "LAN nodes")')
    .option('--lan-origin <origin...>', 'with --lan: page origins (hubs) whose HostMe button may probe this node over the LAN')
    .option('--install', 'start the node at login: systemd user unit + XDG autostart entry')
    .option('--uninstall', 'remove what --install wrote')
    .option('--json', 'print the dashboard URL as JSON')
    .action(async (options: HostCliOptions) => {
      if (options.install || options.uninstall) {
        const { installService, uninstallService } = await import('../host/service-install.js');
        const written = options.install ? await installService({ home: options.home }) : await uninstallService();
        emit(options, { files: written }, () => `${options.install ? 'installed' : 'removed'}: ${written.join(', ') || 'nothing'}`);
        return;
      }
      const { HostNode } = await import('../host/node.js');
      const { Dashboard } = await import('../host/dashboard.js');
      const node = new HostNode({ home: options.home, limits: { maxVms: parsePositiveInt(options.maxVms), maxMemoryMiB: parsePositiveInt(options.maxMemory), maxCacheMiB: parsePositiveInt(options.maxCache) }, vga: options.vga === true });
      const dashboard = new Dashboard(node);
      const url = await dashboard.listen(options.port === '0' ? 0 : parsePositiveInt(options.port));
      const lan = options.lan ? await dashboard.listenLan({ ...parseLanAddress(options.lan), allowOrigins: (options.lanOrigin ?? []).map(originOf) }) : undefined;
      node.start();
      emit(options, { url, node: node.nodeId, home: node.home.dir, ...(lan ? { lan } : {}) }, () => `hostme host: node ${node.nodeId} (home ${node.home.dir}); dashboard at ${url}/${lan ? `; LAN listener at ${lan}/ (pair devices from the dashboard)` : ''}`);
      await new Promise<void>((done) => {
        const stop = () => {
          process.stderr.write('hostme host: stopping the site VMs\n');
          void dashboard
            .close()
            .then(() => node.stop())
            .then(done);
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });

  host
    .command('add')
    .description('host a site: its landing page link (HUB/i/NAME) or hub URL + name')
    .argument('<link>', 'the site\'s link')
    .argument('[name]', 'image name when the link is a hub URL')
    .option('--home <dir>', 'node home (default: as for hostme host)')
    .option('--hub <url>', 'hub to serve through (default: the link\'s origin)')
    .option('--port <port>', 'guest port the site listens on', '80')
    .option('--invite <token>', 'invite token (hubs where hosting is by invitation)')
    .option('--json', 'print the entry as JSON')
    .action(async (link: string, name: string | undefined, options: { hub?: string; port: string; invite?: string; json?: boolean; home?: string }) => {
      const parsed = parseImageLink(link, name);
      if (!/^https?:\/\//.test(parsed.repo) && !options.hub) throw new HostmeError('usage', 'a local repository needs --hub URL (the hub that serves the site)');
      const hub = options.hub ? new URL(options.hub).origin : new URL(parsed.repo).origin;
      const { SqliteSiteStore } = await import('../host/site-store.js');
      const { openNodeHome } = await import('../host/node-home.js');
      const store = new SqliteSiteStore(openNodeHome(options.home ?? hostHome(host)).dbFile);
      try {
        const entry = store.add({ name: parsed.name, repo: parsed.repo, image: parsed.name, hub, guestPort: parsePositiveInt(options.port), ...(options.invite ? { invite: options.invite } : {}) });
        emit({ json: options.json || hostJson(host) }, entry, () => `hosting ${entry.name} from ${entry.repo} through ${entry.hub} (a running node picks it up within a second)`);
      } finally {
        store.close();
      }
    });

  host
    .command('ls')
    .description('list the hosted sites')
    .option('--home <dir>', 'node home (default: as for hostme host)')
    .option('--json', 'print JSON')
    .action(async (options: { json?: boolean; home?: string }) => {
      const { SqliteSiteStore } = await import('../host/site-store.js');
      const { openNodeHome } = await import('../host/node-home.js');
      const store = new SqliteSiteStore(openNodeHome(options.home ?? hostHome(host)).dbFile);
      const sites = store.list();
      store.close();
      emit({ json: options.json || hostJson(host) }, { sites }, () => (sites.length ? sites.map((s) => `${s.name}\t${s.enabled ? 'enabled' : 'stopped'}\t${s.hub}\t${s.repo}`).join('\n') : 'no sites (hostme host add LINK)'));
    });

  host
    .command('rm')
    .description('stop hosting a site (its VM stops within a second)')
    .argument('<name>')
    .option('--home <dir>', 'node home (default: as for hostme host)')
    .action(async (name: string, options: { home?: string }) => {
      const { SqliteSiteStore } = await import('../host/site-store.js');
      const { openNodeHome } = await import('../host/node-home.js');
      const store = new SqliteSiteStore(openNodeHome(options.home ?? hostHome(host)).dbFile);
      const removed = store.remove(name);
      store.close();
      if (!removed) throw new HostmeError('site-not-found', `this node hosts no site named "${name}"`);
      process.stderr.write(`removed ${name}\n`);
    });
}

/** ADDR, ADDR:PORT or [IPv6]:PORT; the port defaults to 7481 (0 picks one). */
export function parseLanAddress(text: string): { address: string; port: number } {
  const m = /^\[([0-9a-fA-F:.]+)\](?::(\d{1,5}))?$/.exec(text) ?? /^([^:[\]]+)(?::(\d{1,5}))?$/.exec(text);
  if (!m) throw new HostmeError('usage', `--lan ${text}: expected ADDR, ADDR:PORT or [IPv6]:PORT`);
  const port = m[2] === undefined ? DEFAULT_NODE_PORT + 1 : Number(m[2]);
  if (port > 65535) throw new HostmeError('usage', `--lan ${text}: port out of range`);
  return { address: m[1]!, port };
}

function originOf(text: string): string {
  try {
    const url = new URL(text);
    if (url.protocol === 'http:' || url.protocol === 'https:') return url.origin;
  } catch {
    // reported below
  }
  throw new HostmeError('usage', `--lan-origin ${text}: expected an http(s) origin such as https://hub.example`);
}

function hostHome(host: Command): string | undefined {
  return (host.opts() as { home?: string }).home;
}

/** `--json` after a subcommand is taken by the parent command (it declares one too). */
function hostJson(host: Command): boolean {
  return (host.opts() as { json?: boolean }).json === true;
}
