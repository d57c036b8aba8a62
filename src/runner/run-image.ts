import { mkdtemp, rm } from 'node:fs/promises';
import { serveGrantControl } from '../grants/runtime.js';
import { networkPlan } from '../grants/plan.js';
import { EGRESS_PORT, EgressProxy } from '../grants/egress.js';
import { FOLDER_PORT, FolderServer } from '../folder/server.js';
import { DiskGate } from '../grants/disk-gate.js';
import { exportNameOf, openExtraDisks, type ExtraDiskSpec } from '../grants/extra-disks.js';
import { PortCaretaker } from '../grants/ports.js';
import { CpuLimit } from '../grants/cpu-limit.js';
import { ConsoleGate, SCREEN_QEMU_ARGS, ScreenCaretaker, screenAdapter } from '../grants/devices.js';
import { stdioBridge } from '../vm/stdio-bridge.js';
import { Writable } from 'node:stream';
import type { GrantSet } from '../grants/grant-set.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chunkLength, type ChunkIndex } from '../format/chunk-index.js';
import type { BlobRef, Manifest } from '../format/manifest.js';
import type { PublisherKey } from '../format/node/keys.js';
import { HostmeError, errorMessage, isHostmeError } from '../errors.js';
import type { BlockDevice } from '../device/block-device.js';
import { ChunkedImageDevice } from '../device/chunked-image.js';
import { VerifiedChunkFile } from '../device/node/verified-chunks.js';
import { NbdServer } from '../nbd/server.js';
import { launchVm, type VmConsole, type VmHandle, type VmExit, type VmSpec } from '../vm/qemu.js';
import type { Accel } from '../vm/accel.js';
import { overlaysUnchanged, planResume, resumeVm } from './resume.js';
import { FetchScheduler } from '../store/fetch-scheduler.js';
import type { HttpTransportOptions } from '../store/http-transport.js';
import { CacheDir, defaultCacheLimit } from './cache-dir.js';
import { Instance } from './instance.js';
import { resolveImage, type ResolvedImage } from './image-source.js';
import { materializeBlob } from './blob-file.js';
import { RunStatsCollector, type RunStats } from './run-stats.js';
import { attachGuest, controlRequest, netStateDir, overlayMac } from '../net/control.js';
import type { ImageLink } from './link.js';
import { userNetwork, type PortPublish } from './publish.js';
import { openFileOverlay } from '../device/node/cow-file.js';
import { openImageDisks } from '../device/image-disks.js';

