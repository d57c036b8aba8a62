/**
 * A bootable hybrid ISO of a direct-boot image (docs/export.md "ISO"):
 * isolinux (El Torito, no emulation) starts the image's kernel with an initrd
 * of hostme's that loads the CD and loop drivers from the kernel's Debian
 * package, finds the medium holding this ISO's id, attaches the image's disk
 * file from it read-only through a loop device (at the root partition's
 * offset) and switch_roots into it. The website reference (hostme link, hub,
 * join token) is /hostme/site.json on the medium and /run/hostme/site.json in
 * the booted guest; its link and hub are printed on the console.
 * UEFI: a second El Torito entry (a FAT image with GRUB's BOOTX64.EFI, see
 * efi.ts) starts the same kernel, initrd and command line; GRUB finds the
 * medium by a file named after the ISO's id (/hostme/id-ID).
 * The isohybrid MBR (isohdpfx.bin) plus a GPT/MBR entry for the EFI image
 * (-isohybrid-gpt-basdat) make the same file boot as a disk, BIOS or UEFI.
 */
import { createHash } from 'node:crypto';
import { copyFile, link, mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { moduleLoadOrder } from '../build/debian.js';
import { INIT_PRELUDE, makeInitrd } from '../build/initrd.js';
import type { Manifest } from '../format/manifest.js';
import type { BootKit } from './boot-kit.js';
import { writeEfiBootImage, writeGrubEfi } from './efi.js';
import { ExportError } from './errors.js';
import { runTool } from './tools.js';

/** Bumped whenever the ISO's layout changes (2: UEFI entry): caches keyed by it never serve an older layout. */
export const ISO_LAYOUT = 2;

/** What the booted ISO tells the guest (and prints): where its site lives. */
export interface SiteReference {
  /** The hostme link of the image (`hostme run LINK`), e.g. https://hub.example/i/hello. */
  link: string;
  /** The hub's base URL. */
  hub?: string;
  /** Join token of an invite-only site: in the file, never printed on the console. */
  token?: string;
}

const ISOLINUX = ['/usr/lib/ISOLINUX/isolinux.bin', '/usr/lib/syslinux/isolinux.bin'];
const LDLINUX = ['/usr/lib/syslinux/modules/bios/ldlinux.c32'];
const ISOHYBRID_MBR = ['/usr/lib/ISOLINUX/isohdpfx.bin', '/usr/lib/syslinux/isohdpfx.bin'];

/** Drivers the initrd loads when the kernel has them as modules (built-in ones need nothing; absent ones are skipped). */
const MEDIUM_DRIVERS = ['ata_piix', 'ata_generic', 'ahci', 'sr_mod', 'sd_mod', 'virtio_pci', 'virtio_blk', 'virtio_scsi', 'usb_storage', 'uas', 'xhci_pci', 'ehci_pci', 'uhci_hcd', 'ohci_pci'];
/** Without these the ISO cannot work at all. */
const REQUIRED = ['isofs', 'loop'];

export const ISO_INIT = `#!/bin/sh
# hostme ISO initrd: find the medium with this ISO's id, attach the image's
# disk from it read-only (loop), mount the root file system, switch_root.
${INIT_PRELUDE}while read -r m; do insmod "/lib/modules/$m" 2>/dev/null; done </lib/modules/order
. /etc/hostme/iso.conf
mkdir -p /cd
found=; n=0
while [ -z "$found" ] && [ "$n" -lt 300 ]; do
  for dev in /dev/sr* /dev/sd* /dev/vd* /dev/nvme*n* /dev/hd*; do
    [ -b "$dev" ] || continue
    if mount -t iso9660 -o ro "$dev" /cd 2>/dev/null; then
      if [ "$(cat /cd/hostme/iso-id 2>/dev/null)" = "$iso_id" ]; then found=$dev; break; fi
      umount /cd
    fi
  done
  [ -n "$found" ] || { sleep 0.2; n=$((n + 1)); }
done
if [ -z "$found" ]; then echo "hostme-iso: the medium with this image was not found; dropping to a shell"; exec sh; fi
n=0
while [ ! -b /dev/loop0 ] && [ "$n" -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
if ! losetup -r -o "$offset" /dev/loop0 /cd/hostme/disk0.img || ! mount -t "$fstype" -o ro /dev/loop0 /newroot; then
  echo "hostme-iso: cannot mount the image's root file system from $found; dropping to a shell"; exec sh
fi
echo "hostme-iso: booting $image from $found"
while IFS='=' read -r key value; do
  [ "$key" = token ] && value="(set; see /run/hostme/site.json)"
  echo "hostme site: $key=$value"
done </etc/hostme/site.txt
if [ -d /newroot/run ]; then
  mount -t tmpfs -o mode=0755 tmpfs /newroot/run && mkdir -p /newroot/run/hostme && cp /cd/hostme/site.json /newroot/run/hostme/site.json
fi
init=
for arg in $(cat /proc/cmdline); do case "$arg" in init=*) init="\${arg#init=}" ;; esac; done
if [ -z "$init" ]; then
  for candidate in /sbin/init /init; do
    if [ -e "/newroot$candidate" ] || [ -L "/newroot$candidate" ]; then init=$candidate; break; fi
  done
fi
# Lazily: the image's own init mounts a fresh devtmpfs (this shell still holds /dev/console).
umount -l /dev
umount /proc /sys
exec switch_root /newroot "\${init:-/sbin/init}"
echo "hostme-iso: switch_root failed"
exec sh
`;

async function firstExisting(paths: string[], what: string, pkg: string): Promise<string> {
  for (const p of paths) {
    const found = await open(p).then(async (h) => (await h.close(), true), () => false);
    if (found) return p;
  }
  throw new ExportError('export-tool-failed', `${what} not found (${paths.join(', ')}): apt-get install ${pkg}`, { package: pkg });
}

/**
 * Byte offset of the root file system inside disk 0, from the command line's
 * root=: a whole disk (/dev/nvme0n1, /dev/sda, /dev/vda…) is at 0, partition
 * N (/dev/sda2, /dev/nvme0n1p2) is read from the disk's MBR.
 */
export async function rootOffset(cmdline: string, rawPath: string): Promise<number> {
  const root = /(?:^|\s)root=(\S+)/.exec(cmdline)?.[1];
  const whole = /^\/dev\/(?:[shvx]v?d[a-z]|nvme\d+n\d+|mmcblk\d+)$/;
  const part = /^\/dev\/(?:(?:[shvx]v?d[a-z])|(?:nvme\d+n\d+|mmcblk\d+)p)(\d+)$/.exec(root ?? '');
  if (root && whole.test(root)) return 0;
  if (!part) throw new ExportError('export-iso-root-unknown', `the ISO needs the root file system's place on disk 0, and root=${root ?? '(none)'} does not name a disk or a partition of it (/dev/sda, /dev/nvme0n1p2…)`, { root });
  const n = Number(part[1]);
  const sector = Buffer.alloc(512);
  const handle = await open(rawPath, 'r');
  try {
    await handle.read(sector, 0, 512, 0);
  } finally {
    await handle.close();
  }
  const entry = 446 + (n - 1) * 16;
  if (n < 1 || n > 4 || sector.readUInt16LE(510) !== 0xaa55 || sector[entry + 4] === 0 || sector[entry + 4] === 0xee) {
    throw new ExportError('export-iso-root-unknown', `root=${root} names partition ${n}, which disk 0's MBR does not have (GPT and logical partitions are not supported)`, { root });
  }
  return sector.readUInt32LE(entry + 8) * 512;
}

export interface IsoRequest {
  rawPath: string;
  manifest: Manifest;
  digest: string;
  boot: BootKit;
  busybox: Buffer;
  site: SiteReference;
  workDir: string;
  out: string;
  onStep?: (step: string) => void;
}

/** A line-based, shell-safe `key=value` rendering (values are URLs/tokens: anything else is refused by the caller). */
function siteText(site: SiteReference): string {
  return Object.entries({ link: site.link, hub: site.hub, token: site.token })
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${v}`)
    .join('\n') + '\n';
}

/** Refuses reference values that could break out of a line or a shell word on the console. */
export function checkSiteReference(site: SiteReference): void {
  for (const [key, value] of Object.entries(site)) {
    if (value === undefined) continue;
    if (typeof value !== 'string' || value.length > 2048 || !/^[\x21-\x7e]+$/.test(value)) {
      throw new ExportError('usage', `the site reference's ${key} must be printable ASCII without spaces (at most 2048 characters)`, { key });
    }
    if (key !== 'token' && !/^https?:\/\//i.test(value)) throw new ExportError('usage', `the site reference's ${key} must be an http(s) URL, not "${value}"`, { key });
  }
}

