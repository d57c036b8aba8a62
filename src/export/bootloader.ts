/**
 * Makes an exported disk of a direct-boot image boot on its own (BIOS):
 * a FAT16 boot partition with syslinux, the kernel (bzImage), initrd and
 * command line is *appended* after the image's data, and sector 0 gets
 * syslinux's MBR code plus a partition entry for it. Nothing the image
 * already holds moves, so the command line's root= still finds the root
 * file system:
 *
 * - a bare file system on the whole disk (the reference guest: ext4,
 *   root=/dev/nvme0n1): ext2/3/4 never use the first 1024 bytes (the boot
 *   block), so sector 0 is free for an MBR; the kernel then also sees
 *   partition 1 (the boot partition) but mounts the whole disk as before;
 * - an MBR-partitioned disk: the boot partition takes the first free slot of
 *   the table, existing entries (and so their numbers: nvme0n1p2 stays p2)
 *   are untouched, and only the active flag moves to the boot partition.
 *
 * UEFI: the same partition also holds /EFI/BOOT/BOOTX64.EFI (GRUB, efi.ts),
 * which finds the partition by /EFI/hostme/DISKID and starts the same
 * kernel, initrd and command line (UEFI firmware such as OVMF reads any FAT
 * partition for the removable-media path; the type stays 0x0E for BIOS).
 *
 * Refused with a clear error: GPT disks, and disks whose sector 0 is in use
 * by something that is not an MBR (a file system that uses its first sector).
 */
import { mkdtemp, open, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeSyslinuxMbr, writeSyslinuxPartition } from '../build/disk.js';
import type { BootKit } from './boot-kit.js';
import { writeGrubEfi } from './efi.js';
import { ExportError } from './errors.js';
import { runTool } from './tools.js';

const MiB = 1024 * 1024;
const SECTOR = 512;
const TABLE = 446;
const MAX_MBR_BYTES = 0xffffffff * SECTOR;

export interface BootPartition {
  /** 1-based MBR slot. */
  slot: number;
  start: number;
  bytes: number;
  /** Disk size after the partition was appended. */
  diskBytes: number;
}

type SectorZero = { kind: 'bare' } | { kind: 'mbr'; freeSlot: number };

/** What sector 0 holds: nothing (bare file system or empty disk), or an MBR with a free slot. */
export function classifySectorZero(sector: Buffer): SectorZero {
  const signed = sector[510] === 0x55 && sector[511] === 0xaa;
  if (!signed) {
    if (sector.subarray(0, SECTOR).every((b) => b === 0)) return { kind: 'bare' };
    throw new ExportError('export-disk-unbootable', 'sector 0 of disk 0 is in use and holds no MBR partition table: hostme cannot add a bootloader without moving data (export with --no-bootloader and boot it with -kernel)');
  }
  const types = [0, 1, 2, 3].map((i) => sector[TABLE + i * 16 + 4]!);
  if (types.includes(0xee)) throw new ExportError('export-disk-unbootable', 'disk 0 is partitioned with GPT: hostme adds BIOS bootloaders to bare file systems and MBR disks only (export with --no-bootloader)');
  const free = types.findIndex((t) => t === 0);
  if (free < 0) throw new ExportError('export-disk-unbootable', 'disk 0 has four primary MBR partitions: no slot is left for a boot partition (export with --no-bootloader)');
  return { kind: 'mbr', freeSlot: free + 1 };
}

/** One MBR partition entry, LBA only (CHS fields say "beyond CHS": FE FF FF). */
function partitionEntry(startSector: number, sectors: number, type: number, active: boolean): Buffer {
  const entry = Buffer.alloc(16);
  entry[0] = active ? 0x80 : 0;
  entry.set([0xfe, 0xff, 0xff], 1);
  entry[4] = type;
  entry.set([0xfe, 0xff, 0xff], 5);
  entry.writeUInt32LE(startSector, 8);
  entry.writeUInt32LE(sectors, 12);
  return entry;
}

