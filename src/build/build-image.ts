/**
 * `hostme build`: a build manifest → a root tree → a reproducible disk →
 * an image published into a repository with packImage.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, lchown, lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import path from 'node:path';
import { createGunzip } from 'node:zlib';
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { HostmeError } from '../errors.js';
import { renderSeedFiles, type SeedOptions } from '../seed/nocloud.js';
import type { PublisherKey } from '../format/node/keys.js';
import { packImage, type PackSummary } from '../pack/pack-image.js';
import { openRepository } from '../repo/repository.js';
import { loadBuildManifest, parseDiskSize, parseMode, type BuildManifest } from './build-manifest.js';
import { prepareBoot } from './boot.js';
import { debDataTar, debianArch, fetchDeb } from './debian.js';
import { debootstrap, unmountUnder } from './debootstrap.js';
import { autoFsBytes, biosOverheadBytes, derivedUuid, makeBiosDisk, makeExt4, neededFsBytes, scanTree } from './disk.js';
import { checkLocalFile, fetchByDigest, sha256File } from './fetch-base.js';
import { writeGrubConfig } from './grub-config.js';
import { renderTemplate, resolveInputs } from './inputs.js';
import { writeRandomFile } from './random-file.js';
import { matchesPrefix } from './url-prefix.js';
import { entryComponents, resolveInRoot, unpackTar, type Ownership } from './safe-unpack.js';

const isRoot = process.getuid?.() === 0;

export interface BuildRequest {
  manifestPath: string;
  inputs?: Record<string, unknown>;
  repoDir: string;
  key: PublisherKey;
  /** Scratch space (a private subdirectory is made in it and removed afterwards). Default: the OS temp dir. */
  workDir?: string;
  /** Downloaded bases and .debs. Default: $XDG_CACHE_HOME/hostme/build or ~/.cache/hostme/build. */
  cacheDir?: string;
  onStep?: (step: string, done: number, total: number) => void;
  log?: (line: string) => void;
  /**
   * Bake a cloud-init NoCloud seed into the image, at
   * /var/lib/cloud/seed/nocloud/ (where cloud-init looks without a CIDATA disk).
   */
  seed?: SeedOptions;
  /**
   * Also write the built files here (disk.raw, kernel, initrd.img and
   * image.json describing them), for local runs and tests; the repository
   * stays the published form. Files are replaced atomically, image.json last.
   */
  outDir?: string;
  /**
   * Untrusted manifests (the render service): every local path must stay
   * inside the manifest's directory, so a build cannot read the host's files.
   */
  confine?: boolean;
  /** Untrusted manifests (the render service): the operator's allow-lists and limits. */
  untrusted?: UntrustedBuildPolicy;
}

export interface UntrustedBuildPolicy {
  /** Mirrors base.debootstrap.mirror may name (URL prefixes). */
  mirrors: readonly string[];
  /** Internal-address URL prefixes base.tarball.url may fetch anyway. */
  fetchUrls: readonly string[];
  maxFileBytes: number;
  maxDiskBytes: number;
}

export interface BuildResult {
  name: string;
  version: string;
  manifestDigest: string;
  pack: PackSummary;
  /** sha256 of the raw disk: equal for equal inputs. */
  diskSha256: string;
  /** With `outDir`: the description written to <outDir>/image.json. */
  outFiles?: BuildOutFiles;
}

/** <outDir>/image.json: the built files (absolute paths) and what it takes to boot them. */
export interface BuildOutFiles {
  name: string;
  version: string;
  disk: string;
  /** Direct boot only (without it the disk boots through the firmware). */
  kernel?: string;
  initrd?: string;
  cmdline?: string;
  memoryMiB: number;
  cpus: number;
  arch: 'x86_64' | 'i686';
  diskSha256: string;
  manifestDigest: string;
}

export const BUILD_STEPS = ['manifest', 'base', 'kernel', 'files', 'templates', 'volatile', 'disk', 'pack'] as const;