export interface RunOptions {
  link: ImageLink;
  cacheDir?: string;
  mirrors?: string[];
  /** Discard the instance's earlier writes first. */
  fresh?: boolean;
  /** Keep fetching every remaining chunk in the background (offline later). */
  fill?: boolean;
  until?: RegExp;
  keepRunning?: boolean;
  timeoutMs?: number;
  console: VmConsole;
  /** Appended to the manifest's kernel command line. */
  append?: string;
  trusted?: PublisherKey[];
  /** Instance name (default: the image name): separate overlays for parallel copies. */
  instance?: string;
  /** 'ephemeral' writes go to a temporary overlay that is deleted at the end (profile, tests). */
  overlay?: 'persistent' | 'ephemeral';
  /** Called with (disk, chunk) the first time the guest reads a chunk (boot profiling). */
  onFirstAccess?: (disk: number, chunk: number) => void;
  accel?: Accel;
  http?: HttpTransportOptions;
  extraQemuArgs?: string[];
  /**
   * Local image files attached after the image's disks (raw), e.g. a
   * cloud-init seed (name `seed`); they reach QEMU through the NBD server and
   * a gate (src/grants/extra-disks.ts), like the granted disks that follow them.
   */
  extraDisks?: Array<{ file: string; readOnly: boolean; name?: string }>;
  /** One-line messages while starting (the KVM watchdog's fallback): shown at once, not after start. */
  onNotice?: (message: string) => void;
  /** Join this overlay network (default: the manifest's network.join); docs/net.md. */
  net?: { network: string; site?: string; dir?: string; hub?: string; token?: string };
  /** Host ports forwarded to guest ports over QEMU user networking (see publish.ts). */
  publish?: PortPublish[];
  /** Let the guest reach the host's networks and the internet (otherwise a published guest is restricted). */
  internet?: boolean;
  /** Resume the image's QEMU snapshot when it matches (default true); false always boots. */
  resume?: boolean;
  /** Serve the snapshot's RAM lazily over FUSE (src/lazyfs) instead of fetching it whole first (default: HOSTME_LAZY_RAM=0/1, else lazy as root). */
  lazyRam?: boolean;
  /** Typed into the console once the guest runs: right after a resume, or when a cold boot prints the snapshot's ready mark (or HOSTME-READY). */
  type?: string;
  /** Machine overrides for the boot (hostme snapshot: RAM in a shared file, virtio disks). */
  vm?: Pick<VmSpec, 'diskBus' | 'machine' | 'cpuModel' | 'memoryFile' | 'hotplugPorts' | 'vmgenid' | 'overlay' | 'netdev'>;
  /**
   * Decides the instance's grant set once the manifest is known (hostme run:
   * flags, grant file, the user's answer; src/grants/ask.ts). Without it the
   * run grants the network it joins (programmatic callers, tests).
   */
  grants?: (manifest: Manifest) => Promise<GrantSet>;
  /** With console 'stdio': hostme forwards the console (default true); false drops its output and ignores input until hostme grant NAME console. */
  consoleGranted?: boolean;
  /** Attach a VGA adapter even when the screen is not granted (a screen flag was given); the image's ask or a granted screen attach it too. */
  screenAdapter?: boolean;
  /** Fetch from the peers a hub's tracker lists (untrusted, verified); with `share`, serve this cache to them while running (docs/peers.md). */
  peers?: { hub: string; share?: false | { host?: string; port?: number }; windowMs?: number };
}

export interface RunningImage {
  manifest: Manifest;
  digest: string;
  vm: VmHandle;
  collector: RunStatsCollector;
  devices: ChunkedImageDevice[];
  offline?: string;
  notices: string[];
  /** Set when the guest was resumed from the image's QEMU snapshot instead of booted. */
  resumed?: { ms: number };
  /** With lazy RAM: the RAM chunks in the order the resumed guest first read them (hostme snapshot records it as the working set). */
  ramTouched?: () => readonly number[];
  /** With `fill`: resolves true once every chunk of every disk is in the local cache (false if cut short). */
  filled: Promise<boolean>;
  /** Resolves after QEMU exited and everything was closed, with the final stats. */
  finished: Promise<{ exit: VmExit; stats: RunStats; readyError?: unknown }>;
}

/**
 * Boot a published image: verified lazy disks (cache → mirrors), a
 * copy-on-write overlay per instance, an NBD server QEMU connects to, the
 * boot-working-set prefetch, and QEMU itself.
 */