/**
 * Appends the syslinux boot partition to the raw disk at `rawPath` (sparse
 * file; it grows) and writes the MBR. `diskId` seeds the MBR disk signature
 * and FAT volume id of a bare disk (8 hex digits, stable per image).
 */
export async function addBiosBootloader(rawPath: string, kit: BootKit, diskId: string): Promise<BootPartition> {
  const { size } = await stat(rawPath);
  const handle = await open(rawPath, 'r+');
  let layout: SectorZero;
  const sector = Buffer.alloc(SECTOR);
  try {
    await handle.read(sector, 0, SECTOR, 0);
    layout = classifySectorZero(sector);
  } finally {
    await handle.close();
  }
  const payload = (await stat(kit.bzImage)).size + (kit.initrd ? (await stat(kit.initrd)).size : 0);
  // 3 MiB: FAT and syslinux overhead plus GRUB's EFI binary (~1 MiB).
  const bytes = Math.max(16 * MiB, Math.ceil((payload * 1.1 + 3 * MiB) / MiB) * MiB);
  const start = Math.ceil(size / MiB) * MiB;
  const diskBytes = start + bytes;
  if (diskBytes > MAX_MBR_BYTES) throw new ExportError('export-disk-unbootable', 'disk 0 is larger than an MBR can address (2 TiB): export with --no-bootloader');
  await truncate(rawPath, diskBytes);
  await writeSyslinuxPartition({ image: rawPath, start, bytes, volumeId: diskId, kernel: kit.bzImage, initrd: kit.initrd, cmdline: kit.cmdline });
  await addUefiBootloader(rawPath, start, kit, diskId);
  const slot = layout.kind === 'mbr' ? layout.freeSlot : 1;
  const table = layout.kind === 'mbr' ? Buffer.from(sector.subarray(TABLE, 510)) : Buffer.alloc(64);
  for (let i = 0; i < 4; i++) table[i * 16] = 0; // one active partition: ours
  table.set(partitionEntry(start / SECTOR, bytes / SECTOR, 0x0e, true), (slot - 1) * 16);
  const out = await open(rawPath, 'r+');
  try {
    if (layout.kind === 'bare') await out.write(Buffer.from(diskId, 'hex'), 0, 4, 440);
    await out.write(table, 0, 64, TABLE);
    await out.write(Buffer.from([0x55, 0xaa]), 0, 2, 510);
  } finally {
    await out.close();
  }
  await writeSyslinuxMbr(rawPath);
  return { slot, start, bytes, diskBytes };
}

/** Puts GRUB's BOOTX64.EFI and the marker it searches for into the boot partition written by writeSyslinuxPartition. */
async function addUefiBootloader(rawPath: string, start: number, kit: BootKit, diskId: string): Promise<void> {
  if (!/^[0-9a-f]{8}$/.test(diskId)) throw new ExportError('export-disk-unbootable', `disk id must be 8 hex digits, not ${diskId}`);
  const work = await mkdtemp(join(dirname(rawPath), '.efi-'));
  try {
    const efi = join(work, 'BOOTX64.EFI');
    await writeGrubEfi({ lookup: { file: `/EFI/hostme/${diskId}` }, kernel: '/vmlinuz', initrd: kit.initrd ? '/initrd' : undefined, cmdline: kit.cmdline, workDir: work, out: efi });
    const marker = join(work, diskId);
    await writeFile(marker, '');
    const fat = `${rawPath}@@${start}`;
    const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
    await runTool('mmd', ['-i', fat, '::/EFI', '::/EFI/BOOT', '::/EFI/hostme'], { env });
    await runTool('mcopy', ['-i', fat, efi, '::/EFI/BOOT/BOOTX64.EFI'], { env });
    await runTool('mcopy', ['-i', fat, marker, `::/EFI/hostme/${diskId}`], { env });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
