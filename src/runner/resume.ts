import { rm, symlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Manifest } from '../format/manifest.js';
import { errorMessage, HostmeError } from '../errors.js';
import type { CowOverlay } from '../device/cow-overlay.js';

/** Writes made after the saved point would not match the resumed guest's page cache. */
export function overlaysUnchanged(overlays: CowOverlay[], notices: string[]): boolean {
  if (overlays.every((o) => o.writtenBlocks === 0)) return true;
  notices.push('snapshot not resumed: this instance has disk changes made after the saved point (hostme reset, or --fresh, starts over); booting from scratch');
  return false;
}
import type { ObjectSource } from '../store/object-store.js';
import { probeAccel, type Accel } from '../vm/accel.js';
import { defaultQemuBinary, launchVm, type VmHandle, type VmSpec } from '../vm/qemu.js';
import { randomUUID } from 'node:crypto';
import { afterResumeCommand, nicCount, plugNics, qemuBinaryVersion, restoreMachine } from '../vm/snapshot.js';
import { materializeBlob, stampMatches } from './blob-file.js';
import { openLazyRam, type LazyRam } from '../lazyfs/lazy-ram.js';
import { qemuUser } from '../vm/confine.js';
import { FetchScheduler } from '../store/fetch-scheduler.js';
import type { ResolvedImage } from './image-source.js';
import type { RunStatsCollector } from './run-stats.js';

type QemuSnapshot = NonNullable<Manifest['qemuSnapshot']>;

export interface ResumePlan {
  snapshot: QemuSnapshot;
  /** The RAM served lazily over FUSE (ramFile is its path): closed by the run's cleanup. */
  lazy?: LazyRam;
  /** With lazy RAM: the recorded working set, verified and present (the guest continues only then). */
  workingSet?: Promise<void>;
  /** Verified RAM (sparse: holes are zero chunks), mapped copy-on-write by QEMU, never written. */
  ramFile: string;
  /** Verified device state (the migration stream). */
  stateFile: string;
}

export interface ResumeContext {
  resolved: ResolvedImage;
  scheduler: ObjectSource;
  /** The cache root (RAM and state kept under blobs/, shared by instances), or undefined: files in runDir. */
  cacheRoot?: string;
  runDir: string;
  accel?: Accel;
  /** Lazy RAM over FUSE (default: HOSTME_LAZY_RAM, else lazy where hostme runs as root). */
  lazyRam?: boolean;
  extraDisks: number;
  /** NICs the run wants (hot-plugged after the resume into the snapshot's free root ports). */
  nics: number;
  /** One-line reasons for not resuming go here. */
  notices: string[];
}

/**
 * Decide whether the image's QEMU snapshot can be resumed here and, if so,
 * fetch and verify its RAM and device state. Any reason not to (another
 * QEMU, another accelerator, the instance's disk changed since, a chunk that
 * fails verification) becomes one notice and `undefined`: the caller boots.
 */