export const BAKED_SEED_DIR = '/var/lib/cloud/seed/nocloud';

async function bakeSeed(root: string, seed: SeedOptions, owners: Map<string, Ownership>): Promise<void> {
  const files = renderSeedFiles(seed);
  const dir = path.join(root, BAKED_SEED_DIR);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  let at = '';
  for (const part of BAKED_SEED_DIR.slice(1).split('/')) {
    at += `/${part}`;
    owners.set(at, { uid: 0, gid: 0 });
  }
  for (const [name, content] of Object.entries(files)) {
    await writeFile(path.join(dir, name), content, { mode: 0o644 });
    owners.set(`${BAKED_SEED_DIR}/${name}`, { uid: 0, gid: 0 });
  }
}

/** Local paths a manifest refers to, for confinement checks. */
function localPaths(manifest: BuildManifest): Array<[string, string]> {
  const paths: Array<[string, string]> = [];
  const base = manifest.base as { tarball?: { path?: string }; dir?: string };
  if (base.tarball?.path) paths.push(['base.tarball.path', base.tarball.path]);
  if (base.dir) paths.push(['base.dir', base.dir]);
  const boot = manifest.boot as { kernel?: unknown; initrd?: unknown } | undefined;
  if (typeof boot?.kernel === 'string') paths.push(['boot.kernel', boot.kernel]);
  if (typeof boot?.initrd === 'string') paths.push(['boot.initrd', boot.initrd]);
  (manifest.files ?? []).forEach((f, i) => {
    if (f.src !== undefined) paths.push([`files.${i}.src`, f.src]);
  });
  return paths;
}

function assertConfined(manifest: BuildManifest): void {
  for (const [where, value] of localPaths(manifest)) {
    const normalized = path.posix.normalize(value);
    if (path.isAbsolute(value) || normalized === '..' || normalized.startsWith('../')) {
      throw new HostmeError('build-path-outside', `${where}: "${value}" points outside the build; send the file with the request instead`, { where });
    }
  }
}

function limitExceeded(message: string): HostmeError {
  return new HostmeError('build-limit-exceeded', message);
}

/** What an untrusted manifest declares is checked against the operator's policy before anything is built. */
function assertWithinPolicy(manifest: BuildManifest, policy: UntrustedBuildPolicy): void {
  const mirror = manifest.base.debootstrap?.mirror;
  if (mirror !== undefined && !matchesPrefix(mirror, policy.mirrors)) {
    const allowed = policy.mirrors.length ? policy.mirrors.join(', ') : 'none (the default mirror only)';
    throw new HostmeError('build-mirror-refused', `base.debootstrap.mirror: "${mirror}" is not a mirror the operator allows (allowed: ${allowed}); leave it out to use the default`, { mirror });
  }
  let total = 0;
  manifest.files.forEach((f, i) => {
    if (!f.random) return;
    const bytes = parseDiskSize(f.random.size)!;
    total += bytes;
    if (bytes > policy.maxFileBytes) throw limitExceeded(`files[${i}].random.size: ${f.random.size} is more than this service's ${policy.maxFileBytes}-byte file limit`);
  });
  if (total > policy.maxDiskBytes) throw limitExceeded(`files: ${total} bytes of random content is more than this service's ${policy.maxDiskBytes}-byte disk limit`);
  const disk = parseDiskSize(manifest.hardware.diskSize);
  if (disk !== undefined && disk > policy.maxDiskBytes) throw limitExceeded(`hardware.diskSize: ${manifest.hardware.diskSize} is more than this service's ${policy.maxDiskBytes}-byte disk limit`);
}

export function defaultBuildCacheDir(): string {
  if (process.env.HOSTME_BUILD_CACHE) return path.resolve(process.env.HOSTME_BUILD_CACHE);
  return path.join(process.env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'hostme', 'build');
}