export async function startImage(options: RunOptions): Promise<RunningImage> {
  const cache = new CacheDir(options.cacheDir);
  const collector = new RunStatsCollector();
  collector.mark('start');
  const notices: string[] = [];
  const cleanups: Array<() => Promise<unknown>> = [];
  const cleanup = async () => {
    for (const step of cleanups.reverse()) await step().catch(() => {});
  };
  const userNet = userNetwork(options.publish, options.internet);
  // Published TCP ports pass the port caretaker (hostme listens, revocable at runtime); UDP stays QEMU's forward.
  const tcpPorts = (userNet?.hostfwd ?? []).filter((f) => (f.proto ?? 'tcp') === 'tcp');
  const netdev = userNet ? { ...userNet, hostfwd: (userNet.hostfwd ?? []).filter((f) => f.proto === 'udp') } : undefined;
  try {
    const instanceName = options.instance ?? options.link.name;
    const ephemeral = options.overlay === 'ephemeral';
    const runDir = await mkdtemp(join(tmpdir(), 'hostme-run-'));
    cleanups.push(() => rm(runDir, { recursive: true, force: true }));
    let instance = new Instance(ephemeral ? join(runDir, 'instance') : cache.instanceDir(instanceName));
    try {
      await instance.lock();
    } catch (err) {
      if (!isHostmeError(err) && !ephemeral) {
        // The cache directory is read-only or full: keep the guest's writes only for this run.
        notices.push(`cannot keep changes in ${instance.dir} (${errorMessage(err)}); this run's changes will be discarded at exit`);
        instance = new Instance(join(runDir, 'instance'));
        await instance.lock();
      } else {
        throw err;
      }
    }
    cleanups.push(() => instance.unlock());
    if (options.fresh) await instance.discardOverlay();
    const previous = await instance.record();
    const sameRepo = previous && previous.repo === options.link.repo && previous.name === options.link.name;

    // Loaded only when asked for: the swarm pulls in the peer server and tracker client.
    const swarm = options.peers ? new (await import('../peer/swarm.js')).Swarm({ hub: options.peers.hub, windowMs: options.peers.windowMs, log: (line) => (options.onNotice ? options.onNotice(line) : notices.push(line)) }) : undefined;
    if (swarm) cleanups.push(() => swarm.close());
    const resolved = await resolveImage(options.link, {
      cache,
      extraMirrors: options.mirrors,
      trusted: options.trusted,
      http: options.http,
      preferVersion: sameRepo ? previous.version : undefined,
      peers: swarm,
    });
    collector.mark('resolved');
    if (resolved.offline) notices.push(`repository unreachable (${resolved.offline}); starting from the local cache`);
    notices.push(...resolved.notices);
    const { manifest } = resolved.image;
    if (previous && previous.manifestDigest !== resolved.image.digest) {
      throw new HostmeError('instance-mismatch', `instance "${instanceName}" holds your changes to ${previous.name}@${previous.version}; run with --fresh to discard them and start ${manifest.name}@${manifest.version}, or use --instance NAME for a separate copy`, { instance: instanceName });
    }
    await instance
      .saveRecord({ repo: options.link.repo, name: manifest.name, version: manifest.version, manifestDigest: resolved.image.digest, created: previous?.created ?? new Date().toISOString() })
      .catch((err) => notices.push(`cannot record the instance in ${instance.dir}: ${errorMessage(err)}`));

    if (swarm && options.peers?.share && resolved.cache) {
      const port = await swarm.share(cache, [{ repo: options.link.repo, name: manifest.name, version: manifest.version }], options.peers.share);
      notices.push(`sharing ${manifest.name}@${manifest.version} with peers on port ${port} (objects only, verified by whoever fetches them)`);
    }
    // 16 requests in flight fill a 50 Mbit/s, 100 ms link with 256 KiB chunks; 8 do not.
    const scheduler = new FetchScheduler(resolved.source, 16);
    // Nodes booting together split the first fetches: each object from the origin about once (docs/peers.md "Flash crowd").
    if (swarm && resolved.mirrors) swarm.coordinate(resolved.mirrors, scheduler);
    cleanups.push(() => scheduler.close());
    // The kernel is on the critical path of a boot: start it now, in parallel with the disk
    // indexes, unless a matching snapshot will be resumed (then it is fetched only on fallback).
    // Resources granted at start cap what the image asks (-smp, -m): a grant never gives more than the image asks.
    const granted0 = options.grants ? await options.grants(manifest) : undefined;
    const cpus = Math.min(manifest.hardware.cpus, granted0?.resources.cpus ?? manifest.hardware.cpus);
    const memoryMiB = Math.min(manifest.hardware.memoryMiB, granted0?.resources.memoryMiB ?? manifest.hardware.memoryMiB);
    const resized = cpus !== manifest.hardware.cpus || memoryMiB !== manifest.hardware.memoryMiB;
    if (resized) notices.push(`resources granted: ${cpus} vCPU${cpus > 1 ? 's' : ''}, ${memoryMiB} MiB (the image asks ${manifest.hardware.cpus}, ${manifest.hardware.memoryMiB} MiB)`);
    // The screen's VGA adapter (docs/grants.md): present when asked, flagged or granted; QEMU keeps -display none.
    const vga = screenAdapter({ asked: manifest.hardware.screen === true, flag: options.screenAdapter === true, granted: granted0?.screen === true });
    // A snapshot was saved with the image's machine: a smaller one, or one with an extra adapter, boots instead.
    const willResume = options.resume !== false && manifest.qemuSnapshot !== undefined && !resized && !vga;
    let bootFiles: ReturnType<typeof prepareBoot> | undefined;
    const startBoot = () => (bootFiles ??= prepareBoot(resolved, scheduler, runDir, resolved.cache ? cache.root : undefined, options.append));
    if (!willResume) startBoot().catch(() => {});
    // A snapshot's RAM is the critical path of a resume: start it now, in parallel with the disk indexes.
    // The grant set decides the network before anything is planned around it (deny by default).
    const granted = granted0;
    const plan0 = networkPlan({ explicit: options.net?.network, asked: manifest.network?.join, granted });
    const network = plan0.network;
    const nics = (network ? 1 : 0) + (netdev ? 1 : 0);
    // Extra disks: the caller's (a seed), then the granted ones (a denied one is a stand-in).
    const extraSpecs: ExtraDiskSpec[] = [
      ...(options.extraDisks ?? []).map((d) => ({ file: d.file, mode: d.readOnly ? ('ro' as const) : ('rw' as const), ...(d.name ? { name: d.name } : {}) })),
      ...(granted?.disks ?? []).map((d) => ({ file: d.image, mode: d.mode })),
    ];
    const planning = willResume ? planResume({ resolved, scheduler, cacheRoot: resolved.cache ? cache.root : undefined, runDir, accel: options.accel, lazyRam: options.lazyRam, extraDisks: extraSpecs.length, nics, notices }) : Promise.resolve(undefined);
    planning.catch(() => {});
    // A lazy RAM mount (src/lazyfs) ends with the run, after QEMU.
    cleanups.push(async () => (await planning.catch(() => undefined))?.lazy?.close());
    const verifiedDir = resolved.cache ? join(cache.root, 'verified') : undefined;
    const disks = await openImageDisks(manifest, scheduler, {
      ...(options.onFirstAccess ? { onFirstAccess: options.onFirstAccess } : {}),
      // A cache that cannot hold them only costs speed: run without.
      ...(verifiedDir ? { verified: (_: number, index: ChunkIndex, ref: BlobRef) => VerifiedChunkFile.open(join(verifiedDir, ref.index), index) } : {}),
      overlay: (image, i) => openFileOverlay(image, i === 0 ? instance.dir : join(instance.dir, `disk${i}`)),
    });
    const devices = disks.map((d) => d.image);
    const overlays = disks.map((d) => d.overlay!);
    cleanups.push(() => Promise.all(disks.map(async (d) => {
      await d.overlay?.close();
      await d.image.close();
    })));
    // The disk caretaker (hostme grant|revoke NAME disk): every export passes a gate.
    const gates = disks.map((d, i) => new DiskGate(d.device, 'rw', `disk${i}`));
    // The disk I/O limit granted at start (hostme grant NAME disk-io changes it).
    for (const gate of gates) gate.setLimit(granted?.resources.diskIo ?? {});
    const extraDisks = await openExtraDisks(extraSpecs, instance.dir);
    cleanups.push(() => Promise.all(extraDisks.map((d) => d.close())));
    for (const d of extraDisks) d.gate.setLimit(granted?.resources.diskIo ?? {});
    const exported = new Map<string, BlockDevice>([...gates.map((gate, i): [string, BlockDevice] => [`disk${i}`, gate]), ...extraDisks.map((d): [string, BlockDevice] => [exportNameOf(d), d.gate])]);
    const nbd = new NbdServer({ exports: exported, onError: (err) => collector.error(`nbd: ${errorMessage(err)}`) });
    const socket = join(runDir, 'nbd.sock');
    await nbd.listen(socket);
    cleanups.push(() => nbd.close());

    const overlay = network ? { socket: join(runDir, 'net.sock'), mac: overlayMac(network, instanceName) } : undefined;
    const base: VmSpec = {
      disks: [
        ...devices.map((_, i) => ({ nbdSocket: socket, nbdExport: `disk${i}` })),
        ...extraDisks.map((d) => ({ nbdSocket: socket, nbdExport: exportNameOf(d), readOnly: d.readOnly })),
      ],
      memoryMiB,
      cpus,
      arch: manifest.hardware.arch,
      accel: options.accel,
      // hostme forwards a stdio console itself, through the console gate (hostme grant|revoke NAME console).
      console: options.console === 'stdio' ? 'none' : options.console,
      until: options.until,
      keepRunning: options.keepRunning,
      timeoutMs: options.timeoutMs,
      extraArgs: [...(options.extraQemuArgs ?? []), ...(vga ? SCREEN_QEMU_ARGS : [])],
      // A disk read through our NBD server proves the guest kernel runs (KVM watchdog).
      activity: () => nbd.stats.requests.read,
      onNotice: (message) => (options.onNotice ? options.onNotice(message) : notices.push(message)),
      overlay,
      ...(netdev ? { netdev } : {}),
      ...options.vm,
    };
    let vm: VmHandle | undefined;
    let resumed: { ms: number } | undefined;
    const plan = (await planning) && overlaysUnchanged(overlays, notices) ? await planning : undefined;
    if (plan) collector.mark('resume-planned');
    const readyAtResume = options.until !== undefined && options.until.source === manifest.qemuSnapshot?.readyMark;
    if (!plan) await (await planning.catch(() => undefined))?.lazy?.close({ drain: false });
    if (plan) {
      try {
        const started = await resumeVm(plan, base, collector, readyAtResume);
        vm = started.vm;
        collector.stats.msToResume = started.ms;
        resumed = { ms: started.ms };
      } catch (err) {
        await plan.lazy?.close({ drain: false });
        notices.push(`snapshot not resumed (${errorMessage(err)}); booting from scratch`);
      }
    }
    // The boot working set overlaps with the kernel download (demand priority); a resumed guest has it in RAM.
    const prefetching = prefetch(manifest, devices, resolved, collector, options.fill === true, resumed === undefined);
    cleanups.push(async () => prefetching.cancel());
    const machine = vm ?? (await launchVm({ ...(await startBoot()), ...base }));
    collector.mark('qemu-started');
    const consoleGate = new ConsoleGate(machine, options.consoleGranted !== false);
    if (options.console === 'stdio') bridgeConsole(machine, consoleGate);
    const screen = vga ? new ScreenCaretaker(() => machine.screendump(), granted?.screen === true, instanceName) : undefined;
    const readyMark = new RegExp(manifest.qemuSnapshot?.readyMark ?? 'HOSTME-READY');
    if (options.type !== undefined) {
      const text = options.type;
      const running = machine;
      if (resumed) running.sendConsole(text);
      else void running.waitForConsole(readyMark, { since: 0 }).then(() => running.sendConsole(text), () => {});
    }
    let ports: PortCaretaker | undefined;
    if (netdev) {
      const caretaker = new PortCaretaker(async (commandLine) => String(await machine.qmp.execute('human-monitor-command', { 'command-line': commandLine }, { timeoutMs: 5000 })));
      ports = caretaker;
      cleanups.push(async () => caretaker.close());
      for (const p of tcpPorts) await caretaker.grant({ hostAddr: p.hostAddr ?? '127.0.0.1', hostPort: p.hostPort, guestPort: p.guestPort, proto: 'tcp' }).catch(async (err) => {
        // A guest that already reached --until and was stopped needs no port; any other failure stops the run.
        const stopped = await Promise.race([machine.exited.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2000))]);
        if (stopped) return;
        await machine.shutdown();
        throw err;
      });
      for (const p of netdev.hostfwd) caretaker.adopt({ hostAddr: p.hostAddr ?? '127.0.0.1', hostPort: p.hostPort, guestPort: p.guestPort, proto: 'udp' });
    }
    let egress: EgressProxy | undefined;
    let folders: FolderServer | undefined;
    let bandwidth: { initial?: number; set: (mbit: number | undefined) => Promise<void> } | undefined;
    if (network && base.overlay) {
      // Denied: the link goes down before the switch dials, so not one frame passes.
      if (!plan0.linkUp) await setLinkOrStop(machine, false);
      // The caretakers at the gateway: always there (deny = an empty allow-list), so a grant needs no reboot.
      const egressProxy = await EgressProxy.listen(join(runDir, 'egress.sock'), granted?.net.egress ?? []);
      egress = egressProxy;
      cleanups.push(() => egressProxy.close());
      const folderServer = await FolderServer.listen(join(runDir, '9p.sock'), folderExports(granted?.dirs ?? []));
      folders = folderServer;
      cleanups.push(() => folderServer.close());
      const services = [{ port: EGRESS_PORT, socket: egressProxy.socketPath }, { port: FOLDER_PORT, socket: folderServer.socketPath }];
      // QEMU listens; the machine's switch (started on demand) dials it.
      const joined = await attachGuest({ network, instance: instanceName, socket: base.overlay.socket, site: options.net?.site, dir: options.net?.dir, hub: options.net?.hub, token: options.net?.token, services, isolated: plan0.isolated }).catch(async (err) => {
        await machine.shutdown();
        throw err;
      });
      notices.push(`joined network ${network} (${joined.subnet}) as ${instanceName}.${network}.hostme`);
      // The bandwidth caretaker: the switch port polices frames each way (hostme grant NAME bandwidth MBIT).
      const switchDir = options.net?.dir ?? netStateDir();
      const setBandwidth = async (mbit: number | undefined) => { await controlRequest(switchDir, { op: 'bandwidth', instance: instanceName, ...(mbit !== undefined ? { mbit } : {}) }); };
      const initial = granted?.resources.bandwidthMbit;
      if (initial !== undefined) await setBandwidth(initial);
      bandwidth = { ...(initial !== undefined ? { initial } : {}), set: setBandwidth };
      if (!plan0.linkUp) notices.push(`network ${network} not granted: the NIC is present with its link down (hostme grant ${instanceName} net)`);
    }
    // The CPU caretaker: a cgroup on QEMU, made at the first hostme grant NAME cpus.
    const cpu = new CpuLimit(machine.pid, instanceName);
    cleanups.push(() => cpu.close());
    if (!ephemeral) {
      // hostme grant|revoke|grants NAME talk to this (src/grants/runtime.ts).
      try {
        const control = await serveGrantControl({ instanceDir: instance.dir, instance: instanceName, qmp: machine.qmp, nic: Boolean(network && base.overlay), net: plan0.linkUp, egress, folders, disks: gates, extraDisks, ...(ports ? { ports } : {}), cpu, console: consoleGate, ...(screen ? { screen } : {}), ...(bandwidth ? { bandwidth } : {}), ...(granted?.resources.diskIo ? { diskIo: granted.resources.diskIo } : {}) });
        cleanups.push(() => control.close());
      } catch (err) {
        notices.push(`grants cannot be changed while this instance runs: ${errorMessage(err)}`);
      }
    }
    await instance.recordQemuPid(machine.pid);
    let readyError: unknown;
    if (resumed && readyAtResume) {
      // The guest printed its ready mark before it was saved: resumed is ready.
      collector.stats.msToReady = Math.round(collector.elapsedMs());
      collector.mark('ready');
      if (!options.keepRunning) void machine.shutdown();
    } else machine.ready.then(
      () => {
        // From the user's point of view: since the run started, manifest and kernel fetch included.
        collector.stats.msToReady = Math.round(collector.elapsedMs());
        collector.mark('ready');
      },
      (err) => {
        readyError = err;
      },
    );
    const finished = (async () => {
      const exit = await machine.exited;
      await machine.ready.catch(() => {});
      prefetching.cancel();
      await cleanup();
      // gc lists every cached object: only worth it when this run added some.
      if (collector.stats.chunksFetched > 0) await cache.gc(defaultCacheLimit()).catch(() => {});
      collector.close();
      return { exit, stats: collector.stats, readyError };
    })();
    return { manifest, digest: resolved.image.digest, vm: machine, collector, devices, offline: resolved.offline, notices, finished, filled: prefetching.done, resumed, ...(resumed && plan?.lazy ? { ramTouched: () => plan.lazy!.blob.touched } : {}) };
  } catch (err) {
    await cleanup();
    collector.close();
    throw err;
  }
}

