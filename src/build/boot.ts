/**
 * The `boot` section of a build manifest: the kernel (a file, or a Debian
 * kernel package: extracted, cached), kernel modules copied into the image,
 * and the initrd (a file, or generated from busybox + the package's modules).
 */
import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import tar from 'tar-stream';
import { HostmeError } from '../errors.js';
import type { BuildManifest, GeneratedInitrd } from './build-manifest.js';
import { debDataTar, debianArch, extractVmlinux, fetchDeb, moduleLoadOrder, readKernelPackage, resolveKernelPackage, type KernelPackageContents } from './debian.js';
import { makeInitrd } from './initrd.js';
import { entryComponents, resolveInRoot, type Ownership } from './safe-unpack.js';

export interface PreparedBoot {
  kernel: string;
  initrd?: string;
  cmdline: string;
}

export interface BootContext {
  manifest: BuildManifest;
  manifestDir: string;
  /** The image's root tree (modules named in boot.kernel.modules go there). */
  root: string;
  /** Private scratch directory of this build: the kernel and initrd are written here. */
  work: string;
  cacheDir: string;
  owners: Map<string, Ownership>;
  log: (line: string) => void;
}

const isFile = (file: string) => stat(file).then((s) => s.isFile(), () => false);

async function localFile(manifestDir: string, relative: string, what: string): Promise<string> {
  const file = path.resolve(manifestDir, relative);
  if (!(await isFile(file))) throw new HostmeError('file-unreadable', `${what} ${file} is not a file`, { path: file });
  return file;
}

/** Kernel, initrd and command line for the image, or undefined without a boot section. */
export async function prepareBoot(ctx: BootContext): Promise<PreparedBoot | undefined> {
  const boot = ctx.manifest.boot;
  if (!boot) return undefined;
  const initrdFile = typeof boot.initrd === 'string' ? await localFile(ctx.manifestDir, boot.initrd, 'boot.initrd') : undefined;
  if (typeof boot.kernel === 'string') {
    return { kernel: await localFile(ctx.manifestDir, boot.kernel, 'boot.kernel'), initrd: initrdFile, cmdline: boot.cmdline };
  }
  const generated = typeof boot.initrd === 'object' ? boot.initrd : undefined;
  const arch = debianArch(ctx.manifest.hardware.arch);
  const { kernel, contents } = await kernelFromPackage(ctx, boot.kernel.debianPackage, boot.kernel.extract ?? 'vmlinux', boot.kernel.modules.length > 0 || generated !== undefined);
  if (contents && boot.kernel.modules.length) await installModules(ctx, boot.kernel.modules, contents);
  const initrd = generated && contents ? await generateInitrd(ctx, generated, contents, arch) : initrdFile;
  return { kernel, initrd, cmdline: boot.cmdline };
}

/**
 * Fetches the kernel package for the image's architecture and writes its
 * kernel to the work dir. The extracted kernel is cached next to the .deb it
 * came from (unpacking the .deb takes seconds); the package is read again
 * only when modules are wanted.
 */