export async function buildImage(request: BuildRequest): Promise<BuildResult> {
  const log = request.log ?? (() => {});
  const total = BUILD_STEPS.length;
  let stepNo = 0;
  const step = (name: (typeof BUILD_STEPS)[number]) => request.onStep?.(name, stepNo++, total);
  const manifestPath = path.resolve(request.manifestPath);
  const manifestDir = path.dirname(manifestPath);
  const cacheDir = request.cacheDir ?? defaultBuildCacheDir();

  step('manifest');
  const manifest = await loadBuildManifest(manifestPath);
  if (request.confine) assertConfined(manifest);
  if (request.untrusted) assertWithinPolicy(manifest, request.untrusted);
  const inputs = await resolveInputs(manifest.inputs, request.inputs ?? {});
  const kernelSource = manifest.boot?.kernel;
  if (typeof kernelSource === 'object') {
    const bios = manifest.boot?.bootloader === 'bios';
    // syslinux and v86 (the browser runner of i686 images) boot bzImages only.
    kernelSource.extract ??= bios || manifest.hardware.arch === 'i686' ? 'bzImage' : 'vmlinux';
    if (bios && kernelSource.extract !== 'bzImage') {
      throw new HostmeError('build-manifest-invalid', `${path.basename(manifestPath)}: boot.kernel.extract: must be "bzImage" with bootloader "bios" (syslinux cannot boot an ELF vmlinux)`);
    }
  }

  const baseWork = request.workDir ? path.resolve(request.workDir) : tmpdir();
  await mkdir(baseWork, { recursive: true });
  const work = await mkdtemp(path.join(baseWork, 'hostme-build-'));
  const root = path.join(work, 'root');
  await mkdir(root);
  await chmod(root, 0o755);
  const owners = new Map<string, Ownership>();
  try {
    step('base');
    await populateBase(manifest, manifestDir, root, cacheDir, owners, log, request.untrusted);

    step('kernel');
    const boot = await prepareBoot({ manifest, manifestDir, root, work, cacheDir, owners, log });

    step('files');
    await applyFiles(manifest, manifestDir, root, owners);

    step('templates');
    for (const t of manifest.templates) {
      const host = await resolveInRoot(root, entryComponents(t.slice(1), t), true);
      const text = await readFile(host, 'utf8').catch(() => {
        throw new HostmeError('template-missing', `template ${t} is not a file in the image (add it with "files")`, { template: t });
      });
      await writeFile(host, renderTemplate(text, inputs, t));
    }

    if (request.seed) await bakeSeed(root, request.seed, owners);
    if (manifest.boot?.grubConfig) {
      const fallbackRoot = manifest.boot.bootloader === 'bios' ? '(hd0,msdos2)' : '(hd0)';
      const kernels = await writeGrubConfig(root, owners, { cmdline: boot!.cmdline, rootUuid: rootUuid(manifest), fallbackRoot });
      log(`grub.cfg: ${kernels.map((k) => k.release).join(', ')}`);
    }

    step('volatile');
    for (const v of manifest.volatile) await dropVolatile(root, v);

    step('disk');
    const tree = await scanTree(root);
    const disk = path.join(work, 'disk.raw');
    const uuid = rootUuid(manifest);
    const hashSeed = derivedUuid(`hostme-build-hash:${manifest.name}@${manifest.version}`);
    const requested = parseDiskSize(manifest.hardware.diskSize);
    const maxDisk = request.untrusted?.maxDiskBytes;
    if (maxDisk !== undefined && neededFsBytes(tree) > maxDisk) throw limitExceeded(`the image's files need ${neededFsBytes(tree)} bytes, more than this service's ${maxDisk}-byte disk limit`);
    if (manifest.boot?.bootloader === 'bios') {
      const kernelBytes = (await stat(boot!.kernel)).size + (boot!.initrd ? (await stat(boot!.initrd)).size : 0);
      const diskBytes = requested ?? biosOverheadBytes(kernelBytes) + autoFsBytes(tree);
      log(`disk: ${(diskBytes / 2 ** 20).toFixed(0)} MiB, BIOS-bootable (syslinux), ${tree.inodes} inodes`);
      await makeBiosDisk({ image: disk, diskBytes, root, tree, owners, uuid, hashSeed, label: 'hostme', kernel: boot!.kernel, initrd: boot!.initrd, cmdline: boot!.cmdline });
    } else {
      const fsBytes = requested ?? autoFsBytes(tree);
      log(`disk: ${(fsBytes / 2 ** 20).toFixed(0)} MiB ext4 (needs ${(neededFsBytes(tree) / 2 ** 20).toFixed(0)} MiB), ${tree.inodes} inodes`);
      await makeExt4({ root, image: disk, sizeBytes: fsBytes, uuid, hashSeed, label: 'hostme', tree, owners });
    }
    const diskSha256 = await sha256File(disk);

    step('pack');
    await mkdir(request.repoDir, { recursive: true });
    const direct = boot && manifest.boot?.bootloader !== 'bios';
    const pack = await packImage({
      repo: openRepository(path.resolve(request.repoDir)),
      workDir: work,
      disk,
      name: manifest.name,
      version: manifest.version,
      key: request.key,
      ...(direct ? { kernel: boot.kernel, initrd: boot.initrd, cmdline: boot.cmdline } : {}),
      memoryMiB: manifest.hardware.memoryMiB,
      cpus: manifest.hardware.cpus,
      arch: manifest.hardware.arch,
      description: manifest.description,
      network: manifest.network,
      hosting: manifest.hosting,
    });
    const result: BuildResult = { name: manifest.name, version: pack.version, manifestDigest: pack.manifestDigest, pack, diskSha256 };
    if (request.outDir) {
      const files = { disk, ...(direct ? { kernel: boot.kernel, initrd: boot.initrd, cmdline: boot.cmdline } : {}) };
      result.outFiles = await writeOutFiles(path.resolve(request.outDir), files, manifest, result);
    }
    request.onStep?.('done', total, total);
    return result;
  } finally {
    if (manifest.base.debootstrap) await unmountUnder(work);
    await rm(work, { recursive: true, force: true });
  }
}