export async function planResume(ctx: ResumeContext): Promise<ResumePlan | undefined> {
  const { manifest } = ctx.resolved.image;
  const snapshot = manifest.qemuSnapshot;
  if (!snapshot || manifest.hardware.arch !== 'x86_64') return undefined;
  const refuse = (why: string) => {
    ctx.notices.push(`snapshot not resumed: ${why}; booting from scratch`);
    return undefined;
  };
  if (ctx.extraDisks > 0) return refuse('extra disks change the machine it was saved from');
  const ports = snapshot.hotplugPorts ?? 0;
  if (ctx.nics > ports) return refuse(`this run wants ${ctx.nics} NIC(s) and the saved machine has ${ports} free slot(s) for them (take the snapshot again with this hostme)`);
  // With a cache, the verified RAM file is the cache: its chunks skip the object cache (one fsync each).
  // The (small) indexes still go through the object cache, so a warm start needs no request.
  const chunks = ctx.cacheRoot && ctx.resolved.mirrors ? new FetchScheduler(ctx.resolved.mirrors, 16) : ctx.scheduler;
  const fetch = (ref: QemuSnapshot['ram'], label: string, file: string) =>
    materializeBlob(ctx.resolved.repo, ctx.scheduler, ref, label, { cacheDir: ctx.cacheRoot, fallbackFile: join(ctx.runDir, file) }, chunks).catch((err: unknown) => {
      throw new HostmeError('snapshot-refused', `${label} refused: ${errorMessage(err)}`, { label }, { cause: err });
    });
  try {
    // The (small) device state is fetched while QEMU's version and the accelerator are checked; the RAM only after.
    const state = fetch(snapshot.deviceState, 'snapshot device state', 'state.bin');
    state.catch(() => {});
    const [qemu, accel] = await Promise.all([qemuBinaryVersion(process.env.HOSTME_QEMU ?? defaultQemuBinary('x86_64')), ctx.accel ?? probeAccel()]);
    if (qemu !== snapshot.qemu) return refuse(`it was saved by QEMU ${snapshot.qemu} and this is QEMU ${qemu}`);
    if (accel !== snapshot.accel) return refuse(`it was saved under ${snapshot.accel} and this machine runs ${accel}`);
    const lazy = await openLazy(ctx, snapshot, chunks);
    if (lazy) {
      // Only the (small) device state before QEMU starts: the working set streams while QEMU starts
      // and loads the state (resumeVm continues the guest once it is verified), the rest afterwards.
      // A refused chunk is recorded by the blob (blob.failed): resumeVm names it when the resume is abandoned.
      const workingSet = lazy.blob.prefetch(snapshot.ramWorkingSet ?? []);
      workingSet.catch(() => {}); // awaited by resumeVm; a refusal before then is not unhandled
      try {
        return { snapshot, ramFile: lazy.path, stateFile: await state, lazy, workingSet };
      } catch (err) {
        await lazy.close();
        throw err;
      }
    }
    const [ramFile, stateFile] = await Promise.all([fetch(snapshot.ram, 'snapshot RAM', 'ram.bin'), state]);
    return { snapshot, ramFile, stateFile };
  } catch (err) {
    return refuse(errorMessage(err));
  }
}

/**
 * The RAM as a lazily fetched file on a FUSE mount (docs/lazyfs.md), or
 * undefined so the caller fetches it whole. The default where hostme runs as
 * root (bench:boot (i) vs (g), bench:boot-debian: QEMU starts while the
 * working set streams, and the confined QEMU needs no private copy of the RAM
 * file), unless the RAM file is already complete and verified in the cache;
 * HOSTME_LAZY_RAM=0 (or lazyRam: false) always fetches whole. Where
 * lazy RAM was asked for explicitly but cannot be used, one notice says why.
 */
async function openLazy(ctx: ResumeContext, snapshot: QemuSnapshot, chunks: ObjectSource): Promise<LazyRam | undefined> {
  const env = process.env.HOSTME_LAZY_RAM;
  const asked = ctx.lazyRam ?? (env === '1' ? true : env === '0' ? false : undefined);
  if (asked === false) return undefined;
  if (process.getuid?.() !== 0) {
    if (asked) ctx.notices.push('snapshot RAM fetched whole before the resume: lazy RAM needs root (a FUSE mount)');
    return undefined;
  }
  const file = ctx.cacheRoot ? join(ctx.cacheRoot, 'blobs', snapshot.ram.index) : join(ctx.runDir, 'ram.bin');
  // A RAM file already complete and verified here maps faster as a plain file than through FUSE (bench:boot (h) 0.95 s vs (j) 1.27 s).
  if (asked === undefined && ctx.cacheRoot && (await stampMatches(file))) return undefined;
  const index = await ctx.resolved.repo.readIndex(snapshot.ram, ctx.scheduler, 'snapshot RAM');
  const owner = await qemuUser();
  try {
    return await openLazyRam({ index, source: chunks, file, label: 'snapshot RAM', ...(owner ? { owner } : {}) });
  } catch (err) {
    if (!(err instanceof HostmeError) || err.code !== 'lazyfs-unavailable') throw err;
    if (asked) ctx.notices.push(`snapshot RAM fetched whole before the resume: ${err.message}`);
    return undefined;
  }
}

/**
 * Start QEMU paused on the snapshot's RAM (private mapping) with the same
 * machine, CPU and virtio disks, load the device state and continue.
 * `readyAtResume`: the caller's ready mark is the one the guest printed before
 * it was saved, so QEMU must not wait for it again.
 */
