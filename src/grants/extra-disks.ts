/**
 * Extra disks (a `--seed`, `--allow-disk=FILE`, a grant file's `disks`):
 * local raw image files that reach QEMU only through hostme's NBD server and
 * a DiskGate, like the image's own disks, so each can be taken back while
 * the VM runs.
 *
 * The stand-in for a denied disk is the disk itself behind a closed gate:
 * the export has the file's size and every request fails with EIO. NBD fixes
 * an export's size at negotiation and QEMU 7.2 cannot grow an NBD node
 * (block_resize: "Cannot grow NBD nodes"), nor does its NVMe device tell the
 * guest about a new size; a zero-length stand-in could therefore never
 * become the real disk without a reboot. A closed gate opens at once.
 *
 * Modes: `ro` opens the file read-only (the gate never goes above ro);
 * `rw` writes the file; `cow` and `none` keep the file untouched and write
 * a copy-on-write overlay in the instance's folder (`extra-NAME/`), so a
 * stand-in granted later is writable without ever writing the user's file.
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { BlockDevice } from '../device/block-device.js';
import { openFileOverlay } from '../device/node/cow-file.js';
import { HostmeError, errorMessage } from '../errors.js';
import { FileDevice } from '../nbd/file-device.js';
import { DiskGate, type DiskAccess } from './disk-gate.js';
import type { DiskMode } from './grant-set.js';

export interface ExtraDiskSpec { file: string; mode: DiskMode; /** Default: the file's base name without its extension. */ name?: string }

export interface ExtraDisk {
  /** What `hostme grant NAME disk DISK` names it by; also the NBD export `extra-NAME`. */
  name: string;
  file: string;
  gate: DiskGate;
  /** The most this disk can be granted at runtime. */
  ceiling: 'ro' | 'rw';
  /** QEMU attaches it read-only (a file opened read-only). */
  readOnly: boolean;
  close(): Promise<void>;
}

const NAME = /^[a-z0-9][a-z0-9_-]{0,31}$/;

/** `data` for /x/data.img; names are what a user types after `hostme grant NAME disk`. */
export function extraDiskName(file: string): string {
  const base = path.basename(file).replace(/\.[^.]*$/, '').toLowerCase().replace(/[^a-z0-9_-]/g, '-').slice(0, 32);
  return NAME.test(base) ? base : `disk-${base.replace(/^[^a-z0-9]+/, '')}`.slice(0, 32);
}

export function exportNameOf(disk: Pick<ExtraDisk, 'name'>): string {
  return `extra-${disk.name}`;
}

function accessAtStart(mode: DiskMode): DiskAccess {
  return mode === 'none' ? 'none' : mode === 'ro' ? 'ro' : 'rw';
}

/** Opens every extra disk behind its gate; on failure closes what it opened. */
export async function openExtraDisks(specs: readonly ExtraDiskSpec[], instanceDir: string): Promise<ExtraDisk[]> {
  const names = new Set<string>();
  for (const spec of specs) {
    const name = spec.name ?? extraDiskName(spec.file);
    if (names.has(name)) throw new HostmeError('usage', `two extra disks are both named "${name}" (the name hostme grant uses); rename one file`, { disk: spec.file });
    names.add(name);
  }
  const opened: ExtraDisk[] = [];
  try {
    for (const spec of specs) opened.push(await openOne(spec, spec.name ?? extraDiskName(spec.file), instanceDir));
  } catch (err) {
    await Promise.all(opened.map((d) => d.close().catch(() => {})));
    throw err;
  }
  return opened;
}

async function openOne(spec: ExtraDiskSpec, name: string, instanceDir: string): Promise<ExtraDisk> {
  const file = await FileDevice.open(spec.file, { readOnly: spec.mode !== 'rw' }).catch((err: unknown) => {
    throw new HostmeError('usage', `disk ${spec.file}: cannot open it (${errorMessage(err)})`, { disk: spec.file });
  });
  let device: BlockDevice = file;
  if (spec.mode === 'cow' || spec.mode === 'none') {
    const dir = path.join(instanceDir, `extra-${name}`);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    device = await openFileOverlay(file, dir).catch(async (err: unknown) => {
      await file.close();
      throw err;
    });
  }
  const gate = new DiskGate(device, accessAtStart(spec.mode), name);
  return {
    name,
    file: spec.file,
    gate,
    ceiling: spec.mode === 'ro' ? 'ro' : 'rw',
    readOnly: spec.mode === 'ro',
    close: async () => {
      await device.close();
      if (device !== file) await file.close();
    },
  };
}
