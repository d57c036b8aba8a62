// The run page (/i/NAME/run): boots an i686 image in v86 with its serial
// console in xterm.js, reading the image through the verifying chunk reader.
// Bundled by scripts/build-web.sh into dist-web/run.js. Browser-only.
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { BrowserCacheStore } from './reader/cache.js';
import { prepareZstd, useZstdModule, webCodecs } from './reader/codecs.js';
import { browserGrantList } from '../grants/page-grants.js';
import type { Manifest } from '../format/manifest.js';
import { HostmeError, isHostmeError } from '../errors.js';
import { ImageReader, type ReaderStats } from './reader/reader.js';
import { V86ChunkDisk, type DiskReadFailure } from './reader/v86-disk.js';
import { Prefetcher, prefetchChunks, type PrefetchStats } from './prefetch.js';
import { offerProtocolHandler } from './protocol-handler.js';
import { GuestViews, isGuestView } from './screen.js';
import { planStart, type StartPlan } from './snapshot-restore.js';
import { warm, warmPaths } from './warm.js';
import { loadV86, v86Module, type V86Emulator } from './v86-loader.js';
import { PageSwarm } from './page-swarm.js';

/** What tests and embedders can observe (window.hostmeRun). */
interface RunState {
  state: string;
  /** 'restore' when the page resumed the image's memory snapshot, 'boot' for a cold boot. */
  start?: StartPlan['kind'];
  transcript: string;
  stats: ReaderStats;
  bootMs?: number;
  disk?: { chunks: number; touched: number };
  /** The disk chunks the guest has read so far (not those only prefetched), ascending. */
  guestReadChunks?: () => number[];
  prefetch?: PrefetchStats;
  errors: string[];
  /** The overlay network (docs/net.md), when the page joined one. */
  net?: { network: string; instance: string; address?: string; name?: string; unreachable?: boolean };
  /** Milestones in ms since navigation (performance.now()): where a start spends its time. */
  timings: Record<string, number>;
  /** The image's WebRTC swarm (docs/peers.md "Browser peers"), when the page joined it. */
  peers?: { image: string; listed: number; open: () => string[]; served: () => { objects: number; bytes: number; refused: number }; dropped: string[]; skipped: Record<string, number> };
  /** Resolves when every chunk fetched so far is in the browser cache (so this tab can serve it). */
  flushCache?: () => Promise<void>;
}

const body = document.body;
const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const messageEl = $<HTMLDivElement>('message');
const eventsEl = $<HTMLUListElement>('events');
const progressEl = $<HTMLProgressElement>('progress');
const progressText = $<HTMLSpanElement>('progress-text');
const stopButton = $<HTMLButtonElement>('stop');
const fullscreenButton = $<HTMLButtonElement>('fullscreen');
const terminalEl = $<HTMLDivElement>('terminal');
const screenEl = $<HTMLDivElement>('screen');

const name = body.dataset.image ?? '';
const version = body.dataset.version || undefined;
const arch = body.dataset.arch ?? '';
const runCommand = body.dataset.runCommand ?? `hostme run ${location.origin}/i/${name}`;
const repoUrl = `${location.origin}/`;
const params = new URLSearchParams(location.search);

const run: RunState = { state: 'loading', transcript: '', stats: { fetchedObjects: 0, fetchedBytes: 0, cachedObjects: 0, cachedBytes: 0 }, errors: [], timings: {} };
(window as unknown as { hostmeRun: RunState }).hostmeRun = run;

// Chunk writes to the browser cache wait until the machine has started (or failed, or 30 s).
let releaseWrites: () => void = () => {};
const machineStarted = new Promise<void>((resolve) => {
  releaseWrites = resolve;
  setTimeout(resolve, 30_000);
});

function mark(milestone: string): void {
  run.timings[milestone] = Math.round(performance.now());
}

function setState(state: string): void {
  run.state = state;
  body.dataset.state = state;
}

function mib(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

function showMessage(kind: 'error' | 'info', html: Node[], retry?: () => void): void {
  messageEl.className = `show ${kind}`;
  messageEl.replaceChildren(...html);
  if (retry) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = 'Retry';
    b.id = 'retry';
    b.addEventListener('click', () => {
      messageEl.className = '';
      messageEl.replaceChildren();
      retry();
    });
    messageEl.append(' ', b);
    b.focus();
  }
}

