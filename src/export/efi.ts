/**
 * UEFI boot for exports (docs/export.md "UEFI"): a standalone GRUB EFI
 * application (grub-mkstandalone from grub-efi-amd64-bin) whose embedded
 * grub.cfg finds the medium it belongs to (by a marker file or a FAT volume
 * id), then starts the same kernel, initrd and command line as the BIOS
 * path. For the ISO it goes into a small FAT image (the El Torito EFI entry
 * and, on a disk copy, the EFI system partition); for disk exports it goes
 * into the boot partition as /EFI/BOOT/BOOTX64.EFI, the removable-media path
 * every UEFI firmware tries.
 */
import { access, mkdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ExportError } from './errors.js';
import { runTool } from './tools.js';

const GRUB_EFI_DIR = '/usr/lib/grub/x86_64-efi';
/** Built into the EFI binary: enough to find an ISO 9660 or FAT file system on an MBR/GPT disk or a CD and start Linux. */
const GRUB_MODULES = ['part_gpt', 'part_msdos', 'iso9660', 'fat', 'search', 'search_fs_file', 'search_fs_uuid', 'linux', 'normal', 'configfile', 'echo', 'test'];
const MiB = 1024 * 1024;

/** Where GRUB looks for the medium: a file only this medium has, or a FAT volume id (8 hex digits). */
export type EfiRootLookup = { file: string } | { fatVolumeId: string };

export interface EfiGrubRequest {
  lookup: EfiRootLookup;
  /** Paths on that medium. */
  kernel: string;
  initrd?: string;
  cmdline: string;
  workDir: string;
  out: string;
}

/** GRUB quotes: single quotes hold anything but a single quote. */
function grubWord(value: string): string {
  if (value.includes("'") || /[\r\n]/.test(value)) throw new ExportError('export-kernel-unbootable', 'the kernel command line cannot contain quotes or line breaks for the UEFI bootloader');
  return `'${value}'`;
}

export function grubConfig(req: Omit<EfiGrubRequest, 'workDir' | 'out'>): string {
  const search = 'file' in req.lookup
    ? `search --no-floppy --set=root --file ${grubWord(req.lookup.file)}`
    : `search --no-floppy --set=root --fs-uuid ${grubWord(`${req.lookup.fatVolumeId.slice(0, 4)}-${req.lookup.fatVolumeId.slice(4)}`.toUpperCase())}`;
  return [
    'set timeout=0',
    search,
    `linux ${grubWord(req.kernel)} ${req.cmdline.split(/\s+/).filter(Boolean).map(grubWord).join(' ')}`,
    ...(req.initrd ? [`initrd ${grubWord(req.initrd)}`] : []),
    'boot',
    // Only reached when the medium or kernel was not found.
    'echo "hostme: the UEFI bootloader cannot find its medium or kernel"',
    '',
  ].join('\n');
}

/** Writes BOOTX64.EFI (GRUB with its configuration inside) to `req.out`. */
export async function writeGrubEfi(req: EfiGrubRequest): Promise<void> {
  await access(join(GRUB_EFI_DIR, 'linux.mod')).catch(() => {
    throw new ExportError('tool-missing', `GRUB's EFI modules are not installed (${GRUB_EFI_DIR}): apt-get install grub-efi-amd64-bin`, { package: 'grub-efi-amd64-bin' });
  });
  const cfg = join(req.workDir, 'grub-efi.cfg');
  await writeFile(cfg, grubConfig(req));
  const modules = GRUB_MODULES.join(' ');
  await runTool('grub-mkstandalone', [
    '-O', 'x86_64-efi', '-o', req.out,
    `--modules=${modules}`, `--install-modules=${modules}`,
    '--locales=', '--fonts=', '--themes=',
    `boot/grub/grub.cfg=${cfg}`,
  ]);
}

/**
 * A FAT image holding only /EFI/BOOT/BOOTX64.EFI: the ISO's El Torito EFI
 * boot image (xorriso -e), also its EFI system partition on a disk copy.
 */
export async function writeEfiBootImage(efiBinary: string, out: string, workDir: string): Promise<void> {
  const bytes = Math.max(4 * MiB, Math.ceil(((await stat(efiBinary)).size + MiB) / MiB) * MiB);
  await rm(out, { force: true });
  await mkdir(workDir, { recursive: true });
  await writeFile(out, '');
  await truncate(out, bytes);
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };
  await runTool('mkfs.vfat', ['-n', 'HOSTMEEFI', '--invariant', out], { env });
  await runTool('mmd', ['-i', out, '::/EFI', '::/EFI/BOOT'], { env });
  await runTool('mcopy', ['-i', out, efiBinary, '::/EFI/BOOT/BOOTX64.EFI'], { env });
}
