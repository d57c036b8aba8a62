/**
 * Debian packages as build inputs, without installing anything on the host:
 * `apt-get download` into <cacheDir>/debs, `dpkg-deb --fsys-tarfile` into the
 * safe unpacker, kernel extraction (bzImage → ELF vmlinux for QEMU's PVH
 * entry) and kernel modules with their dependencies.
 */
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { HostmeError, errorMessage, isHostmeError } from '../errors.js';
import { runTool } from '../process/tool.js';

async function aptField(pkg: string, command: 'policy' | 'depends'): Promise<string> {
  try {
    const { stdout } = await runTool('apt-cache', [command, pkg]);
    return stdout;
  } catch (err) {
    if (isHostmeError(err, 'tool-missing')) throw err;
    throw new HostmeError('apt-failed', `apt-cache ${command} ${pkg} failed (is this a Debian system?): ${errorMessage(err).split('\n')[0]}`, { package: pkg });
  }
}

async function debVersion(file: string): Promise<string> {
  const { stdout } = await runTool('dpkg-deb', ['-f', file, 'Version'], { failureCode: 'deb-invalid' });
  return stdout.trim();
}

/** The Debian architecture of an image's hardware.arch. */
export function debianArch(arch: 'x86_64' | 'i686'): string {
  return arch === 'i686' ? 'i386' : 'amd64';
}

/** Cached .debs of `pkg` for `arch` (or architecture-independent ones), by file name: NAME_VERSION_ARCH.deb. */
async function cachedDebs(dir: string, pkg: string, arch: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names
    .filter((n) => n.startsWith(`${pkg}_`) && (n.endsWith(`_${arch}.deb`) || n.endsWith('_all.deb')))
    .sort()
    .map((n) => path.join(dir, n));
}

/** apt's candidate version of pkg:arch, falling back to an architecture-independent package (pkg:all). */
async function candidate(pkg: string, arch: string): Promise<{ qualified: string; version: string } | undefined> {
  for (const qualified of [`${pkg}:${arch}`, `${pkg}:all`]) {
    const version = /^\s*Candidate:\s*(\S+)/m.exec(await aptField(qualified, 'policy'))?.[1];
    if (version && version !== '(none)') return { qualified, version };
  }
  return undefined;
}

export interface FetchDebOptions {
  /** Debian architecture (amd64, i386): the image's, not necessarily the host's. */
  arch: string;
  log?: (line: string) => void;
}

/**
 * Downloads `pkg` or `pkg=version` (default: apt's candidate) for the image's
 * architecture into <cacheDir>/debs unless already there; returns the .deb
 * path and version. Without apt metadata, an already cached .deb of the
 * package is used.
 */
export async function fetchDeb(spec: string, cacheDir: string, options: FetchDebOptions): Promise<{ file: string; version: string; package: string }> {
  const { arch, log } = options;
  const [pkg, pinned] = spec.split('=', 2) as [string, string | undefined];
  const dir = path.join(cacheDir, 'debs');
  await mkdir(dir, { recursive: true });
  const found = pinned ? undefined : await candidate(pkg, arch);
  const version = pinned ?? found?.version;
  const find = async () => {
    for (const file of await cachedDebs(dir, pkg, arch)) if (!version || (await debVersion(file)) === version) return file;
    return undefined;
  };
  let file = await find();
  if (!file) {
    if (!version) {
      const hint = arch === hostArch() ? 'run apt-get update?' : `to use ${arch} packages on this host: dpkg --add-architecture ${arch} && apt-get update`;
      throw new HostmeError('deb-unavailable', `Debian package ${pkg} is unknown to apt for architecture ${arch} (${hint})`, { package: pkg, arch });
    }
    await download(found?.qualified ?? `${pkg}:${arch}`, version, dir, log);
    file = await find();
    if (!file) throw new HostmeError('deb-unavailable', `downloaded ${pkg} but cannot find a ${arch} or all .deb of it in ${dir}`, { package: pkg, arch });
  }
  return { file, version: version ?? (await debVersion(file)), package: pkg };
}

/** The host's Debian architecture, as Node names it (enough for the hint in an error message). */
function hostArch(): string {
  return process.arch === 'ia32' ? 'i386' : process.arch === 'x64' ? 'amd64' : process.arch;
}