function text(t: string, tag = 'span'): HTMLElement {
  const el = document.createElement(tag);
  el.textContent = t;
  return el;
}

function needsLocal(why: string): void {
  setState('needs-local');
  progressEl.hidden = true;
  progressText.textContent = '';
  showMessage('info', [text(why, 'p'), text('Run it on your computer with:', 'p'), text(runCommand, 'pre')]);
}

function fail(err: unknown, retry?: () => void): void {
  releaseWrites();
  const message = err instanceof Error ? err.message : String(err);
  run.errors.push(message);
  setState('error');
  const code = rootCode(err);
  let title = 'The image could not be started.';
  if (code === 'store-unavailable' || code === 'store-bad-redirect') title = 'The network connection to the image repository was lost.';
  else if (code === 'object-invalid' || code === 'index-corrupt') title = 'A piece of the image failed its integrity check and was rejected.';
  else if (code === 'signature-invalid' || code === 'key-mismatch' || code === 'manifest-unsigned') title = 'The image signature is not valid: refusing to run it.';
  else if (code === 'format-unsupported') title = 'This image needs a newer hostme.';
  showMessage('error', [text(title, 'strong'), text(message, 'p')], retry);
}

/** The code of the innermost HostmeError (a disk read error wraps the store's reason). */
function rootCode(err: unknown): string | undefined {
  let code: string | undefined;
  for (let e = err, depth = 0; e && depth < 8; e = (e as { cause?: unknown }).cause, depth++) if (isHostmeError(e)) code = e.code;
  return code;
}

let totalBootBytes = 0;
let bootBytesDone = 0;
function updateProgress(stats: ReaderStats): void {
  run.stats = stats;
  body.dataset.fetchedObjects = String(stats.fetchedObjects);
  body.dataset.cachedObjects = String(stats.cachedObjects);
  progressText.textContent =
    `fetched ${mib(stats.fetchedBytes)} (${stats.fetchedObjects} objects), ` +
    `from browser cache ${mib(stats.cachedBytes)} (${stats.cachedObjects} objects)` +
    (stats.peerObjects ? `, of which from peers ${mib(stats.peerBytes ?? 0)} (${stats.peerObjects} objects)` : '') +
    (run.prefetch?.planned ? `; prefetched ${run.prefetch.fetched} of ${run.prefetch.planned} boot chunks` : '');
  if (totalBootBytes > 0 && bootBytesDone < totalBootBytes) {
    progressEl.max = totalBootBytes;
    progressEl.value = bootBytesDone;
  }
}

function updatePrefetch(stats: PrefetchStats): void {
  run.prefetch = stats;
  body.dataset.prefetched = String(stats.fetched);
  updateProgress(run.stats);
}

/** What v86 starts from: the snapshot's saved state, or the kernel and initrd (read whole, with a progress bar). */
async function fetchStart(reader: ImageReader, m: Manifest, plan: StartPlan): Promise<Record<string, unknown>> {
  const counted = (bytes: number): void => {
    bootBytesDone += bytes;
    progressEl.value = bootBytesDone;
  };
  if (plan.kind === 'restore') {
    totalBootBytes = plan.snapshot.size;
    progressEl.max = totalBootBytes;
    const state = await reader.readBlob(plan.snapshot, 'memory snapshot', 8, counted);
    return { initial_state: { buffer: state.buffer } };
  }
  if (m.boot.mode !== 'direct') throw new HostmeError('internal', 'unreachable: firmware boot was refused earlier');
  const boot = m.boot;
  totalBootBytes = boot.kernel.size + (boot.initrd?.size ?? 0);
  progressEl.max = totalBootBytes;
  progressEl.value = 0;
  const [kernel, initrd] = await Promise.all([
    reader.readBlob(boot.kernel, 'kernel', 6, counted),
    boot.initrd ? reader.readBlob(boot.initrd, 'initrd', 6, counted) : Promise.resolve(undefined),
  ]);
  return { bzimage: { buffer: kernel.buffer }, ...(initrd ? { initrd: { buffer: initrd.buffer } } : {}), cmdline: boot.cmdline };
}

