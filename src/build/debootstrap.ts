/**
 * `base: {debootstrap: {suite, variant, packages, mirror}}`: a Debian system
 * made by debootstrap in the build's root tree. Needs root (device nodes,
 * chroot) and a Debian mirror (through the config's mirror rules).
 * Downloaded packages are kept in <cacheDir>/debootstrap/<arch> for the next
 * build. What only describes the build (the build host's /etc/resolv.conf and
 * /etc/hostname, apt lists and downloads, logs) is left out. Not reproducible bit for bit: dpkg and debconf record installation
 * times and the package versions follow the mirror.
 */
import { lstat, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { HostmeError, isHostmeError } from '../errors.js';
import { runTool, toolOutput } from '../process/tool.js';
import { BUILD_EPOCH } from './disk.js';
import { loadMirrorRules, rewriteUrl } from './fetch-base.js';


export interface DebootstrapRequest {
  suite: string;
  variant: 'minbase' | 'buildd' | 'fakechroot';
  packages: string[];
  mirror?: string;
  /** Debian architecture (amd64, i386). */
  arch: string;
  root: string;
  cacheDir: string;
  log: (line: string) => void;
}

/** Files debootstrap leaves that only describe this run (downloaded lists and packages, logs); directories are kept, apt needs them. */
const RUN_SPECIFIC = ['var/cache/apt', 'var/lib/apt/lists', 'var/log', 'var/cache/debconf/templates.dat-old', 'var/cache/debconf/config.dat-old'];

export async function debootstrap(req: DebootstrapRequest): Promise<void> {
  if (process.getuid?.() !== 0) throw new HostmeError('debootstrap-needs-root', 'base.debootstrap needs root (debootstrap creates device nodes and chroots); use a tarball, dir or debs base instead');
  const mirror = rewriteUrl(req.mirror ?? 'http://deb.debian.org/debian/', await loadMirrorRules());
  const cache = path.resolve(req.cacheDir, 'debootstrap', req.arch);
  await mkdir(cache, { recursive: true });
  const args = [`--variant=${req.variant}`, `--arch=${req.arch}`, `--cache-dir=${cache}`, ...(req.packages.length ? [`--include=${req.packages.join(',')}`] : []), req.suite, req.root, mirror];
  req.log(`debootstrap ${args.join(' ')}`);
  const started = performance.now();
  try {
    await runTool('debootstrap', args, { maxOutputBytes: 64 << 20, env: { ...process.env, SOURCE_DATE_EPOCH: String(BUILD_EPOCH), LC_ALL: 'C' } });
  } catch (err) {
    throw await debootstrapError(err, req.root);
  } finally {
    await unmountUnder(req.root);
  }
  req.log(`debootstrap: ${req.suite} ${req.variant} in ${((performance.now() - started) / 1000).toFixed(0)} s`);
  for (const p of RUN_SPECIFIC) await removeFiles(path.join(req.root, p));
  await rm(path.join(req.root, 'debootstrap'), { recursive: true, force: true });
  // debootstrap copies these two from the build host: they describe the host, not the image.
  await rm(path.join(req.root, 'etc', 'resolv.conf'), { force: true });
  await writeFile(path.join(req.root, 'etc', 'hostname'), 'localhost\n');
}

/** The "E:" line debootstrap printed (or its last line) plus the tail of its log, which goes away with the work dir. */
async function debootstrapError(err: unknown, root: string): Promise<HostmeError> {
  if (isHostmeError(err, 'tool-missing')) return err;
  const output = toolOutput(err).split('\n').filter((l) => l.trim());
  const reason = output.filter((l) => l.startsWith('E:')).pop() ?? output.pop() ?? (err as Error).message;
  const logTail = await readFile(path.join(root, 'debootstrap', 'debootstrap.log'), 'utf8').then(
    (text) => text.trimEnd().split('\n').slice(-20),
    () => [] as string[],
  );
  return new HostmeError('debootstrap-failed', `debootstrap failed: ${reason.trim()}`, { log: logTail });
}

/**
 * Unmounts whatever is still mounted inside the root (debootstrap mounts
 * /proc, /sys and sometimes binds the host's /dev nodes; if it dies, they
 * stay): removing the work dir must never reach into them.
 */
export async function unmountUnder(dir: string): Promise<void> {
  const mounts = await readFile('/proc/self/mounts', 'utf8').catch(() => '');
  const prefix = path.resolve(dir) + '/';
  const points = mounts
    .split('\n')
    .map((line) => line.split(' ')[1]?.replace(/\\(\d{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))))
    .filter((p): p is string => p !== undefined && p.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
  for (const point of points) {
    await runTool('umount', ['-l', point]).catch((err: Error) => {
      throw new HostmeError('debootstrap-failed', `cannot unmount ${point} left by debootstrap: ${err.message}`, { mountPoint: point });
    });
  }
}

/** Removes the regular files, links and other non-directories under `dir`, keeping the directories. */
async function removeFiles(dir: string): Promise<void> {
  const info = await lstat(dir).catch(() => null);
  if (!info) return;
  if (!info.isDirectory()) return rm(dir, { force: true });
  for (const name of await readdir(dir)) await removeFiles(path.join(dir, name));
}
