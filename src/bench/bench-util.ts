/** Shared helpers of the benchmarks (dist/bench/*.bench.js): processes, cleanup, stats, tables. */
import { spawn, type ChildProcess } from 'node:child_process';
import { cpus, loadavg, totalmem, release } from 'node:os';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const hostmeBin = path.join(repoRoot, 'bin', 'hostme.js');

/** Cleanup steps run in reverse order on success, failure, SIGINT/SIGTERM. */
export class Cleanup {
  private readonly steps: Array<{ label: string; fn: () => unknown }> = [];
  private running: Promise<void> | undefined;

  constructor() {
    const onSignal = (signal: NodeJS.Signals) => {
      process.stderr.write(`\nbench: ${signal}, cleaning up\n`);
      void this.run().finally(() => process.exit(130));
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }

  add(label: string, fn: () => unknown): void {
    this.steps.push({ label, fn });
  }

  run(): Promise<void> {
    this.running ??= (async () => {
      for (const step of this.steps.reverse()) {
        try {
          await withTimeout(Promise.resolve(step.fn()), 15_000, `cleanup ${step.label}`);
        } catch (err) {
          process.stderr.write(`bench: cleanup ${step.label} failed: ${(err as Error).message}\n`);
        }
      }
      this.steps.length = 0;
    })();
    return this.running;
  }
}

export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
    }),
  ]);
}

/** Kill a child we started (and its process group when it was detached). */
export function killTree(child: ChildProcess, signal: NodeJS.Signals = 'SIGKILL'): void {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    try {
      child.kill(signal);
    } catch {
      /* gone */
    }
  }
}

export interface CommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Run a command to completion (own process group, killed on timeout). Rejects on non-zero exit unless allowFail. */
export function runCommand(
  command: string,
  args: string[],
  options: { timeoutMs: number; env?: NodeJS.ProcessEnv; cwd?: string; allowFail?: boolean; onSpawn?: (child: ChildProcess) => void },
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    options.onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout = (stdout + d.toString('utf8')).slice(-1 << 20)));
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString('utf8')).slice(-1 << 16)));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killTree(child);
    }, options.timeoutMs);
    const kill = () => killTree(child);
    process.on('exit', kill);
    child.on('error', (err) => {
      clearTimeout(timer);
      process.off('exit', kill);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      process.off('exit', kill);
      const result = { code, signal, stdout, stderr, ms: performance.now() - started };
      if (timedOut) return reject(new Error(`${command} ${args.slice(0, 3).join(' ')}… timed out after ${options.timeoutMs} ms\n${stderr.slice(-2000)}`));
      if (code !== 0 && !options.allowFail) return reject(new Error(`${command} ${args.slice(0, 3).join(' ')}… exited ${code ?? signal}\n${stderr.slice(-2000)}`));
      resolve(result);
    });
  });
}

export interface Served {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** `hostme serve DIR --port 0 --quiet --json` as a child process. */
export async function startHostmeServe(dir: string, cleanup: Cleanup): Promise<Served> {
  const child = spawn(process.execPath, [hostmeBin, 'serve', dir, '--port', '0', '--quiet', '--json'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise<void>((r) => child.once('close', () => r()));
    killTree(child, 'SIGTERM');
    await withTimeout(gone, 3000, 'serve stop').catch(() => killTree(child, 'SIGKILL'));
  };
  const killOnExit = () => killTree(child);
  process.on('exit', killOnExit);
  cleanup.add(`serve ${dir}`, async () => {
    await stop();
    process.off('exit', killOnExit);
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const url = await withTimeout(
    new Promise<string>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /"url"\s*:\s*"([^"]+)"/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.on('close', (code) => reject(new Error(`hostme serve exited ${code}: ${err}`)));
    }),
    15_000,
    'hostme serve start',
  );
  return { url, port: Number(new URL(url).port), stop };
}

export function median(values: number[]): number {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

export function fmtBytes(n: number): string {
  if (!Number.isFinite(n)) return '-';
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function fmtSeconds(ms: number): string {
  return Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : '-';
}

export function fmtRatio(x: number): string {
  return Number.isFinite(x) ? `${x.toFixed(2)}×` : '-';
}

/** A plain text table: first row is the header. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  return [line(rows[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

export function machineInfo(): Record<string, unknown> {
  const c = cpus();
  return { cpus: c.length, cpuModel: c[0]?.model, memoryBytes: totalmem(), kernel: release(), node: process.version, loadavgAtStart: loadavg() };
}

export async function writeJson(file: string, data: unknown): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, JSON.stringify(data, null, 2) + '\n');
}

export function log(text: string): void {
  process.stderr.write(`bench: ${text}\n`);
}

/**
 * Run a benchmark's main: a failure prints `bench:NAME failed: …` with its stack and sets exit
 * status 1; the cleanup steps run either way (the process is not killed, so pending output flushes).
 */
export function runBench(name: string, main: () => Promise<void>, cleanup?: Cleanup): void {
  main()
    .catch((err: unknown) => {
      process.stderr.write(`bench:${name} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    })
    .finally(async () => {
      await cleanup?.run();
      // A failed run may leave a browser or server handle behind: do not hang on it.
      if (process.exitCode) setTimeout(() => process.exit(), 2_000).unref();
    });
}
