/**
 * The one way hostme runs an external tool to completion (qemu-img, xorriso,
 * mke2fs, debootstrap, apt-get …): the binary can be overridden per tool
 * through HOSTME_<TOOL> (HOSTME_QEMU_IMG for qemu-img), a missing tool names
 * the Debian package that provides it, an abort or a timeout kills the child,
 * and the output kept in memory is bounded. Long-running children (QEMU
 * itself, switchd, the isolated renderer) manage their own lifetimes elsewhere.
 */
import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { HostmeError } from '../errors.js';

/** Tool → the Debian package that installs it (setup.sh installs them all). */
export const TOOL_PACKAGES: Readonly<Record<string, string>> = {
  'qemu-img': 'qemu-utils',
  xorriso: 'xorriso',
  mke2fs: 'e2fsprogs',
  debugfs: 'e2fsprogs',
  e2fsck: 'e2fsprogs',
  'apt-get': 'apt',
  'apt-cache': 'apt',
  'dpkg-deb': 'dpkg',
  debootstrap: 'debootstrap',
  mcopy: 'mtools',
  mformat: 'mtools',
  mmd: 'mtools',
  'grub-mkstandalone': 'grub-common',
  id: 'coreutils',
  sync: 'coreutils',
  umount: 'mount',
  setpriv: 'util-linux',
  'qemu-system-x86_64': 'qemu-system-x86',
  'qemu-system-i386': 'qemu-system-x86',
  sfdisk: 'fdisk',
  'mkfs.vfat': 'dosfstools',
  syslinux: 'syslinux',
  'update-desktop-database': 'desktop-file-utils',
  'update-mime-database': 'shared-mime-info',
};

/** HOSTME_QEMU_IMG for qemu-img: upper case, anything not a letter or digit becomes '_'. */
export function toolOverrideVariable(tool: string): string {
  return `HOSTME_${tool.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
}

/** The binary that runs `tool`: the HOSTME_<TOOL> override when set, else the name (looked up on PATH by spawn). */
export function toolBinary(tool: string, env: NodeJS.ProcessEnv = process.env): string {
  return env[toolOverrideVariable(tool)] || tool;
}

export function toolPackage(tool: string): string {
  return TOOL_PACKAGES[tool] ?? tool;
}

/** An executable file named `name` on PATH (or the path itself when it has a slash); undefined if none. */
export async function findOnPath(name: string, searchPath = process.env.PATH ?? ''): Promise<string | undefined> {
  const candidates = name.includes('/') ? [path.resolve(name)] : searchPath.split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, name));
  for (const candidate of candidates) {
    try {
      await fs.access(candidate, fsConstants.X_OK);
      if ((await fs.stat(candidate)).isFile()) return candidate;
    } catch {
      /* next */
    }
  }
  return undefined;
}

export interface ToolOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Written to the tool's stdin, then stdin is closed. Without it stdin is /dev/null. */
  input?: string | Uint8Array;
  /** Bytes of stdout (and separately stderr) kept; the rest is dropped and `truncated` set. Default 16 MiB. */
  maxOutputBytes?: number;
  /** HostmeError code for a non-zero exit (default 'tool-failed'); 'tool-missing' stays 'tool-missing'. */
  failureCode?: string;
  /**
   * The binary, when the caller has already chosen it (QEMU: VmSpec.qemuBinary,
   * HOSTME_QEMU, or by arch); `tool` then only names it and its package.
   */
  binary?: string;
  /** Exit statuses that mean success (default [0]): the KVM probe guest exits 67 on purpose. */
  okExitCodes?: readonly number[];
}

export interface ToolResult {
  stdout: string;
  stderr: string;
  truncated: boolean;
  /** The exit status (one of okExitCodes). */
  exit: number;
}

const DEFAULT_MAX_OUTPUT = 16 << 20;

/** Runs `tool` to completion; resolves on exit 0 (or okExitCodes), otherwise rejects with a HostmeError. */
export function runTool(tool: string, args: readonly string[], options: ToolOptions = {}): Promise<ToolResult> {
  const binary = options.binary ?? toolBinary(tool, options.env ?? process.env);
  const okExitCodes = options.okExitCodes ?? [0];
  const limit = options.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  const context = { tool, binary, package: toolPackage(tool) };
  if (options.signal?.aborted) return Promise.reject(stopped(tool, 'aborted', context));
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, {
      stdio: [options.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: options.env ?? process.env,
      cwd: options.cwd,
    });
    const out = boundedSink(limit);
    const err = boundedSink(limit);
    child.stdout!.on('data', out.push);
    child.stderr!.on('data', err.push);
    let stopReason: 'aborted' | 'timed out' | undefined;
    const stop = (why: 'aborted' | 'timed out') => {
      stopReason ??= why;
      child.kill('SIGKILL');
    };
    const onAbort = () => stop('aborted');
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => stop('timed out'), options.timeoutMs);
    const done = () => {
      options.signal?.removeEventListener('abort', onAbort);
      if (timer) clearTimeout(timer);
    };
    if (options.input !== undefined) {
      child.stdin!.on('error', () => {}); // a tool that exits without reading its input: the exit status tells
      child.stdin!.end(options.input);
    }
    child.on('error', (e: NodeJS.ErrnoException) => {
      done();
      if (e.code === 'ENOENT') {
        reject(new HostmeError('tool-missing', `${tool} is not installed: install the Debian package ${context.package} (apt-get install ${context.package}, or run scripts/setup.sh)${binary === tool ? '' : ` — ${options.binary ? '' : `${toolOverrideVariable(tool)}=`}${binary} does not exist`}`, context, { cause: e }));
      } else {
        reject(new HostmeError(options.failureCode ?? 'tool-failed', `cannot run ${binary}: ${e.message}`, context, { cause: e }));
      }
    });
    child.on('close', (exit, signal) => {
      done();
      const stdout = out.text();
      const stderr = err.text();
      if (stopReason) return reject(stopped(tool, stopReason, context));
      if (exit !== null && okExitCodes.includes(exit)) return resolve({ stdout, stderr, truncated: out.truncated() || err.truncated(), exit });
      const detail = (stderr.trim() || stdout.trim()).split('\n').slice(-3).join(' / ');
      reject(new HostmeError(options.failureCode ?? 'tool-failed', `${tool} ${args.join(' ')} failed (${exit ?? signal}): ${detail}`, { ...context, args, exit, signal, stderr: stderr.slice(-4096), stdout: stdout.slice(-4096) }));
    });
  });
}

function stopped(tool: string, why: 'aborted' | 'timed out', context: Record<string, unknown>): HostmeError {
  return new HostmeError(why === 'aborted' ? 'aborted' : 'tool-timeout', `${tool} ${why}; the process was killed`, context);
}

function boundedSink(limit: number) {
  const chunks: Buffer[] = [];
  let kept = 0;
  let dropped = false;
  return {
    push: (chunk: Buffer) => {
      const room = limit - kept;
      if (room <= 0) return void (dropped = true);
      const piece = chunk.length > room ? chunk.subarray(0, room) : chunk;
      if (piece.length < chunk.length) dropped = true;
      chunks.push(piece);
      kept += piece.length;
    },
    text: () => Buffer.concat(chunks).toString('utf8'),
    truncated: () => dropped,
  };
}

/** What a failed tool printed (stderr, then stdout; tails), for callers that classify failures by message. */
export function toolOutput(err: unknown): string {
  if (!(err instanceof HostmeError)) return '';
  return `${String(err.context.stderr ?? '')}\n${String(err.context.stdout ?? '')}`;
}