/** The root ext4's UUID: derived from name@version, so rebuilds are reproducible. */
function rootUuid(manifest: BuildManifest): string {
  return derivedUuid(`hostme-build:${manifest.name}@${manifest.version}`);
}

async function decompressor(file: string): Promise<{ stream: Readable; done: Promise<void> }> {
  const handle = await open(file, 'r');
  const head = Buffer.alloc(6);
  await handle.read(head, 0, 6, 0);
  await handle.close();
  const hex = head.toString('hex');
  if (hex.startsWith('1f8b')) return { stream: createReadStream(file).pipe(createGunzip()), done: Promise.resolve() };
  const tool = hex.startsWith('28b52ffd') ? ['zstd', '-dcq'] : hex.startsWith('fd377a585a00') ? ['xz', '-dc'] : hex.startsWith('425a68') ? ['bzip2', '-dc'] : undefined;
  if (!tool) return { stream: createReadStream(file), done: Promise.resolve() };
  const child = spawn(tool[0]!, [...tool.slice(1), file], { stdio: ['ignore', 'pipe', 'ignore'] });
  const done = new Promise<void>((resolve, reject) => {
    child.on('error', () => reject(new HostmeError('tool-missing', `${tool[0]} is needed to decompress ${file}`)));
    child.on('close', (code, signal) => (code === 0 || signal ? resolve() : reject(new HostmeError('base-invalid', `${tool[0]} could not decompress ${file} (exit ${code})`))));
  });
  return { stream: child.stdout, done };
}