/** The user's terminal on the guest's serial, through the console gate; Ctrl-] stops the VM. */
function bridgeConsole(machine: VmHandle, gate: ConsoleGate): void {
  const terminal = stdioBridge();
  const stopShowing = gate.onOutput((text) => terminal.show(Buffer.from(text, 'utf8')));
  terminal.attachInput(new Writable({ write: (chunk: Buffer, _encoding, done) => { gate.send(chunk); done(); } }), () => void machine.shutdown());
  void machine.exited.then(() => {
    stopShowing();
    terminal.detach();
  });
}

/** Granted folders as 9P exports, named by their base name (the guest's aname). */
function folderExports(dirs: GrantSet['dirs']): Array<{ name: string; path: string; mode: 'ro' | 'rw' }> {
  const names = new Set<string>();
  return dirs.map((d) => {
    const name = FolderServer.exportName(d.path);
    if (names.has(name)) throw new HostmeError('usage', `two granted folders are both named "${name}" (the name the guest mounts them by); rename one`);
    names.add(name);
    return { name, path: d.path, mode: d.mode };
  });
}

/** The stand-in for a denied network: the NIC stays, its link goes down; a VM that cannot be cut off does not run. */
async function setLinkOrStop(machine: VmHandle, up: boolean): Promise<void> {
  try {
    await machine.qmp.execute('set_link', { name: 'ov0', up }, { timeoutMs: 5000 });
  } catch (err) {
    await machine.shutdown();
    throw new HostmeError('grant-failed', `cannot take the network link down: ${errorMessage(err)}`);
  }
}