export async function writeIso(req: IsoRequest): Promise<void> {
  checkSiteReference(req.site);
  const pkg = req.boot.kernelPackage;
  if (!pkg) throw new ExportError('export-kernel-unbootable', 'the ISO needs the kernel package (for its CD and loop drivers)');
  const wanted = [...REQUIRED, ...MEDIUM_DRIVERS.filter((m) => pkg.modules.has(m)), /(?:^|\s)rootfstype=(\S+)/.exec(req.boot.cmdline)?.[1] ?? 'ext4'];
  const fstype = wanted[wanted.length - 1]!;
  if (!/^[a-z0-9_]+$/.test(fstype)) throw new ExportError('export-iso-root-unknown', `rootfstype=${fstype} is not a file system name`);
  const modules = moduleLoadOrder(wanted, pkg);
  const offset = await rootOffset(req.boot.cmdline, req.rawPath);
  const image = `${req.manifest.name}@${req.manifest.version}`;
  // The id ties the initrd to this very medium: another hostme CD in the machine is skipped.
  const isoId = createHash('sha256').update(`${req.digest}\n${siteText(req.site)}`).digest('hex').slice(0, 32);
  const tree = join(req.workDir, 'iso-tree');
  for (const dir of ['isolinux', 'boot', 'hostme']) await mkdir(join(tree, dir), { recursive: true });
  req.onStep?.('writing the ISO initrd (CD and loop drivers)');
  await makeInitrd({
    busybox: req.busybox,
    modules,
    out: join(tree, 'boot', 'initrd.img'),
    work: req.workDir,
    init: ISO_INIT,
    files: {
      'etc/hostme/iso.conf': `iso_id=${isoId}\noffset=${offset}\nfstype=${fstype}\nimage=${image}\n`,
      'etc/hostme/site.txt': siteText(req.site),
    },
  });
  await copyFile(req.boot.bzImage, join(tree, 'boot', 'vmlinuz'));
  await copyFile(await firstExisting(ISOLINUX, 'isolinux.bin', 'isolinux'), join(tree, 'isolinux', 'isolinux.bin'));
  await copyFile(await firstExisting(LDLINUX, 'ldlinux.c32', 'syslinux-common'), join(tree, 'isolinux', 'ldlinux.c32'));
  const cfg = ['DEFAULT hostme', 'PROMPT 0', 'TIMEOUT 0', 'LABEL hostme', '  KERNEL /boot/vmlinuz', '  INITRD /boot/initrd.img', `  APPEND ${req.boot.cmdline}`, ''].join('\n');
  await writeFile(join(tree, 'isolinux', 'isolinux.cfg'), cfg);
  const site = { image, digest: req.digest, ...req.site };
  await writeFile(join(tree, 'hostme', 'site.json'), JSON.stringify(site, null, 2) + '\n');
  await writeFile(join(tree, 'hostme', 'iso-id'), isoId + '\n');
  await writeFile(join(tree, 'hostme', `id-${isoId}`), '');
  req.onStep?.('writing the UEFI bootloader (GRUB)');
  const efiBinary = join(req.workDir, 'BOOTX64.EFI');
  await writeGrubEfi({ lookup: { file: `/hostme/id-${isoId}` }, kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img', cmdline: req.boot.cmdline, workDir: req.workDir, out: efiBinary });
  await writeEfiBootImage(efiBinary, join(tree, 'boot', 'efiboot.img'), req.workDir);
  await link(req.rawPath, join(tree, 'hostme', 'disk0.img')).catch(() => copyFile(req.rawPath, join(tree, 'hostme', 'disk0.img')));
  req.onStep?.('writing the ISO (xorriso)');
  await runTool(
    'xorriso',
    [
      '-as', 'mkisofs', '-quiet', '-o', req.out, '-iso-level', '3', '-R', '-V', 'HOSTME',
      '-b', 'isolinux/isolinux.bin', '-c', 'isolinux/boot.cat', '-no-emul-boot', '-boot-load-size', '4', '-boot-info-table',
      '-eltorito-alt-boot', '-e', 'boot/efiboot.img', '-no-emul-boot', '-isohybrid-gpt-basdat',
      '-isohybrid-mbr', await firstExisting(ISOHYBRID_MBR, 'isohdpfx.bin', 'isolinux'),
      tree,
    ],
  );
}