async function populateBase(manifest: BuildManifest, manifestDir: string, root: string, cacheDir: string, owners: Map<string, Ownership>, log: (l: string) => void, untrusted?: UntrustedBuildPolicy): Promise<void> {
  const base = manifest.base;
  if (base.tarball) {
    const guard = untrusted ? { allowPrefixes: untrusted.fetchUrls, matches: matchesPrefix } : undefined;
    const file = base.tarball.url
      ? await fetchByDigest(base.tarball.url, base.tarball.sha256, cacheDir, log, guard)
      : await checkLocalFile(path.resolve(manifestDir, base.tarball.path!), base.tarball.sha256);
    const { stream, done } = await decompressor(file);
    const result = await unpackTar(stream, root, base.tarball.url ?? base.tarball.path!, owners);
    await done;
    log(`base: ${result.entries} entries from ${path.basename(file)}${result.skipped.length ? `, skipped ${result.skipped.length} device nodes/fifos` : ''}`);
  } else if (base.dir) {
    const src = path.resolve(manifestDir, base.dir);
    if (!(await stat(src).then((s) => s.isDirectory(), () => false))) throw new HostmeError('base-unreadable', `base.dir ${src} is not a directory`, { dir: src });
    await copyTree(src, root, [], owners, { keepOwner: true });
    log(`base: copied ${src}`);
  } else if (base.debs) {
    for (const spec of base.debs) {
      const deb = await fetchDeb(spec, cacheDir, { arch: debianArch(manifest.hardware.arch), log });
      const { stream, done } = debDataTar(deb.file);
      const result = await unpackTar(stream, root, path.basename(deb.file), owners);
      await done;
      log(`base: ${deb.package} ${deb.version} (${result.entries} entries)`);
    }
  } else if (base.debootstrap) {
    await debootstrap({ ...base.debootstrap, arch: debianArch(manifest.hardware.arch), root, cacheDir, log });
  }
}

/** Copies a host tree (or file) to image path components `dest`, never following symlinks out of the root. */
async function copyTree(src: string, root: string, dest: string[], owners: Map<string, Ownership>, options: { keepOwner?: boolean; mode?: number } = {}): Promise<void> {
  const info = await lstat(src).catch(() => null);
  if (!info) throw new HostmeError('file-unreadable', `${src}: no such file`, { path: src });
  const imagePath = '/' + dest.join('/');
  const host = dest.length ? path.join(await resolveInRoot(root, dest.slice(0, -1), true), dest[dest.length - 1]!) : root;
  if (dest.length) await mkdir(path.dirname(host), { recursive: true });
  const existing = await lstat(host).catch(() => null);
  if (info.isDirectory()) {
    if (existing && !existing.isDirectory()) await rm(host, { force: true });
    if (!existing?.isDirectory()) await mkdir(host);
    for (const name of (await readdir(src)).sort()) await copyTree(path.join(src, name), root, [...dest, name], owners, { keepOwner: options.keepOwner });
    if (existing?.isDirectory() && options.mode === undefined) return; // merged into an existing directory: keep its mode and owner
  } else if (info.isSymbolicLink()) {
    if (existing) await rm(host, { recursive: true, force: true });
    await symlink(await readlink(src), host);
  } else if (info.isFile()) {
    if (existing) await rm(host, { recursive: true, force: true });
    await copyFile(src, host);
  } else {
    return; // sockets, devices: not copied
  }
  // A dir base keeps its owners; as a normal user, files that are yours become root's in the image.
  const mine = !isRoot && info.uid === process.getuid?.();
  const owner = options.keepOwner && !mine ? { uid: info.uid, gid: info.gid } : { uid: 0, gid: 0 };
  owners.set(imagePath, owner);
  if (isRoot) await lchown(host, owner.uid, owner.gid);
  if (!info.isSymbolicLink()) await chmod(host, options.mode ?? (options.keepOwner ? info.mode & 0o7777 : normalMode(info.mode, info.isDirectory())));
}

/**
 * Modes of added files do not depend on the checkout's umask: like git,
 * only "executable or not" is taken from the source (0755 / 0644; directories 0755).
 */
function normalMode(mode: number, isDir: boolean): number {
  return isDir || mode & 0o100 ? 0o755 : 0o644;
}