export async function resumeVm(plan: ResumePlan, base: VmSpec, collector: RunStatsCollector, readyAtResume: boolean): Promise<{ vm: VmHandle; ms: number }> {
  const { snapshot } = plan;
  const nics = { netdev: base.netdev, overlay: base.overlay };
  const vm = await launchVm({
    ...base,
    ...(readyAtResume ? { until: undefined, keepRunning: true } : {}),
    accel: snapshot.accel,
    machine: snapshot.machine,
    cpuModel: snapshot.cpu,
    diskBus: snapshot.diskBus,
    // Not readonly=on: in QEMU 7.2 that maps the RAM read-only (guest writes are lost); MAP_PRIVATE alone never writes the file.
    memoryFile: { path: plan.ramFile, shared: false, ...(plan.lazy ? { perInstance: true } : {}) },
    incoming: true,
    incomingFile: plan.stateFile,
    // The saved machine had no NIC: they are plugged in after the resume, with this instance's MACs.
    netdev: undefined,
    overlay: undefined,
    hotplugPorts: snapshot.hotplugPorts,
    // vmgenid's post-load writes this (new) id into the guest and notifies it: clones reseed their RNG.
    vmgenid: snapshot.vmgenid ? randomUUID() : undefined,
  });
  collector.mark('qemu-started');
  const { lazy } = plan;
  let continued = false;
  if (lazy) {
    // QEMU cannot be paused while a vCPU waits in a page fault (QMP stop waits for every vCPU):
    // it is killed before the failed READ is answered, so it never runs on (or dies of SIGBUS for) a bad chunk.
    lazy.onChunkFailed = (chunk, err, priority) => {
      if (priority === 'background') return; // the guest has not asked for it; a demand read will retry
      // Before `cont` the resume is abandoned (the caller boots, its notice names the chunk); after, the run ends.
      if (continued) collector.error(`snapshot RAM chunk ${chunk} could not be fetched verified from any source (${errorMessage(err)}): the VM is stopped`);
      try {
        process.kill(vm.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    };
  }
  try {
    await restoreMachine(vm.qmp, vm.incomingFd!, {
      beforeContinue: async () => {
        await plan.workingSet;
        continued = true;
      },
    });
    collector.mark('running');
    await plugNics(vm.qmp, { ...nics, overlay: nics.overlay && { ...nics.overlay, socket: await socketInside(vm, nics.overlay.socket) } }, snapshot.hotplugPorts ?? 0);
  } catch (err) {
    await vm.shutdown();
    // A RAM chunk refused while QEMU loaded the state (QEMU was stopped for it): name the chunk, not the lost QMP connection.
    const failed = lazy?.blob.failed;
    if (failed) throw new HostmeError('snapshot-refused', `snapshot RAM refused: chunk ${failed.chunk}: ${errorMessage(failed.err)}`, { chunk: failed.chunk }, { cause: err });
    // QEMU's own words (e.g. why it closed QMP during a hot-plug) belong in the one-line notice.
    const said = vm.stderrTail().replace(/\s+/g, ' ').trim();
    throw said ? new HostmeError('snapshot-restore-failed', `${errorMessage(err)} (QEMU: ${said})`, {}, { cause: err }) : err;
  }
  collector.mark('nics-plugged');
  // The rest of the RAM in the background, working set first; the guest's faults overtake it.
  if (lazy) void lazy.blob.fillInBackground(snapshot.ramWorkingSet ?? []);
  // Clock, NICs, DHCP: the guest's own commands, typed where its shell was left waiting.
  if (snapshot.afterResume) vm.sendConsole(`${afterResumeCommand(snapshot.afterResume, nicCount(nics))}\n`);
  return { vm, ms: Math.round(collector.elapsedMs()) };
}

/**
 * A socket QEMU creates after start lives in its own folder (a confined QEMU
 * can create nothing elsewhere); `wanted`, where the caller looks, links to it.
 */
async function socketInside(vm: VmHandle, wanted: string): Promise<string> {
  const inside = join(vm.dir, basename(wanted));
  await rm(wanted, { force: true });
  await symlink(inside, wanted);
  return inside;
}
