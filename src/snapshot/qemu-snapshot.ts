import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, stat, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Manifest } from '../format/manifest.js';
import { errorMessage, HostmeError } from '../errors.js';
import { openRepository } from '../repo/repository.js';
import { BOOT_BLOB_ZSTD_LEVEL } from '../pack/pack-image.js';
import { publishDerived } from '../repo/versions.js';
import { chunkFile } from '../pack/chunker.js';
import { ChunkWorkerPool } from '../pack/worker-pool.js';
import { DEFAULT_CHUNK_SIZE } from '../format/chunk-index.js';
import { startImage, type RunOptions } from '../runner/run-image.js';
import type { BootOnceRequest } from '../runner/profile.js';
import type { Accel } from '../vm/accel.js';
import type { VmHandle } from '../vm/qemu.js';
import { qmpQemuVersion, resolveMachineType, saveMachine } from '../vm/snapshot.js';
import type { SnapshotResult, SnapshotStep } from './take-snapshot.js';

/** Kernel arguments for the saved boot: root on the first virtio disk; freed pages zeroed (like the browser snapshot). */
export const QEMU_SNAPSHOT_DEFAULT_APPEND = 'root=/dev/vda init_on_free=1';

/** Typed before saving: page cache written and dropped, so (with init_on_free=1) freed RAM is zero chunks, i.e. holes. */
export const QEMU_SNAPSHOT_DEFAULT_COMMAND = 'sync; echo 3 > /proc/sys/vm/drop_caches';

/** NIC slots (empty PCIe root ports) a saved machine keeps for the runs that resume it. */
export const SNAPSHOT_HOTPLUG_PORTS = 2;

/**
 * Typed after a resume by default (a shell on the console, like the reference
 * guest's): set the clock; then, only when NICs were plugged in, wait (≤ 5 s)
 * for them and rerun the boot's network script, whose udhcpc asks for a lease
 * with the new MAC. Without NICs the script has nothing to do, and under TCG
 * it cost a resumed guest 0.5-1 s before the user's first command.
 */
export const DEFAULT_AFTER_RESUME =
  'date -s @{epoch} >/dev/null; [ {nics} -eq 0 ] || { i=0; while [ $(ls /sys/class/net | grep -c ^eth) -lt {nics} ] && [ $i -lt 100 ]; do usleep 50000; i=$((i+1)); done; [ ! -x /etc/hostme/rc.d/50-net ] || /etc/hostme/rc.d/50-net; }';

export interface QemuSnapshotRequest extends BootOnceRequest {
  /** Console quiet this long after the match (and after the guest command) before saving. */
  quietMs?: number;
  /** Appended to the kernel command line for the saved boot (default root=/dev/vda: disks are virtio-blk). */
  append?: string;
  /** Typed into the console before saving (default "sync"); '' types nothing. */
  guestCommand?: string;
  /** Typed after every resume (default DEFAULT_AFTER_RESUME; '' types nothing); {epoch} and {nics} are filled in. */
  afterResume?: string;
  accel?: Accel;
  cacheDir?: string;
  onStep?: (step: SnapshotStep, detail: string) => void;
}

/**
 * Boot an x86_64 image once in QEMU with its RAM in a shared file and its
 * disks on virtio-blk (QEMU 7.2's NVMe cannot migrate), save the machine at
 * the ready point, and publish RAM and device state as the qemuSnapshot of a
 * new signed version (docs/format.md). `hostme run` resumes it instead of
 * booting.
 */
