/**
 * Preloaded into a `hostme run` child by the boot benchmark
 * (`node --import dist/bench/trace-hook.js bin/hostme.js run ...`) to see where
 * the cold-start time goes, without changing hostme: it records every HTTP
 * request hostme publishes on its diagnostics channel, when QEMU is spawned
 * and when the console first shows the ready pattern, and writes them as JSON
 * to $HOSTME_BENCH_TRACE when the process exits. Times are ms since the
 * process's timeOrigin (add `timeOrigin` for wall-clock ms).
 */
import childProcess from 'node:child_process';
import { subscribe } from 'node:diagnostics_channel';
import { writeFileSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';

export interface TraceRequest {
  /** Completion time. */
  t: number;
  /** Duration (queueing in hostme's limiter included). */
  ms: number;
  url: string;
  method: string;
  status: number;
  bytes: number;
  error?: string;
}

export interface Trace {
  timeOrigin: number;
  hookLoaded: number;
  requests: TraceRequest[];
  qemuSpawn?: number;
  ready?: number;
  exit?: number;
}

const file = process.env.HOSTME_BENCH_TRACE;
const pattern = new RegExp(process.env.HOSTME_BENCH_READY ?? 'HOSTME-READY');

if (file) {
  const trace: Trace = { timeOrigin: performance.timeOrigin, hookLoaded: performance.now(), requests: [] };
  subscribe('hostme:http:request', (message) => {
    const m = message as Record<string, unknown>;
    trace.requests.push({
      t: performance.now(),
      ms: Number(m.ms ?? 0),
      url: String(m.url),
      method: String(m.method),
      status: Number(m.status ?? 0),
      bytes: Number(m.bytes ?? 0),
      ...(m.error ? { error: String(m.error) } : {}),
    });
  });
  const original = childProcess.spawn;
  const patched = function (this: unknown, ...args: unknown[]) {
    const child = (original as (...a: unknown[]) => childProcess.ChildProcess).apply(this, args);
    const command = String(args[0]);
    const argv = Array.isArray(args[1]) ? (args[1] as string[]) : [];
    // The VM, not the KVM probe (which uses -device isa-debug-exit) nor `qemu --version`.
    const probe = argv.includes('isa-debug-exit,iobase=0xf4,iosize=0x04') || argv.includes('--version');
    if ((command.includes('qemu-system') || argv.some((a) => a.includes('qemu-system'))) && !probe) {
      trace.qemuSpawn ??= performance.now();
      let seen = '';
      child.stdout?.on('data', (chunk: Buffer) => {
        if (trace.ready !== undefined) return;
        seen = (seen + chunk.toString('latin1')).slice(-4096);
        if (pattern.test(seen)) trace.ready = performance.now();
      });
    }
    return child;
  };
  (childProcess as { spawn: unknown }).spawn = patched;
  syncBuiltinESMExports();
  process.on('exit', () => {
    trace.exit = performance.now();
    try {
      writeFileSync(file, JSON.stringify(trace));
    } catch {
      /* the benchmark reports a missing trace */
    }
  });
}