async function main(): Promise<void> {
  if (typeof WebAssembly !== 'object' || typeof WebAssembly.instantiate !== 'function') {
    needsLocal('This browser cannot run WebAssembly, which the in-browser emulator needs.');
    return;
  }
  if (typeof crypto === 'undefined' || !crypto.subtle) {
    needsLocal('This page needs WebCrypto (a secure context: https:// or localhost) to verify the image.');
    return;
  }
  if (arch !== 'i686') {
    needsLocal(`This image is ${arch}: it needs \`hostme run\` (the in-browser emulator runs 32-bit i686 images only).`);
    return;
  }
  // The zstd decoder is v86's own (reader/codecs.ts): v86.wasm starts downloading and compiling
  // now, alongside the manifest, so the snapshot's first chunk does not wait for it.
  useZstdModule(v86Module);
  prepareZstd();
  const cache = new BrowserCacheStore(webCodecs, typeof caches === 'undefined' ? undefined : caches, (warning) => {
    eventsEl.append(text(warning, 'li'));
    body.dataset.cacheWarning = warning;
  });
  const swarm = joinSwarm(cache);
  // The snapshot's objects start streaming now, alongside the manifest's fetch and verification
  // and v86's download; the reader's requests for them then hit the HTTP cache (src/web/warm.ts).
  // Not when other tabs or peers of the swarm are there to serve them.
  if (params.get('boot') !== 'cold') {
    void swarm.listed.then((listed) => {
      if (listed === 0) void warm(warmPaths(body), 'high').then(() => mark('warmed'));
    });
  }

  let pins: Storage | null = null;
  try {
    pins = window.localStorage;
  } catch {
    pins = null;
  }
  const reader = await ImageReader.open({
    repoUrl,
    name,
    ...(version ? { version } : {}),
    ...(params.get('key') ? { publicKey: params.get('key')! } : {}),
    pins,
    cache,
    onEvent: (ev) => {
      if (ev.type === 'progress') updateProgress(ev.stats);
      else if (ev.type === 'invalid-object') {
        eventsEl.append(text(`Rejected: ${ev.message}; trying the next source.`, 'li'));
        body.dataset.invalidObject = ev.label;
      }
    },
  });
  const m = reader.manifest;
  mark('manifest');
  run.flushCache = () => reader.flushCache();
  swarm.page?.attach(reader);
  if (m.hardware.arch !== 'i686') {
    needsLocal(`This image is ${m.hardware.arch}: it needs \`hostme run\`.`);
    return;
  }
  if (m.boot.mode !== 'direct') {
    needsLocal('This image boots from firmware; the in-browser runner supports direct kernel boot only.');
    return;
  }
  const plan = planStart(m, body.dataset.v86Version ?? '', params.get('boot') === 'cold');
  run.start = plan.kind;
  body.dataset.start = plan.kind;
  if (plan.kind === 'boot' && plan.notice) {
    eventsEl.append(text(plan.notice, 'li'));
    body.dataset.notice = plan.notice;
  }
  setState('fetching');
  reader.holdWrites(machineStarted);
  // The emulator and the disk's index load while the boot blobs stream.
  const emulatorLoading = loadV86().then((loaded) => {
    mark('v86Loaded');
    return loaded;
  });
  const diskIndexLoading = reader.openDisks();
  emulatorLoading.catch(() => {});
  diskIndexLoading.catch(() => {});
  // Members are there: give a first channel a moment to open, so the boot blobs come from it.
  if ((await swarm.listed) > 0) await swarm.page?.firstPeer(1500);
  const machineStart = await fetchStart(reader, m, plan);
  mark('startBlobs');
  progressEl.removeAttribute('value'); // indeterminate: the disk streams on demand from here

  const holder: { emulator?: V86Emulator } = {};
  const disk = new V86ChunkDisk((await diskIndexLoading)[0]!, (failure: DiskReadFailure) => {
    // Pause the machine while its disk is unreachable (a guest I/O timeout would be worse).
    const wasRunning = holder.emulator?.is_running() ?? false;
    if (wasRunning) void holder.emulator?.stop();
    const resume = run.state === 'ready' ? 'ready' : 'booting';
    fail(failure.error, () => {
      setState(resume);
      failure.retry();
      if (wasRunning) void holder.emulator?.run();
    });
  });
  run.guestReadChunks = () => [...disk.touchedChunks].sort((x, y) => x - y);
  // The prefetch list is a cold boot's working set: a restored machine reads other chunks.
  const prefetcher = new Prefetcher(disk, plan.kind === 'boot' ? prefetchChunks(m.prefetch, 0, disk.prefetchCapacity) : [], updatePrefetch);
  void prefetcher.run();
  const { V86, options: emulatorFiles } = await emulatorLoading;

  const term = new Terminal({ convertEol: false, cursorBlink: true, scrollback: 5000, fontSize: 14 });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(terminalEl);
  const requestedView = params.get('view');
  const views = new GuestViews({
    consolePanel: terminalEl,
    screenPanel: screenEl,
    consoleButton: $<HTMLButtonElement>('view-console'),
    screenButton: $<HTMLButtonElement>('view-screen'),
    initial: isGuestView(requestedView) ? requestedView : 'console',
    onShow: (view) => {
      if (view !== 'console') return;
      fit.fit();
      term.focus();
    },
  });
  window.addEventListener('resize', () => fit.fit());

  const relay = overlayRelay(m.network?.join);
  showGrants(m.network?.join);
  const started = performance.now();
  setState('booting');
  const vm = new V86({
    ...(relay ? { net_device: { type: 'ne2k', relay_url: relay } } : {}),
    ...emulatorFiles,
    ...machineStart,
    hda: disk,
    memory_size: plan.memoryBytes,
    vga_memory_size: plan.vgaMemoryBytes,
    screen_container: views.screenContainer,
    autostart: true,
    // The PS/2 keyboard feeds the VGA console; GuestViews enables it only while the screen has focus.
    disable_keyboard: false,
    disable_mouse: true,
    disable_speaker: true,
  });
  holder.emulator = vm;
  views.attachKeyboard(vm);
  vm.add_listener('emulator-ready', () => releaseWrites());
  if (plan.kind === 'restore') {
    // The saved machine sits at its ready point already: nothing will print the marker again.
    vm.add_listener('emulator-ready', () => {
      term.write('\x1b[2m[hostme: resumed from a memory snapshot; press Enter for a prompt]\x1b[0m\r\n');
      markReady();
    });
  }
  function markReady(): void {
    mark('ready');
    run.bootMs = Math.round(performance.now() - started);
    body.dataset.bootMs = String(run.bootMs);
    progressEl.max = 1;
    progressEl.value = 1;
    setState('ready');
  }
  let pending = '';
  vm.add_listener('serial0-output-byte', (value) => {
    const ch = String.fromCharCode(value as number);
    term.write(ch);
    run.transcript += ch;
    if (run.transcript.length > 200000) run.transcript = run.transcript.slice(-100000);
    if (run.state !== 'ready') {
      pending = (pending + ch).slice(-32);
      if (pending.includes('HOSTME-READY')) markReady();
    }
    if (relay && !run.net?.address) watchNetLine(ch);
    run.disk = { chunks: Math.ceil(disk.byteLength / m.disks[0]!.chunkSize), touched: disk.touchedChunks.size };
  });
  term.onData((data) => vm.serial0_send(data));
  if (views.view === 'console') term.focus();

  stopButton.disabled = false;
  fullscreenButton.disabled = false;
  stopButton.addEventListener('click', () => {
    prefetcher.stop();
    void vm.stop().then(() => vm.destroy());
    stopButton.disabled = true;
    setState('stopped');
    progressText.textContent += ' - stopped';
  });
  fullscreenButton.addEventListener('click', () => {
    views.requestFullscreen().then(
      () => {
        if (views.view !== 'console') return;
        fit.fit();
        term.focus();
      },
      () => {}, // refused (no user gesture, or not allowed in this frame): nothing to undo
    );
  });
}

