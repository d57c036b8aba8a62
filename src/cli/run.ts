import { stat, writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { parseImageLink } from '../runner/link.js';
import { startImage } from '../runner/run-image.js';
import type { RunStats } from '../runner/run-stats.js';
import { HostmeError, errorMessage } from '../errors.js';
import { formatBytes, parsePositiveInt, terminalSafe } from './output.js';
import { ProgressBar } from './progress.js';
import { loadPublicKey } from '../pack/publisher-key.js';
import { networkNamePattern } from '../format/manifest.js';
import { parsePublish } from '../runner/publish.js';
import { isReferenceFile, readReferenceFile } from '../runner/reference-file.js';
import { addGrantOptions, grantFlagsOf, grantsOf } from './run-grants.js';
import { consoleOnCli } from '../grants/devices.js';
import { acceptAsks, asksBeyond, confirmAsks } from '../grants/ask.js';
import { reportSourceProblems } from '../runner/source-reporter.js';

interface RunCliOptions {
  cache?: string;
  mirror?: string[];
  fresh?: boolean;
  fill?: boolean;
  until?: string;
  timeout?: string;
  console: string;
  statsJson?: string;
  append?: string;
  instance?: string;
  pubkey?: string;
  json?: boolean;
  seed?: string;
  verbose?: boolean;
  net?: string;
  netToken?: string;
  publish?: string[];
  internet?: boolean;
  resume: boolean;
  type?: string;
  yes?: boolean;
  hub?: string;
  share?: boolean;
  sharePort?: string;
  shareHost?: string;
}

export function registerRun(program: Command): void {
  const command = program
    .command('run')
    .description('boot a published image in QEMU, streaming its disk on demand')
    .argument('<link>', 'landing page URL, repository URL, hostme+https:// link, NAME.hostme reference file, or local repository directory')
    .argument('[name]', 'image name (NAME or NAME@VERSION) when the link is a repository')
    .option('--cache <dir>', 'cache directory (default $HOSTME_CACHE_DIR or ~/.cache/hostme)')
    .option('--mirror <url...>', 'additional mirrors of the repository')
    .option('--fresh', 'discard your earlier changes to this instance')
    .option('--fill', 'keep fetching the whole image in the background so it can run offline')
    .option('--until <regex>', 'stop the VM once the console prints a match (exit 0)')
    .option('--timeout <seconds>', 'give up after this many seconds (exit non-zero)')
    .option('--console <mode>', 'stdio (interactive) or none', process.stdin.isTTY ? 'stdio' : 'none')
    .option('--stats-json <file>', 'write fetch statistics as JSON')
    .option('--append <text>', 'extra kernel command line')
    .option('--instance <name>', 'instance name for a separate copy with its own changes')
    .option('--pubkey <file>', 'require this publisher key')
    .option('--seed <file>', 'attach this seed image (hostme seed) as an extra read-only disk')
    .option('--net <network>', "join this overlay network on this machine's switch (started on demand), or NETWORK@HUB_URL through a hub; default: the image's network")
    .option('--net-token <token>', 'join token for --net NETWORK@HUB (default $HOSTME_NET_TOKEN)')
    .option('-p, --publish <ports...>', 'forward [HOSTADDR:]HOSTPORT:GUESTPORT[/udp] to the guest (host side on 127.0.0.1 unless an address is given); the guest stays cut off from the host and the internet')
    .option('--internet', 'give the guest a network with access to the host and the internet (QEMU user networking)')
    .option('--no-resume', "boot from scratch even if the image has a QEMU snapshot")
    .option('--type <text>', 'type this into the console once the guest runs (after a resume, or at the ready mark of a boot); \\n is a newline')
    .option('--hub <url>', "fetch from the peers this hub's tracker lists (untrusted: every object is verified; the repository stays the fallback)")
    .option('--share', 'with --hub: while the VM runs, serve the cached objects of this image to other peers and announce them to the hub')
    .option('--share-port <port>', 'with --share: listen on this port (default: any free port)')
    .option('--share-host <addr>', 'with --share: listen on this address (default 0.0.0.0)')
    .option('--json', 'print the summary as JSON')
    .option('--verbose', 'say which accelerator was chosen and why');
  addGrantOptions(command).action(async (link: string, name: string | undefined, options: RunCliOptions) => {
      if (options.console !== 'stdio' && options.console !== 'none') throw new HostmeError('usage', '--console must be stdio or none');
      let until: RegExp | undefined;
      try {
        until = options.until ? new RegExp(options.until) : undefined;
      } catch (err) {
        throw new HostmeError('usage', `--until is not a valid regular expression: ${errorMessage(err)}`);
      }
      if (options.seed) {
        const seedStat = await stat(options.seed).catch(() => undefined);
        if (!seedStat?.isFile()) throw new HostmeError('usage', `--seed ${options.seed}: no such file (make one with hostme seed)`);
      }
      const net = options.net === undefined ? undefined : parseNetOption(options.net, options.netToken ?? process.env.HOSTME_NET_TOKEN);
      // Deny by default: the grant file and --allow-*/--deny-* flags; --net names a network the user grants.
      const optionsRecord = options as unknown as Record<string, unknown>;
      const { set: flagGrants } = await grantsOf(optionsRecord);
      const flagList = grantFlagsOf(optionsRecord);
      if (net && !flagGrants.net.networks.includes(net.network)) flagGrants.net.networks.unshift(net.network);
      const publish = [
        ...(options.publish ?? []).map(parsePublish),
        ...flagGrants.net.ports.map((p) => ({ hostAddr: '127.0.0.1', hostPort: p.hostPort, guestPort: p.guestPort, proto: p.proto })),
      ];
      // A downloaded NAME.hostme reference pins the publisher key.
      const reference = (await isReferenceFile(link)) ? await readReferenceFile(link) : undefined;
      const parsed = reference?.link ?? parseImageLink(link, name);
      if (options.share && !options.hub) throw new HostmeError('usage', '--share needs --hub URL (the tracker that tells other peers about this one)');
      const peers = options.hub
        ? { hub: options.hub, share: options.share ? { host: options.shareHost, port: options.sharePort ? parsePositiveInt(options.sharePort) : undefined } : (false as const) }
        : undefined;
      // A peer that lies or dies is named on the console as it happens, not only in the summary.
      const stopReporting = peers ? reportSourceProblems((line) => process.stderr.write(`hostme: ${terminalSafe(line)}\n`)) : () => {};
      const bar = new ProgressBar('hostme', { enabled: process.stderr.isTTY === true && options.console !== 'stdio' });
      const running = await startImage({
        link: parsed,
        cacheDir: options.cache,
        mirrors: options.mirror,
        fresh: options.fresh,
        fill: options.fill,
        until,
        timeoutMs: options.timeout ? parsePositiveInt(options.timeout) * 1000 : undefined,
        console: options.console,
        append: options.append,
        instance: options.instance,
        trusted: options.pubkey ? [await loadPublicKey(options.pubkey)] : reference ? [reference.trusted] : undefined,
        extraDisks: options.seed ? [{ file: resolve(options.seed), readOnly: true, name: 'seed' }] : undefined,
        onNotice: (message) => process.stderr.write(`hostme: ${terminalSafe(message)}\n`),
        net,
        publish,
        internet: options.internet,
        resume: options.resume,
        type: options.type?.replace(/\\n/g, '\n'),
        // The console of today unless the grant file or --deny-console says otherwise; a screen flag adds the VGA adapter (granted or not).
        consoleGranted: consoleOnCli({ granted: flagGrants.console, denyFlag: flagList.includes('--deny-console'), grantFile: Boolean(optionsRecord.grants) }),
        screenAdapter: flagList.includes('--allow-screen') || flagList.includes('--deny-screen'),
        grants: async (manifest) => {
          const asks = asksBeyond(net ? { hardware: manifest.hardware } : manifest, flagGrants);
          const accepted = await confirmAsks(`${manifest.name}@${manifest.version}`, asks, { yes: options.yes === true, terminal: process.stdin.isTTY === true && process.stderr.isTTY === true });
          return acceptAsks(flagGrants, accepted);
        },
        peers,
      });
      const { manifest } = running;
      for (const notice of running.notices) process.stderr.write(`hostme: ${terminalSafe(notice)}\n`);
      for (const p of publish) process.stderr.write(`hostme: guest port ${p.guestPort}/${p.proto} published on ${p.hostAddr}:${p.hostPort}\n`);
      if (!options.json && running.resumed) process.stderr.write(`hostme: resumed ${manifest.name}@${manifest.version} from its snapshot in ${(running.resumed.ms / 1000).toFixed(2)} s (accel ${running.vm.accel})\n`);
      else if (!options.json) process.stderr.write(`hostme: booting ${manifest.name}@${manifest.version} (${manifest.hardware.arch}, ${manifest.hardware.memoryMiB} MiB, accel ${running.vm.accel})${options.console === 'stdio' ? ' — Ctrl-] stops the VM' : ''}\n`);
      if (options.verbose) process.stderr.write(`hostme: accelerator ${running.vm.accel}: ${running.vm.accelReason}\n`);
      if (options.fill) {
        void running.filled.then((complete) => {
          if (complete) process.stderr.write('\nhostme: the whole image is now in the local cache: it can run offline\n');
        });
      }
      const ticker = setInterval(() => bar.status(statusLine(running.collector.stats, running.collector.hitRate(), running.collector.rate())), 250);
      const result = await running.finished.finally(() => {
        clearInterval(ticker);
        stopReporting();
      });
      bar.done();
      if (options.statsJson) await writeFile(options.statsJson, JSON.stringify(result.stats, null, 2) + '\n');
      if (options.json) process.stdout.write(JSON.stringify({ image: `${manifest.name}@${manifest.version}`, exit: result.exit, ...result.stats }, null, 2) + '\n');
      else process.stderr.write((options.console === 'stdio' ? '\n' : '') + summary(result.stats, running.collector.hitRate(), Boolean(until)) + '\n');
      if (result.readyError) throw result.readyError;
      if (until && result.stats.msToReady === null) {
        throw new HostmeError('vm-exited', `the VM stopped before the console matched /${options.until}/ (QEMU exit ${result.exit.code ?? result.exit.signal})`);
      }
    });
}

/** NETWORK or NETWORK@HUB_URL (the hub needs a token). */
function parseNetOption(value: string, token: string | undefined): { network: string; hub?: string; token?: string } {
  const at = value.indexOf('@');
  const network = at < 0 ? value : value.slice(0, at);
  if (!networkNamePattern.test(network)) throw new HostmeError('usage', `--net ${value}: a network name is lowercase letters, digits and "-", at most 32`);
  if (at < 0) return { network };
  const hub = value.slice(at + 1);
  if (!/^(https?|wss?):\/\/[^\s]+$/.test(hub)) throw new HostmeError('usage', `--net ${value}: after "@" comes the hub's http(s):// URL`);
  if (!token) throw new HostmeError('usage', `--net ${value}: joining through a hub needs a token (--net-token, or $HOSTME_NET_TOKEN); the hub's operator issues one with hostme net token ${network}`);
  return { network, hub, token };
}

function statusLine(stats: RunStats, hitRate: number, rate: number): string {
  return `fetched ${formatBytes(stats.bytesFetched)} in ${stats.requests} requests, ${stats.chunksFetched + stats.chunksFromCache} chunks, cache hit ${(hitRate * 100).toFixed(0)}%, ${formatBytes(rate)}/s`;
}

function summary(stats: RunStats, hitRate: number, waitedForMatch: boolean): string {
  const when = stats.msToReady === null ? 'not reached' : `${(stats.msToReady / 1000).toFixed(1)} s`;
  // Without --until, "ready" is only QEMU being up; say what was measured.
  const label = waitedForMatch ? 'ready' : 'VM started in';
  const lines = [
    `hostme: ${label} ${when}; fetched ${formatBytes(stats.bytesFetched)} in ${stats.requests} requests (${stats.chunksFetched} chunks, ${stats.chunksPrefetched} prefetched), ${formatBytes(stats.bytesFromCache)} from cache (hit rate ${(hitRate * 100).toFixed(0)}%)`,
  ];
  if (stats.mirrorsUsed.length) lines.push(`hostme: mirrors used: ${stats.mirrorsUsed.join(', ')}`);
  for (const error of stats.errors.slice(0, 5)) lines.push(`hostme: warning: ${error}`);
  return lines.join('\n');
}
