import type { Command } from 'commander';
import { HostmeError } from '../errors.js';
import { parseImageLink } from '../runner/link.js';
import { CacheDir } from '../runner/cache-dir.js';
import { emit, parsePositiveInt } from './output.js';

interface ShareCliOptions {
  hub: string;
  cache?: string;
  port?: string;
  host?: string;
  json?: boolean;
  webrtc?: boolean;
}

export function registerShare(program: Command): void {
  program
    .command('share')
    .description("serve this machine's cached objects of an image to other peers, without running it (docs/peers.md)")
    .argument('<link>', 'the repository (or landing page) the image came from')
    .argument('<image>', 'NAME@VERSION, already run (or filled) on this machine')
    .requiredOption('--hub <url>', 'the hub whose tracker lists this peer')
    .option('--cache <dir>', 'cache directory (default $HOSTME_CACHE_DIR or ~/.cache/hostme)')
    .option('--port <port>', 'listen on this port (default: any free port)')
    .option('--host <addr>', 'listen on this address (default 0.0.0.0)')
    .option('--webrtc', 'also serve over WebRTC data channels (browser tabs, other peers), signaled through the hub')
    .option('--json', 'print {port, image} as JSON once listening')
    .action(async (link: string, image: string, options: ShareCliOptions) => {
      const parsed = parseImageLink(link, image);
      if (!parsed.version) throw new HostmeError('usage', `${image}: give the version (NAME@VERSION): peers share one version`);
      const cache = new CacheDir(options.cache);
      if (!(await cache.cachedManifest(parsed.repo, parsed.name, parsed.version))) {
        throw new HostmeError('usage', `${parsed.name}@${parsed.version} from ${parsed.repo} is not in ${cache.root}: run it first (hostme run … --fill caches all of it)`);
      }
      const { Swarm } = await import('../peer/swarm.js');
      const swarm = new Swarm({ hub: options.hub, log: (line) => process.stderr.write(`hostme: ${line}\n`) });
      const port = await swarm.share(cache, [{ repo: parsed.repo, name: parsed.name, version: parsed.version }], { host: options.host, port: options.port ? parsePositiveInt(options.port) : undefined });
      if (options.webrtc) await swarm.joinRtc(`${parsed.name}@${parsed.version}`);
      emit(options, { port, image: `${parsed.name}@${parsed.version}`, hub: options.hub, webrtc: Boolean(options.webrtc) }, () => `sharing ${parsed.name}@${parsed.version} on port ${port} through ${options.hub} (Ctrl-C stops)`);
      await new Promise<void>((resolve) => {
        const stop = () => resolve();
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      await swarm.close();
    });
}