/**
 * Joins the image's public swarm through the hub that served the page (it
 * says so in data-swarm: open hub, open image). Not with a token in use (a
 * private network's page stays out of public swarms) or `?peers=off`.
 */
function joinSwarm(cache: BrowserCacheStore): { page?: PageSwarm; listed: Promise<number> } {
  const image = body.dataset.swarm;
  if (!image || params.has('token') || params.get('peers') === 'off' || typeof RTCPeerConnection !== 'function') return { listed: Promise.resolve(0) };
  const note = (line: string): void => void eventsEl.append(text(line, 'li'));
  const page = new PageSwarm(image, cache, {
    onPeer: () => {
      if (run.timings.firstPeer === undefined) mark('firstPeer');
      body.dataset.peers = String(page.rtc.peers.length);
    },
    onDropped: (peer, reason, wrongBytes) => {
      note(wrongBytes ? `Peer ${peer} ${reason}: refused, dropped and reported to the hub.` : `Peer ${peer} dropped: ${reason}.`);
      body.dataset.peerDropped = page.dropped.join(' ');
    },
  });
  run.peers = { image, listed: 0, open: () => page.rtc.peers.map((p) => p.name), served: () => page.served(), dropped: page.dropped, skipped: page.skipped };
  const listed = page.start().then(
    (n) => {
      run.peers!.listed = n;
      body.dataset.swarmState = 'joined';
      return n;
    },
    (err: unknown) => {
      body.dataset.swarmState = 'unavailable';
      note(`Not sharing with other tabs: ${err instanceof Error ? err.message : String(err)}.`);
      return 0;
    },
  );
  return { page, listed };
}

