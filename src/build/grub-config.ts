/**
 * `boot.grubConfig: true`: writes /boot/grub/grub.cfg into the root tree,
 * one menu entry per kernel the image's package manager installed
 * (/boot/vmlinuz-RELEASE, with /boot/initrd.img-RELEASE when present), newest
 * release first, each with the manifest's command line. It is the GRUB
 * configuration a distribution keeps for its installed kernels, which
 * converters such as virt-v2v require in order to recognise and convert a
 * guest (they regenerate it with grub-mkconfig in the guest); the build never
 * runs grub-mkconfig itself, because it needs the guest's disk device.
 */
import { lstat, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { HostmeError } from '../errors.js';
import { resolveInRoot, type Ownership } from './safe-unpack.js';

export interface GrubKernel {
  /** The part after "vmlinuz-", e.g. 6.1.0-50-cloud-amd64. */
  release: string;
  hasInitrd: boolean;
}

export interface GrubConfigRequest {
  kernels: GrubKernel[];
  cmdline: string;
  /** UUID of the root ext4 (searched by GRUB, as grub-mkconfig does). */
  rootUuid: string;
  /** GRUB's name of the root file system when the search finds nothing: (hd0,msdos2) on a partitioned disk, (hd0) on a bare file system. */
  fallbackRoot: string;
}

/** GRUB's shell treats these specially outside quotes; words with none of them stay bare, as grub-mkconfig writes them. */
const GRUB_PLAIN_WORD = /^[A-Za-z0-9_./:=,+@%-]+$/;

function grubWord(word: string): string {
  if (GRUB_PLAIN_WORD.test(word)) return word;
  if (word.includes("'")) throw new HostmeError('build-manifest-invalid', `boot.cmdline: the word ${JSON.stringify(word)} has a single quote, which GRUB's configuration cannot hold with boot.grubConfig`);
  return `'${word}'`;
}

/** Newest release first: numeric runs compare as numbers (6.1.0-50 after 6.1.0-9). */
export function sortReleases(releases: string[]): string[] {
  return [...releases].sort((a, b) => b.localeCompare(a, 'en', { numeric: true }));
}

export function renderGrubConfig(req: GrubConfigRequest): string {
  if (/[\r\n]/.test(req.cmdline)) throw new HostmeError('build-manifest-invalid', 'boot.cmdline: a line break cannot be written into a GRUB configuration');
  const args = req.cmdline.split(/\s+/).filter(Boolean).map(grubWord).join(' ');
  const lines = [
    '# Written by hostme build (boot.grubConfig): the kernels installed in /boot.',
    'set default=0',
    'set timeout=0',
    'insmod part_msdos',
    'insmod ext2',
    `set root=${req.fallbackRoot}`,
    `search --no-floppy --fs-uuid --set=root ${req.rootUuid}`,
  ];
  for (const k of req.kernels) {
    lines.push(`menuentry 'Linux ${k.release}' {`, `\tlinux /boot/vmlinuz-${k.release} ${args}`.trimEnd());
    if (k.hasInitrd) lines.push(`\tinitrd /boot/initrd.img-${k.release}`);
    lines.push('}');
  }
  return lines.join('\n') + '\n';
}

/** The kernels in ROOT/boot (regular files vmlinuz-*, not package-manager leftovers). */
export async function installedKernels(root: string): Promise<GrubKernel[]> {
  const bootDir = await resolveInRoot(root, ['boot'], true);
  const names = await readdir(bootDir).catch(() => [] as string[]);
  const releases: string[] = [];
  for (const name of names) {
    const m = /^vmlinuz-(.+)$/.exec(name);
    if (!m || /\.(dpkg-.*|rpmsave|rpmnew)$/.test(name)) continue;
    if ((await lstat(path.join(bootDir, name))).isFile()) releases.push(m[1]!);
  }
  const kernels: GrubKernel[] = [];
  for (const release of sortReleases(releases)) {
    const initrd = await lstat(path.join(bootDir, `initrd.img-${release}`)).catch(() => null);
    kernels.push({ release, hasInitrd: initrd?.isFile() ?? false });
  }
  return kernels;
}

/** Writes ROOT/boot/grub/grub.cfg (replacing one already there), owned by root. */
export async function writeGrubConfig(root: string, owners: Map<string, Ownership>, req: Omit<GrubConfigRequest, 'kernels'>): Promise<GrubKernel[]> {
  const kernels = await installedKernels(root);
  if (!kernels.length) {
    throw new HostmeError('kernel-missing', 'boot.grubConfig: the image has no /boot/vmlinuz-* to list; install a kernel package in the image (e.g. base.debootstrap.packages: ["linux-image-cloud-amd64"])');
  }
  const file = await resolveInRoot(root, ['boot', 'grub', 'grub.cfg'], false);
  await mkdir(path.dirname(file), { recursive: true });
  // A link already there is replaced, never written through (it could point out of the tree).
  await rm(file, { force: true });
  await writeFile(file, renderGrubConfig({ ...req, kernels }), { mode: 0o644, flag: 'wx' });
  for (const p of ['/boot', '/boot/grub', '/boot/grub/grub.cfg']) if (!owners.has(p)) owners.set(p, { uid: 0, gid: 0 });
  return kernels;
}