async function applyFiles(manifest: BuildManifest, manifestDir: string, root: string, owners: Map<string, Ownership>): Promise<void> {
  for (const f of manifest.files) {
    const dest = entryComponents(f.dest.slice(1), f.dest);
    if (f.random) await addRandomFile(root, dest, parseDiskSize(f.random.size)!, f.random.seed, parseMode(f.mode) ?? 0o644, owners);
    else await copyTree(path.resolve(manifestDir, f.src!), root, dest, owners, { mode: parseMode(f.mode) });
  }
  for (const d of manifest.directories) {
    const parts = entryComponents(d.path.slice(1), d.path);
    const host = await resolveInRoot(root, parts, true);
    await mkdir(host, { recursive: true });
    await chmod(host, parseMode(d.mode) ?? 0o755);
    owners.set('/' + parts.join('/'), { uid: 0, gid: 0 });
  }
  for (const l of manifest.links) {
    const parts = entryComponents(l.path.slice(1), l.path);
    if (!parts.length) throw new HostmeError('build-manifest-invalid', 'links: cannot replace "/"');
    const host = path.join(await resolveInRoot(root, parts.slice(0, -1), true), parts[parts.length - 1]!);
    await mkdir(path.dirname(host), { recursive: true });
    await rm(host, { recursive: true, force: true });
    await symlink(l.target, host);
    owners.set('/' + parts.join('/'), { uid: 0, gid: 0 });
  }
}

/** Copies the built files into `outDir` (each through a temporary name) and writes image.json last. */
async function writeOutFiles(outDir: string, files: { disk: string; kernel?: string; initrd?: string; cmdline?: string }, manifest: BuildManifest, result: BuildResult): Promise<BuildOutFiles> {
  await mkdir(outDir, { recursive: true });
  const place = async (from: string | undefined, name: string): Promise<string | undefined> => {
    if (!from) return undefined;
    const to = path.join(outDir, name);
    const tmp = `${to}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await copyFile(from, tmp);
    await rename(tmp, to);
    return to;
  };
  const described: BuildOutFiles = {
    name: result.name,
    version: result.version,
    disk: (await place(files.disk, 'disk.raw'))!,
    kernel: await place(files.kernel, 'kernel'),
    initrd: await place(files.initrd, 'initrd.img'),
    cmdline: files.cmdline,
    memoryMiB: manifest.hardware.memoryMiB,
    cpus: manifest.hardware.cpus,
    arch: manifest.hardware.arch,
    diskSha256: result.diskSha256,
    manifestDigest: result.manifestDigest,
  };
  const json = path.join(outDir, 'image.json');
  await writeFile(`${json}.tmp`, JSON.stringify(described, null, 2) + '\n');
  await rename(`${json}.tmp`, json);
  return described;
}

async function addRandomFile(root: string, dest: string[], bytes: number, seed: string, mode: number, owners: Map<string, Ownership>): Promise<void> {
  if (!dest.length) throw new HostmeError('build-manifest-invalid', 'files: random content cannot replace "/"');
  const dir = await resolveInRoot(root, dest.slice(0, -1), true);
  await mkdir(dir, { recursive: true });
  const host = path.join(dir, dest[dest.length - 1]!);
  await rm(host, { recursive: true, force: true });
  await writeRandomFile(host, bytes, seed);
  await chmod(host, mode);
  owners.set('/' + dest.join('/'), { uid: 0, gid: 0 });
}

/** Removes a volatile path's content; a directory stays (empty) as a mount point. */
async function dropVolatile(root: string, imagePath: string): Promise<void> {
  const parts = entryComponents(imagePath.slice(1), imagePath);
  if (!parts.length) throw new HostmeError('build-manifest-invalid', 'volatile: "/" cannot be volatile');
  const host = path.join(await resolveInRoot(root, parts.slice(0, -1), true), parts[parts.length - 1]!);
  const info = await lstat(host).catch(() => null);
  if (!info) return;
  if (info.isDirectory()) {
    for (const name of await readdir(host)) await rm(path.join(host, name), { recursive: true, force: true });
  } else {
    await rm(host, { force: true });
  }
}