/** apt-get download into a private directory, then rename: concurrent builds never see a partial .deb. */
async function download(qualified: string, version: string, dir: string, log?: (line: string) => void): Promise<void> {
  log?.(`apt-get download ${qualified}=${version}`);
  const staging = await mkdtemp(path.join(dir, '.download-'));
  try {
    await runTool('apt-get', ['download', '-q', `${qualified}=${version}`], { cwd: staging });
    for (const name of await readdir(staging)) if (name.endsWith('.deb')) await rename(path.join(staging, name), path.join(dir, name));
  } catch (err) {
    if (isHostmeError(err, 'tool-missing')) throw err;
    const stderr = isHostmeError(err) ? String(err.context.stderr ?? '').trim() : '';
    throw new HostmeError('deb-unavailable', `apt-get download ${qualified}=${version} failed: ${stderr.split('\n').pop() || errorMessage(err)}`, { package: qualified, version });
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** The data tar of a .deb as a stream (dpkg-deb --fsys-tarfile). */
export function debDataTar(deb: string): { stream: Readable; done: Promise<void> } {
  const child = spawn('dpkg-deb', ['--fsys-tarfile', deb], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<void>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0 || signal === 'SIGPIPE') resolve();
      else reject(new HostmeError('deb-invalid', `dpkg-deb --fsys-tarfile ${deb} failed: ${stderr.trim() || `exit ${code}`}`, { deb }));
    });
  });
  return { stream: child.stdout, done };
}

/**
 * A kernel meta package (linux-image-cloud-amd64, linux-image-686) → the
 * versioned package it depends on for `arch`; others unchanged.
 */
export async function resolveKernelPackage(pkg: string, arch: string): Promise<string> {
  // Versioned: linux-image-6.1.0-50-686 (not linux-image-686, a meta package).
  if (/^linux-image-\d+\.\d+/.test(pkg)) return pkg;
  const deps = await aptField(`${pkg}:${arch}`, 'depends');
  // Foreign-architecture dependencies are printed qualified: linux-image-6.1.0-50-686:i386.
  return /^\s*Depends:\s*(linux-image-\d[^\s:]*)(:\S+)?\s*$/m.exec(deps)?.[1] ?? pkg;
}

export interface KernelModule {
  name: string;
  /** Path inside the image, e.g. /lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/net/virtio_net.ko */
  imagePath: string;
  data: Buffer;
  depends: string[];
}

export interface KernelPackageContents {
  /** The .deb's file name, for messages. */
  source: string;
  release: string;
  bzImage: Buffer;
  modules: Map<string, KernelModule>;
  /** Names of modules built into the kernel (lib/modules/<release>/modules.builtin). */
  builtin: Set<string>;
  /** Compressed modules (.ko.xz, .ko.zst…) seen and not read. */
  compressedModules: number;
}

function modinfoField(data: Buffer, field: string): string | undefined {
  const needle = Buffer.from(`\0${field}=`);
  const at = data.indexOf(needle);
  if (at < 0) return undefined;
  const start = at + needle.length;
  const end = data.indexOf(0, start);
  return data.subarray(start, end < 0 ? data.length : end).toString('latin1');
}

const moduleName = (s: string) => s.replace(/-/g, '_');

async function readEntry(entry: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of entry) parts.push(chunk as Buffer);
  return Buffer.concat(parts);
}

/**
 * Reads boot/vmlinuz-* and (if wanted) every lib/modules/<release>/…/*.ko and
 * modules.builtin from a kernel .deb. Debian ships no modules.dep (depmod
 * writes it at install time), so each module's dependencies come from its own
 * modinfo `depends=` field, which is what modpost recorded and depmod reads.
 */