async function prepareBoot(resolved: ResolvedImage, scheduler: FetchScheduler, runDir: string, cacheDir: string | undefined, append?: string) {
  const { boot } = resolved.image.manifest;
  if (boot.mode === 'firmware') return { firmwareBoot: true };
  const [kernel, initrd] = await Promise.all([
    materializeBlob(resolved.repo, scheduler, boot.kernel, 'kernel', { cacheDir, fallbackFile: join(runDir, 'kernel') }),
    boot.initrd ? materializeBlob(resolved.repo, scheduler, boot.initrd, 'initrd', { cacheDir, fallbackFile: join(runDir, 'initrd') }) : undefined,
  ]);
  return { kernel, initrd, cmdline: append ? `${boot.cmdline} ${append}` : boot.cmdline };
}

/**
 * Fetch the recorded boot working set in order (the scheduler runs demand
 * reads first), then with --fill everything else at background priority.
 */
function prefetch(
  manifest: Manifest,
  devices: ChunkedImageDevice[],
  resolved: Pick<ResolvedImage, 'cache'>,
  collector: RunStatsCollector,
  fill: boolean,
  bootSet = true,
): { cancel(): void; done: Promise<boolean> } {
  let cancelled = false;
  let failures = 0;
  const fetchAhead = async (disk: number, chunk: number, priority: 'prefetch' | 'background') => {
    const device = devices[disk];
    if (!device || cancelled) return;
    // Chunks a local cache holds are read quickly on demand: only the network is worth getting ahead of.
    await device.prefetch(chunk, { priority, skipLocal: true }).then(
      (outcome) => {
        if (outcome === 'fetched' && !cancelled) collector.stats.chunksPrefetched++;
      },
      () => {
        failures++; // the guest's own read will retry and report it
      },
    );
  };
  const done = (async () => {
    await Promise.all((bootSet ? (manifest.prefetch ?? []) : []).map(([disk, chunk]) => fetchAhead(disk, chunk, 'prefetch')));
    // Filling is for the cache (background chunks do not stay in memory): without one there is nothing to fill.
    if (!fill || cancelled || !resolved.cache) return false;
    for (const [disk, device] of devices.entries()) {
      const pending: Promise<void>[] = [];
      for (let chunk = 0; chunk < device.index.ids.length && !cancelled; chunk++) {
        if (chunkLength(device.index, chunk) > 0) pending.push(fetchAhead(disk, chunk, 'background'));
        if (pending.length >= 64) await Promise.all(pending.splice(0));
      }
      await Promise.all(pending);
    }
    return fill && !cancelled && failures === 0;
  })();
  return {
    cancel: () => {
      cancelled = true;
    },
    done,
  };
}
