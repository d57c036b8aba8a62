import { mkdir, readFile, rm, writeFile, cp } from 'node:fs/promises';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadPrivateKey } from '../pack/publisher-key.js';
import { packWithNewKey } from './fixtures.js';
import type { PublisherKey } from '../format/node/keys.js';
import { loadReferenceGuest, referenceGuestDir, type ReferenceGuest } from './reference-guest.js';

export interface PublishedGuest {
  guest: ReferenceGuest;
  /** Repository holding hello@1: the 1 GiB reference disk + kernel. Tests must not modify it. */
  repoDir: string;
  keyFile: string;
  key: PublisherKey;
}

/**
 * The reference guest packed into a repository once per guest build and
 * reused by every test file (packing 1 GiB takes ~20 s on 2 cores).
 */
export async function publishedReferenceGuest(): Promise<PublishedGuest> {
  const guest = loadReferenceGuest();
  const stamp = (await readFile(join(referenceGuestDir(), 'stamp'), 'utf8')).trim();
  const base = join(referenceGuestDir(), '..', 'published');
  const repoDir = join(base, 'repo');
  const keyFile = join(base, 'publisher.key');
  const done = join(base, 'done');
  if ((await readFile(done, 'utf8').catch(() => '')) !== stamp) {
    await rm(base, { recursive: true, force: true });
    await mkdir(base, { recursive: true });
    await packWithNewKey(base, repoDir, {
      disk: guest.disk1g,
      name: 'hello',
      version: '1',
      kernel: guest.kernel,
      cmdline: guest.cmdline,
      memoryMiB: guest.memoryMiB,
      cpus: guest.cpus,
      description: 'hostme reference guest (busybox on Debian cloud kernel, 1 GiB disk)',
    });
    await writeFile(done, stamp);
  }
  return { guest, repoDir, keyFile, key: await loadPrivateKey(keyFile) };
}

/** A private, modifiable copy of a repository. */
export async function copyRepo(from: string, to: string): Promise<string> {
  await cp(from, to, { recursive: true });
  return to;
}

export const hostmeBin = fileURLToPath(new URL('../../bin/hostme.js', import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run the hostme CLI as a user would, with a hard deadline so a test can never hang. */
export function runCli(args: string[], options: { env?: Record<string, string>; timeoutMs?: number; input?: string } = {}): Promise<CliResult> & { pid?: number; kill(signal?: NodeJS.Signals): void } {
  const child = spawn(process.execPath, [hostmeBin, ...args], { env: { ...process.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  if (options.input !== undefined) child.stdin.end(options.input);
  else child.stdin.end();
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 240_000);
  const promise = new Promise<CliResult>((resolve) => {
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  return Object.assign(promise, { pid: child.pid, kill: (signal: NodeJS.Signals = 'SIGKILL') => void child.kill(signal) });
}
