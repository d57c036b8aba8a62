/**
 * What a bootloader needs to start an image that was published for direct
 * kernel boot: the kernel as a bzImage (syslinux/isolinux speak the Linux boot
 * protocol; the ELF vmlinux hostme usually publishes boots only through
 * QEMU's PVH entry), the initrd, the command line and, for the ISO, the
 * kernel's modules.
 *
 * An ELF kernel is matched to the Debian package it came from: its banner
 * ("Linux version RELEASE … Debian VERSION") names linux-image-RELEASE=VERSION,
 * the package's bzImage is fetched (cached like `hostme build` does) and its
 * payload must decompress to exactly the signed ELF, byte for byte. So the
 * kernel a bootloader starts is the one the publisher signed.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { defaultBuildCacheDir } from '../build/build-image.js';
import { debianArch, extractVmlinux, fetchDeb, readKernelPackage, type KernelPackageContents } from '../build/debian.js';
import { chunkLength, isHole } from '../format/chunk-index.js';
import { sha256Hex } from '../format/node/codecs.js';
import type { BlobRef } from '../format/manifest.js';
import type { LoadedImage, Repository } from '../repo/repository.js';
import { ExportError } from './errors.js';

export interface BootKit {
  /** Path of the kernel as a bzImage. */
  bzImage: string;
  /** Path of the image's own initrd, if it has one. */
  initrd?: string;
  cmdline: string;
  /** Kernel release from its banner, e.g. 6.1.0-50-cloud-amd64 (undefined if it has none). */
  release?: string;
  /** The Debian kernel package the kernel was matched to (only when modules were asked for, or the kernel is ELF). */
  kernelPackage?: KernelPackageContents;
}

export interface BootKitOptions {
  /** Where Debian packages are cached (<dir>/debs); default: hostme build's cache. */
  cacheDir?: string;
  /** Also read the kernel package's modules (the ISO's initrd loads CD and loop drivers). */
  modules?: boolean;
  log?: (line: string) => void;
}

/** Reads a whole blob (kernel, initrd) through the verified object store. */
export async function readBlob(repo: Repository, ref: BlobRef, label: string): Promise<Buffer> {
  const index = await repo.readIndex(ref, repo.objects, label);
  const out = Buffer.alloc(ref.size);
  for (let i = 0; i < index.ids.length; i++) {
    const id = index.ids[i]!;
    if (isHole(id)) continue;
    const object = await repo.objects.get({ id, length: chunkLength(index, i) });
    out.set(object.data, i * index.chunkSize);
  }
  return out;
}

const isElf = (b: Buffer) => b.length > 4 && b.readUInt32BE(0) === 0x7f454c46;
const isBzImage = (b: Buffer) => b.length > 0x210 && b.toString('latin1', 0x202, 0x206) === 'HdrS';

/** "RELEASE … Debian VERSION" from a kernel's banner (ELF: linux_banner; bzImage: the setup header's kernel_version string). */
export function kernelIdentity(kernel: Buffer): { release?: string; debianVersion?: string } {
  const texts: string[] = [];
  if (isBzImage(kernel)) {
    const at = kernel.readUInt16LE(0x20e) + 0x200;
    if (at < kernel.length) texts.push(kernel.toString('latin1', at, Math.min(kernel.length, at + 256)).split('\0')[0]!);
  } else {
    // linux_banner, not the first "Linux version " (format strings and the like come earlier).
    for (let at = kernel.indexOf('Linux version '); at >= 0 && texts.length < 16; at = kernel.indexOf('Linux version ', at + 1)) {
      texts.push(kernel.toString('latin1', at + 'Linux version '.length, Math.min(kernel.length, at + 512)).split(/[\0\n]/)[0]!);
    }
  }
  const text = texts.find((t) => /\bDebian \d/.test(t)) ?? texts.find((t) => /^\d+\.\d+\S* \(/.test(t));
  if (!text) return {};
  const release = /^(\S+)/.exec(text)?.[1];
  // After "#BUILD": earlier "Debian …" strings are the compiler's version.
  const debianVersion = /\bDebian (\d\S*)/.exec(text.slice(text.lastIndexOf('#') + 1))?.[1];
  return { release: release && /^[A-Za-z0-9._+~-]+$/.test(release) ? release : undefined, debianVersion: debianVersion && /^[A-Za-z0-9.+~:-]+$/.test(debianVersion) ? debianVersion : undefined };
}

/**
 * Kernel (as bzImage), initrd and command line of a direct-boot image, written
 * into `workDir`; undefined for firmware-boot images (their disk boots as it is).
 */
export async function prepareBootKit(repo: Repository, image: LoadedImage, workDir: string, options: BootKitOptions = {}): Promise<BootKit | undefined> {
  const { boot } = image.manifest;
  if (boot.mode !== 'direct') return undefined;
  const kernel = await readBlob(repo, boot.kernel, 'kernel');
  const { release, debianVersion } = kernelIdentity(kernel);
  const what = `${image.manifest.name}@${image.manifest.version}`;
  if (!isElf(kernel) && !isBzImage(kernel)) throw new ExportError('export-kernel-unbootable', `the kernel of ${what} is neither a bzImage nor an ELF vmlinux`, { image: what });
  let kernelPackage: KernelPackageContents | undefined;
  let bzImage = kernel;
  if (isElf(kernel) || options.modules) {
    if (!release || !debianVersion) {
      const why = isElf(kernel)
        ? `is an ELF vmlinux (only QEMU's -kernel boots it) whose banner names no Debian package to take its bzImage from`
        : `names no Debian package in its banner, so hostme cannot find its modules`;
      throw new ExportError('export-kernel-unbootable', `the kernel of ${what} ${why}: publish it with a Debian kernel, or as a bzImage (build: boot.kernel.extract: bzImage) for disk exports`, { image: what });
    }
    const spec = `linux-image-${release}=${debianVersion}`;
    const deb = await fetchDeb(spec, options.cacheDir ?? defaultBuildCacheDir(), { arch: debianArch(image.manifest.hardware.arch), log: options.log }).catch((err: unknown) => {
      throw new ExportError('export-kernel-unbootable', `the kernel of ${what} is ${spec}, which this machine cannot fetch: ${(err as Error).message}`, { image: what, package: spec }, { cause: err });
    });
    kernelPackage = await readKernelPackage(deb.file, options.modules === true);
    const same = isElf(kernel) ? sha256Hex(await extractVmlinux(kernelPackage.bzImage, workDir)) === sha256Hex(kernel) : sha256Hex(kernelPackage.bzImage) === sha256Hex(kernel);
    if (!same) {
      throw new ExportError('export-kernel-unmatched', `the kernel of ${what} is not the kernel of ${spec} (${deb.file}): refusing to boot a kernel the publisher did not sign`, { image: what, package: spec });
    }
    bzImage = kernelPackage.bzImage;
  }
  const kit: BootKit = { bzImage: join(workDir, 'boot-vmlinuz'), cmdline: boot.cmdline, release, kernelPackage };
  await writeFile(kit.bzImage, bzImage);
  if (boot.initrd) {
    kit.initrd = join(workDir, 'boot-initrd');
    await writeFile(kit.initrd, await readBlob(repo, boot.initrd, 'initrd'));
  }
  return kit;
}