export async function snapshotQemuImage(request: QemuSnapshotRequest): Promise<SnapshotResult> {
  const repo = openRepository(request.repoDir);
  const base = await repo.loadImage(request.name, request.version, { trusted: [request.key] });
  const m = base.manifest;
  if (m.hardware.arch !== 'x86_64') throw new HostmeError('snapshot-unsupported', `${m.name}@${m.version} is not an x86_64 image`, {});
  const work = await mkdtemp(join(tmpdir(), 'hostme-qsnap-'));
  try {
    const ramFile = join(work, 'ram.bin');
    const stateFile = join(work, 'state.bin');
    const append = request.append ?? QEMU_SNAPSHOT_DEFAULT_APPEND;
    request.onStep?.('boot', `booting ${m.name}@${m.version} in QEMU until ${request.until}`);
    const running = await startImage({
      ...snapshotRun(request),
      link: { repo: request.repoDir, name: m.name, version: m.version },
      cacheDir: request.cacheDir,
      append: append || undefined,
      resume: false,
      // No NIC in the saved machine: a migrated NIC would keep one MAC for every clone. Resumes plug theirs in.
      vm: { diskBus: 'virtio', machine: 'q35', memoryFile: { path: ramFile, shared: true }, hotplugPorts: SNAPSHOT_HOTPLUG_PORTS, vmgenid: randomUUID(), overlay: undefined, netdev: undefined },
    });
    const vm = running.vm;
    let pins: { qemu: string; machine: string; cpu: string; accel: Accel };
    try {
      await vm.ready.catch((err: unknown) => {
        throw new HostmeError('snapshot-failed', `the guest never printed a match for ${request.until} with its disks on virtio-blk (${(err as Error).message}); x86_64 snapshots need a kernel that drives virtio-blk (built in, or loaded by the image's initrd) and a root= the append (${append || 'nothing'}) points at it`, {});
      });
      const msToReady = running.collector.stats.msToReady ?? 0;
      await quiet(vm, request.quietMs ?? 500);
      const command = request.guestCommand ?? QEMU_SNAPSHOT_DEFAULT_COMMAND;
      if (command) {
        vm.sendConsole(`${command}\n`);
        await quiet(vm, request.quietMs ?? 500);
      }
      request.onStep?.('save', 'saving the machine state');
      pins = { qemu: qmpQemuVersion(vm.qmp), machine: await resolveMachineType(vm.qmp, 'q35'), cpu: vm.accel === 'kvm' ? 'host' : 'qemu64', accel: vm.accel };
      await saveMachine(vm, stateFile);
      await vm.shutdown();
      await running.finished;
      return await publish(request, base, ramFile, stateFile, { ...pins, append, readyMark: request.until.source }, msToReady, work);
    } finally {
      await vm.shutdown();
      await running.finished.catch(() => undefined);
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** What the saving boot and the trial resume share: no console, the ready mark, kept running, writes thrown away. */
function snapshotRun(request: QemuSnapshotRequest) {
  return {
    console: 'none',
    until: request.until,
    keepRunning: true,
    timeoutMs: request.timeoutMs ?? 300_000,
    overlay: 'ephemeral',
    trusted: [request.key],
    accel: request.accel,
  } satisfies Partial<RunOptions>;
}

/** Resolves once the console printed nothing for `ms` (bounded: 20 s). */
async function quiet(vm: VmHandle, ms: number): Promise<void> {
  const deadline = performance.now() + 20_000;
  let last = vm.consoleLength;
  let since = performance.now();
  while (performance.now() - since < ms && performance.now() < deadline) {
    await sleep(Math.min(100, ms));
    if (vm.consoleLength !== last) {
      last = vm.consoleLength;
      since = performance.now();
    }
  }
}

async function publish(
  request: QemuSnapshotRequest,
  base: { manifest: Manifest; digest: string },
  ramFile: string,
  stateFile: string,
  pins: { qemu: string; machine: string; cpu: string; accel: Accel; append: string; readyMark: string },
  msToReady: number,
  work: string,
): Promise<SnapshotResult> {
  const repo = openRepository(request.repoDir);
  const afterResume = request.afterResume ?? DEFAULT_AFTER_RESUME;
  const chunkSize = base.manifest.disks[0]?.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const ramBytes = base.manifest.hardware.memoryMiB * 1024 * 1024;
  const stateBytes = (await stat(stateFile)).size;
  request.onStep?.('pack', `packing ${ramBytes} bytes of RAM and ${stateBytes} bytes of device state`);
  const pool = new ChunkWorkerPool();
  try {
    const ram = await chunkFile(ramFile, ramBytes, chunkSize, repo.objects, pool, undefined, BOOT_BLOB_ZSTD_LEVEL);
    const state = await chunkFile(stateFile, stateBytes, chunkSize, repo.objects, pool, undefined, BOOT_BLOB_ZSTD_LEVEL);
    request.onStep?.('publish', `publishing ${request.name}@${request.newVersion ?? 'next version'}`);
    const qemuSnapshot: NonNullable<Manifest['qemuSnapshot']> = {
      ram: ram.ref,
      deviceState: state.ref,
      qemu: pins.qemu,
      machine: pins.machine,
      cpu: pins.cpu,
      accel: pins.accel,
      diskBus: 'virtio',
      cmdlineAppend: pins.append,
      readyMark: pins.readyMark,
      hotplugPorts: SNAPSHOT_HOTPLUG_PORTS,
      vmgenid: true,
      ...(afterResume ? { afterResume } : {}),
    };
    const workingSet = await recordWorkingSet(request, base, qemuSnapshot, work);
    if (Array.isArray(workingSet)) qemuSnapshot.ramWorkingSet = workingSet;
    const published = await publishDerived(repo, base, { qemuSnapshot }, request.key, request.newVersion);
    return {
      name: request.name,
      baseVersion: base.manifest.version,
      version: published.manifest.version,
      emulator: `qemu@${pins.qemu} ${pins.machine} ${pins.cpu} ${pins.accel}`,
      msToReady,
      stateBytes: ramBytes + stateBytes,
      storedBytes: ram.stats.storedBytes + state.stats.storedBytes,
      newStoredBytes: ram.stats.newStoredBytes + state.stats.newStoredBytes,
      chunks: ram.stats.chunks - ram.stats.holes + state.stats.chunks - state.stats.holes,
      manifestDigest: published.digest,
      ...(Array.isArray(workingSet) ? { workingSetChunks: workingSet.length } : { workingSetSkipped: workingSet.skipped }),
    };
  } finally {
    await pool.close();
  }
}

/**
 * Resume the snapshot once before it is published, with its RAM served lazily
 * (src/lazyfs) from this repository's objects, and keep the order in which
 * the guest read RAM chunks from the resume until its console was quiet for a
 * second (after the afterResume commands). The trial types nothing of its own:
 * a shell, a login prompt or a service console must all stay as saved. A
 * resume fetches that working set before QEMU starts, so the guest does not
 * wait a round trip per first touch. Best effort: without FUSE (not root), or
 * if the trial does not resume, the snapshot is published without one and
 * the summary says why.
 */
async function recordWorkingSet(
  request: QemuSnapshotRequest,
  base: { manifest: Manifest; digest: string },
  qemuSnapshot: NonNullable<Manifest['qemuSnapshot']>,
  work: string,
): Promise<number[] | { skipped: string }> {
  const skip = (why: string) => ({ skipped: why });
  if (process.getuid?.() !== 0) return skip('the trial resume serves the RAM over FUSE, which needs root');
  request.onStep?.('working-set', 'recording the RAM working set (a trial resume)');
  // A scratch repository beside the real one's objects: the trial version is never published where users see it.
  const scratch = join(work, 'trial-repo');
  await mkdir(scratch);
  await symlink(resolve(request.repoDir, 'objects'), join(scratch, 'objects'));
  const trial = await publishDerived(openRepository(scratch), base, { qemuSnapshot }, request.key);
  // The saved ready mark (snapshotRun's until): a resume counts as ready at once (nothing is typed, nothing awaited).
  const running = await startImage({
    ...snapshotRun(request),
    link: { repo: scratch, name: trial.manifest.name, version: trial.manifest.version },
    cacheDir: join(work, 'trial-cache'),
    resume: true,
    lazyRam: true,
  });
  try {
    if (!running.resumed || !running.ramTouched) return skip(`the trial did not resume (${running.notices.join('; ') || 'no reason given'})`);
    await running.vm.ready;
    await quiet(running.vm, Math.max(1000, request.quietMs ?? 500));
    return [...running.ramTouched()];
  } catch (err) {
    return skip(`the trial resume failed (${errorMessage(err)})`);
  } finally {
    await running.vm.shutdown();
    await running.finished.catch(() => undefined);
  }
}
