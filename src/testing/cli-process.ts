import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { hostmeBin } from './published-guest.js';

export interface CliProcess {
  child: ChildProcessWithoutNullStreams;
  /** The first JSON document the command printed on stdout (its --json start-up line). */
  info: Record<string, unknown>;
  stderr(): string;
  /** Resolves with the exit code or signal once the process is gone. */
  exited: Promise<number | string | null>;
  kill(signal?: NodeJS.Signals): Promise<number | string | null>;
}

/**
 * Starts a long-running hostme command (serve, host) as its own process and
 * waits for the JSON it prints once it listens. Bounded: rejects after
 * timeoutMs, and the process is killed then.
 */
export async function startCli(args: string[], options: { env?: Record<string, string>; timeoutMs?: number; script?: string } = {}): Promise<CliProcess> {
  // `script`: another Node program that prints its JSON the same way (a benchmark's stand-in).
  const child = spawn(process.execPath, [options.script ?? hostmeBin, ...args], { env: { ...process.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr = (stderr + d.toString()).slice(-200_000);
    if (process.env.HOSTME_TEST_VERBOSE) process.stderr.write(`[${args[0]} ${child.pid}] ${d.toString()}`);
  });
  const exited = new Promise<number | string | null>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal)));
  const info = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`hostme ${args.join(' ')} did not start in time: ${stderr}`));
    }, options.timeoutMs ?? 60_000);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      const end = stdout.indexOf('\n}');
      if (end >= 0) {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(stdout.slice(0, end + 2)) as Record<string, unknown>);
        } catch (err) {
          reject(err as Error);
        }
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`hostme ${args.join(' ')} exited (${code}) before it started: ${stderr}`));
    });
  });
  return {
    child,
    info,
    stderr: () => stderr,
    exited,
    kill: (signal: NodeJS.Signals = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/**
 * After `kill -9` of a node, its QEMU processes outlive it (the node's next
 * start stops them through the instance lock). Tests and benchmarks that do
 * not restart the node call this: every QEMU recorded in HOME's instance
 * locks whose hostme process is gone is killed.
 */
export async function killLeftoverVms(home: string): Promise<number> {
  const { readdir, readFile } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  let killed = 0;
  const dir = join(home, 'cache', 'instances');
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const lock = await readFile(join(dir, name, 'lock'), 'utf8').catch(() => '');
    let holder: { pid?: number; qemuPid?: number } = {};
    try {
      holder = JSON.parse(lock) as typeof holder;
    } catch {
      continue;
    }
    if (holder.qemuPid && holder.pid && !alive(holder.pid) && alive(holder.qemuPid)) {
      process.kill(holder.qemuPid, 'SIGKILL');
      killed++;
    }
  }
  return killed;
}
