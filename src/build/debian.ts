/**
 * Debian packages as build inputs, without installing anything on the host:
 * `apt-get download` into <cacheDir>/debs, `dpkg-deb --fsys-tarfile` into the
 * safe unpacker, kernel extraction (bzImage → ELF vmlinux, the approach of
 * scripts/guest/build-reference.sh) and kernel modules with their dependencies.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import tar from 'tar-stream';
import { HostmeError } from '../errors.js';

const run = promisify(execFile);

async function aptField(pkg: string, command: 'policy' | 'depends'): Promise<string> {
  try {
    const { stdout } = await run('apt-cache', [command, pkg], { maxBuffer: 16 << 20 });
    return stdout;
  } catch (err) {
    throw new HostmeError('apt-failed', `apt-cache ${command} ${pkg} failed (is this a Debian system?): ${(err as Error).message.split('\n')[0]}`, { package: pkg });
  }
}

async function debVersion(file: string): Promise<string> {
  const { stdout } = await run('dpkg-deb', ['-f', file, 'Version']);
  return stdout.trim();
}

async function cachedDebs(dir: string, pkg: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names.filter((n) => n.startsWith(`${pkg}_`) && n.endsWith('.deb')).sort().map((n) => path.join(dir, n));
}

/**
 * Downloads `pkg` or `pkg=version` (default: apt's candidate) into
 * <cacheDir>/debs unless already there; returns the .deb path and version.
 * Without apt metadata, an already cached .deb of the package is used.
 */
export async function fetchDeb(spec: string, cacheDir: string, log?: (line: string) => void): Promise<{ file: string; version: string; package: string }> {
  const [pkg, pinned] = spec.split('=', 2) as [string, string | undefined];
  const dir = path.join(cacheDir, 'debs');
  await mkdir(dir, { recursive: true });
  let version = pinned;
  if (!version) {
    const policy = await aptField(pkg, 'policy');
    const candidate = /^\s*Candidate:\s*(\S+)/m.exec(policy)?.[1];
    if (candidate && candidate !== '(none)') version = candidate;
  }
  const find = async () => {
    for (const file of await cachedDebs(dir, pkg)) if (!version || (await debVersion(file)) === version) return file;
    return undefined;
  };
  let file = await find();
  if (!file) {
    if (!version) throw new HostmeError('deb-unavailable', `Debian package ${pkg} is unknown to apt (run apt-get update?)`, { package: pkg });
    log?.(`apt-get download ${pkg}=${version}`);
    // Download into a private directory, then rename: concurrent builds never see a partial .deb.
    const staging = await mkdtemp(path.join(dir, '.download-'));
    try {
      await run('apt-get', ['download', '-q', `${pkg}=${version}`], { cwd: staging, maxBuffer: 16 << 20 });
      for (const name of await readdir(staging)) if (name.endsWith('.deb')) await rename(path.join(staging, name), path.join(dir, name));
    } catch (err) {
      throw new HostmeError('deb-unavailable', `apt-get download ${pkg}=${version} failed: ${(err as { stderr?: string }).stderr?.trim().split('\n').pop() ?? (err as Error).message}`, { package: pkg, version });
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
    file = await find();
    if (!file) throw new HostmeError('deb-unavailable', `downloaded ${pkg} but cannot find the .deb in ${dir}`, { package: pkg });
  }
  return { file, version: version ?? (await debVersion(file)), package: pkg };
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

/** A kernel meta package (linux-image-cloud-amd64) → the versioned package it depends on; others unchanged. */
export async function resolveKernelPackage(pkg: string): Promise<string> {
  if (/^linux-image-\d/.test(pkg)) return pkg;
  const deps = await aptField(pkg, 'depends');
  return /^\s*Depends:\s*(linux-image-\d[^\s]*)\s*$/m.exec(deps)?.[1] ?? pkg;
}

export interface KernelModule {
  name: string;
  /** Path inside the image, e.g. /lib/modules/6.1.0-56-cloud-amd64/kernel/drivers/net/virtio_net.ko */
  imagePath: string;
  data: Buffer;
  depends: string[];
}

export interface KernelPackageContents {
  release: string;
  bzImage: Buffer;
  modules: Map<string, KernelModule>;
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

/** Reads boot/vmlinuz-* and (if wanted) every lib/modules/<release>/*.ko from a kernel .deb. */
export async function readKernelPackage(deb: string, wantModules: boolean): Promise<KernelPackageContents> {
  const { stream, done } = debDataTar(deb);
  const extract = tar.extract();
  stream.pipe(extract);
  let bzImage: Buffer | undefined;
  let release = '';
  const modules = new Map<string, KernelModule>();
  for await (const entry of extract) {
    const name = entry.header.name.replace(/^\.?\//, '');
    const vmlinuz = /^boot\/vmlinuz-(.+)$/.exec(name);
    const ko = /^(?:usr\/)?lib\/modules\/([^/]+)\/.*\/([^/]+)\.ko$/.exec(name);
    if ((vmlinuz || (ko && wantModules)) && entry.header.type === 'file') {
      const parts: Buffer[] = [];
      for await (const chunk of entry) parts.push(chunk as Buffer);
      const data = Buffer.concat(parts);
      if (vmlinuz) {
        bzImage = data;
        release = vmlinuz[1]!;
      } else if (ko) {
        const modName = moduleName(modinfoField(data, 'name') ?? ko[2]!);
        const depends = (modinfoField(data, 'depends') ?? '').split(',').filter(Boolean).map(moduleName);
        modules.set(modName, { name: modName, imagePath: '/' + name.replace(/^usr\//, ''), data, depends });
      }
    } else {
      entry.resume();
    }
  }
  await done;
  if (!bzImage) throw new HostmeError('kernel-missing', `${path.basename(deb)} holds no boot/vmlinuz-*: is it a kernel image package?`, { deb });
  return { release, bzImage, modules };
}

/** The modules needed to load `wanted`, dependencies first. */
export function moduleLoadOrder(wanted: readonly string[], modules: Map<string, KernelModule>, builtin: Set<string> = new Set()): KernelModule[] {
  const order: KernelModule[] = [];
  const seen = new Set<string>();
  const visit = (raw: string, chain: string[]) => {
    const name = moduleName(raw);
    if (seen.has(name) || builtin.has(name)) return;
    const mod = modules.get(name);
    if (!mod) throw new HostmeError('kernel-module-missing', `kernel module ${name}${chain.length ? ` (needed by ${chain.join(' → ')})` : ''} is not in the kernel package (and not built in)`, { module: name });
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