async function kernelFromPackage(ctx: BootContext, name: string, extract: 'vmlinux' | 'bzImage', wantModules: boolean): Promise<{ kernel: string; contents?: KernelPackageContents }> {
  const arch = debianArch(ctx.manifest.hardware.arch);
  const pkg = await resolveKernelPackage(name, arch);
  const deb = await fetchDeb(pkg, ctx.cacheDir, { arch, log: ctx.log });
  const cached = path.join(ctx.cacheDir, 'kernels', `${path.basename(deb.file, '.deb')}.${extract}`);
  const kernel = path.join(ctx.work, extract);
  if (!wantModules && (await isFile(cached))) {
    await copyFile(cached, kernel);
    ctx.log(`kernel: ${deb.package} ${deb.version} → ${extract} (cached)`);
    return { kernel };
  }
  const contents = await readKernelPackage(deb.file, wantModules);
  await writeFile(kernel, extract === 'bzImage' ? contents.bzImage : await extractVmlinux(contents.bzImage, ctx.work));
  await mkdir(path.dirname(cached), { recursive: true });
  const tmp = `${cached}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  await copyFile(kernel, tmp);
  await rename(tmp, cached);
  ctx.log(`kernel: ${deb.package} ${deb.version} (${contents.release}) → ${extract}`);
  return { kernel, contents };
}

function loadOrder(wanted: readonly string[], contents: KernelPackageContents, where: string, log: (line: string) => void) {
  const builtin = wanted.filter((m) => contents.builtin.has(m.replace(/-/g, '_')));
  if (builtin.length) log(`${where}: ${builtin.join(' ')} built into the kernel, nothing to load`);
  return moduleLoadOrder(wanted, contents);
}

/** boot.kernel.modules: copied to /lib/modules/<release>/… in the image, load order in /etc/hostme/modules. */
async function installModules(ctx: BootContext, wanted: readonly string[], contents: KernelPackageContents): Promise<void> {
  const order = loadOrder(wanted, contents, 'kernel', ctx.log);
  for (const mod of order) {
    const dir = await resolveInRoot(ctx.root, entryComponents(path.posix.dirname(mod.imagePath).slice(1), mod.imagePath), true);
    await mkdir(dir, { recursive: true });
    await writeFile(path.join(dir, path.posix.basename(mod.imagePath)), mod.data, { mode: 0o644 });
    ctx.owners.set(mod.imagePath, { uid: 0, gid: 0 });
  }
  const list = path.join(await resolveInRoot(ctx.root, ['etc', 'hostme'], true), 'modules');
  await mkdir(path.dirname(list), { recursive: true });
  await writeFile(list, order.map((m) => m.imagePath).join('\n') + '\n', { mode: 0o644 });
  ctx.log(`kernel: modules ${order.map((m) => m.name).join(' ')} (load order in /etc/hostme/modules)`);
}

/** boot.initrd: {modules, busybox}: static busybox + the modules (dependencies first) + an /init that mounts root=. */
async function generateInitrd(ctx: BootContext, spec: GeneratedInitrd, contents: KernelPackageContents, arch: string): Promise<string> {
  const modules = loadOrder(spec.modules, contents, 'initrd', ctx.log);
  const busybox = await staticBusybox(spec.busybox, ctx.cacheDir, arch, ctx.log);
  const out = path.join(ctx.work, 'initrd.img');
  const result = await makeInitrd({ busybox, modules, out, work: ctx.work });
  ctx.log(`initrd: ${(result.bytes / 2 ** 20).toFixed(1)} MiB, busybox from ${spec.busybox}, modules ${modules.map((m) => m.name).join(' ') || '(none)'}`);
  return out;
}

/** The busybox binary from a Debian package; it must be statically linked (nothing else is in the initrd). */
export async function staticBusybox(spec: string, cacheDir: string, arch: string, log: (line: string) => void): Promise<Buffer> {
  const deb = await fetchDeb(spec, cacheDir, { arch, log });
  const { stream, done } = debDataTar(deb.file);
  const extract = tar.extract();
  stream.pipe(extract);
  let binary: Buffer | undefined;
  for await (const entry of extract) {
    const name = entry.header.name.replace(/^\.?\//, '');
    if (!binary && entry.header.type === 'file' && /^(usr\/)?bin\/busybox$/.test(name)) {
      const parts: Buffer[] = [];
      for await (const chunk of entry) parts.push(chunk as Buffer);
      binary = Buffer.concat(parts);
    } else {
      entry.resume();
    }
  }
  await done;
  if (!binary) throw new HostmeError('initrd-invalid', `boot.initrd.busybox: ${path.basename(deb.file)} holds no bin/busybox`, { package: spec });
  if (hasElfInterpreter(binary)) {
    throw new HostmeError('initrd-invalid', `boot.initrd.busybox: the busybox of ${deb.package} is dynamically linked; the initrd has no libraries: use busybox-static`, { package: spec });
  }
  return binary;
}

/** True when an ELF executable names a program interpreter (PT_INTERP): it is dynamically linked. */
export function hasElfInterpreter(elf: Buffer): boolean {
  if (elf.length < 52 || elf.readUInt32BE(0) !== 0x7f454c46) return false;
  const is64 = elf[4] === 2;
  const little = elf[5] === 1;
  const u16 = (at: number) => (little ? elf.readUInt16LE(at) : elf.readUInt16BE(at));
  const u32 = (at: number) => (little ? elf.readUInt32LE(at) : elf.readUInt32BE(at));
  const phoff = is64 ? Number(little ? elf.readBigUInt64LE(0x20) : elf.readBigUInt64BE(0x20)) : u32(0x1c);
  const [phentsize, phnum] = is64 ? [u16(0x36), u16(0x38)] : [u16(0x2a), u16(0x2c)];
  for (let i = 0; i < phnum; i++) {
    const at = phoff + i * phentsize;
    if (at + 4 <= elf.length && u32(at) === 3) return true;
  }
  return false;
}