/** What the image asks and what this page grants, in `hostme run`'s words (docs/grants.md). */
function showGrants(asked: string | undefined): void {
  const list = $<HTMLUListElement>('grants');
  list.replaceChildren(...browserGrantList({ asked, joined: run.net?.network }).map((line) => {
    const item = text(`${line.text}: ${line.status}`, 'li');
    item.dataset.kind = line.kind;
    item.dataset.status = line.status;
    return item;
  }));
}

/**
 * The overlay network (docs/net.md): `?net=NETWORK` or the image's
 * network.join, with `?token=` from the hub's operator. v86 speaks the hub's
 * WebSocket framing itself (one Ethernet frame per binary message); the page
 * checks once that the hub answers and says so when it does not: the VM runs
 * on without a network.
 */
function overlayRelay(imageNetwork: string | undefined): string | undefined {
  const network = params.get('net') ?? imageNetwork;
  if (!network) return undefined;
  if (!/^[a-z0-9][a-z0-9-]{0,31}$/.test(network)) {
    eventsEl.append(text(`"${network}" is not a network name; the VM runs without a network.`, 'li'));
    return undefined;
  }
  let instance = params.get('instance') ?? '';
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(instance)) {
    // One name per tab and image (sessionStorage is per tab): a reload keeps the
    // address, and two tabs, even resumed from one snapshot with one MAC, get two.
    const key = `hostme-net-instance:${name}`;
    instance = sessionStorage.getItem(key) ?? `tab-${Math.random().toString(36).slice(2, 10)}`;
    sessionStorage.setItem(key, instance);
  }
  const query = `token=${encodeURIComponent(params.get('token') ?? '')}`;
  const base = `${location.origin.replace(/^http/, 'ws')}/net/${network}`;
  run.net = { network, instance };
  body.dataset.net = network;
  probeHub(`${base}?${query}&instance=${encodeURIComponent(`${instance}-probe`)}`, network);
  return `${base}?${query}&instance=${encodeURIComponent(instance)}`;
}

function probeHub(url: string, network: string): void {
  const probe = new WebSocket(url);
  let opened = false;
  probe.onopen = () => {
    opened = true;
    probe.close();
  };
  probe.onclose = () => {
    if (opened) return;
    run.net = { ...run.net!, unreachable: true };
    body.dataset.netState = 'unreachable';
    eventsEl.append(text(`The network ${network} is unreachable (no hub here, or the token was refused); the VM keeps running without it.`, 'li'));
  };
}

let netLine = '';
function watchNetLine(ch: string): void {
  if (ch !== '\r' && ch !== '\n') {
    netLine = (netLine + ch).slice(-120);
    return;
  }
  const match = /HOSTME-NET \S+ (\d+\.\d+\.\d+\.\d+) ?(\S*)/.exec(netLine);
  netLine = '';
  if (!match) return;
  run.net = { ...run.net!, address: match[1], name: match[2] || undefined };
  body.dataset.netAddress = match[1];
  eventsEl.append(text(`On network ${run.net.network} as ${match[2] || run.net.instance}, address ${match[1]}.`, 'li'));
}

function start(): void {
  setState('loading');
  main().catch((err: unknown) => fail(err, () => start()));
}

window.addEventListener('offline', () => eventsEl.append(text('The browser reports that the network is offline.', 'li')));
offerProtocolHandler(document.getElementById('register-handler') as HTMLButtonElement | null, document.getElementById('handler-status'));
start();