export async function readKernelPackage(deb: string, wantModules: boolean): Promise<KernelPackageContents> {
  const { stream, done } = debDataTar(deb);
  const extract = tar.extract();
  stream.pipe(extract);
  const contents: KernelPackageContents = { source: path.basename(deb), release: '', bzImage: Buffer.alloc(0), modules: new Map(), builtin: new Set(), compressedModules: 0 };
  for await (const entry of extract) {
    const name = entry.header.name.replace(/^\.?\//, '');
    const isFile = entry.header.type === 'file';
    const vmlinuz = /^boot\/vmlinuz-(.+)$/.exec(name);
    const ko = /^(?:usr\/)?lib\/modules\/[^/]+\/.*\/([^/]+)\.ko$/.exec(name);
    if (isFile && vmlinuz) {
      contents.bzImage = await readEntry(entry);
      contents.release = vmlinuz[1]!;
    } else if (isFile && wantModules && ko) {
      const data = await readEntry(entry);
      const modName = moduleName(modinfoField(data, 'name') ?? ko[1]!);
      const depends = (modinfoField(data, 'depends') ?? '').split(',').filter(Boolean).map(moduleName);
      contents.modules.set(modName, { name: modName, imagePath: '/' + name.replace(/^usr\//, ''), data, depends });
    } else if (isFile && wantModules && /^(?:usr\/)?lib\/modules\/[^/]+\/modules\.builtin$/.test(name)) {
      for (const line of (await readEntry(entry)).toString('utf8').split('\n')) {
        if (line.trim()) contents.builtin.add(moduleName(path.posix.basename(line.trim(), '.ko')));
      }
    } else {
      if (/\.ko\.(xz|zst|gz)$/.test(name)) contents.compressedModules++;
      entry.resume();
    }
  }
  await done;
  if (!contents.release) throw new HostmeError('kernel-missing', `${path.basename(deb)} holds no boot/vmlinuz-*: is it a kernel image package?`, { deb });
  return contents;
}

/**
 * The modules needed to load `wanted` from a kernel package, dependencies
 * first; modules built into the kernel are left out (they need no loading).
 */
export function moduleLoadOrder(wanted: readonly string[], kernel: Pick<KernelPackageContents, 'source' | 'modules' | 'builtin' | 'compressedModules'>): KernelModule[] {
  const order: KernelModule[] = [];
  const seen = new Set<string>();
  const visit = (raw: string, chain: string[]) => {
    const name = moduleName(raw);
    if (seen.has(name) || kernel.builtin.has(name)) return;
    const mod = kernel.modules.get(name);
    if (!mod) {
      const neededBy = chain.length ? ` (needed by ${chain.join(' → ')})` : '';
      const compressed = kernel.compressedModules ? `; its ${kernel.compressedModules} modules are compressed, which hostme cannot read yet` : '';
      throw new HostmeError('kernel-module-missing', `kernel module ${name}${neededBy} is not in ${kernel.source} (neither as a module nor built in)${compressed}`, { module: name, package: kernel.source });
    }
    seen.add(name);
    for (const dep of mod.depends) visit(dep, [...chain, name]);
    order.push(mod);
  };
  for (const w of wanted) visit(w, []);
  return order;
}

/**
 * bzImage → ELF vmlinux. The boot protocol header gives the compressed
 * payload (payload_offset at 0x248, payload_length at 0x24c, relative to the
 * protected-mode code after (setup_sects+1) sectors); its magic says which
 * decompressor to run.
 */
export async function extractVmlinux(bzImage: Buffer, workDir: string): Promise<Buffer> {
  if (bzImage.toString('latin1', 0x202, 0x206) !== 'HdrS') throw new HostmeError('kernel-invalid', 'the kernel is not a bzImage (no HdrS header)');
  const setupSects = bzImage[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + bzImage.readUInt32LE(0x248);
  const payload = bzImage.subarray(start, start + bzImage.readUInt32LE(0x24c));
  const magic = payload.subarray(0, 6).toString('hex');
  const tools: Array<[string, string[], boolean]> = [
    ['02214c18', ['lz4', '-dc'], true], // legacy frame: lz4 complains about the trailing size word
    ['fd377a585a00', ['xz', '-dc', '--single-stream'], false],
    ['28b52ffd', ['zstd', '-dcq'], false],
    ['1f8b', ['gzip', '-dc'], true],
  ];
  const tool = tools.find(([m]) => magic.startsWith(m));
  if (!tool) throw new HostmeError('kernel-invalid', `unknown kernel payload compression (magic ${magic})`);
  const [, argv, tolerant] = tool;
  const input = path.join(workDir, 'kernel-payload');
  await writeFile(input, payload);
  const out = await new Promise<Buffer>((resolve, reject) => {
    const child = spawn(argv[0]!, [...argv.slice(1), input], { stdio: ['ignore', 'pipe', 'ignore'] });
    const parts: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => parts.push(d));
    child.on('error', (err) => reject(new HostmeError('tool-missing', `${argv[0]} is needed to unpack the kernel: ${err.message}`)));
    child.on('close', (code) => (code === 0 || tolerant ? resolve(Buffer.concat(parts)) : reject(new HostmeError('kernel-invalid', `${argv[0]} failed to decompress the kernel (exit ${code})`))));
  });
  if (out.subarray(0, 4).toString('hex') !== '7f454c46') throw new HostmeError('kernel-invalid', 'the extracted kernel is not an ELF file');
  return out;
}
