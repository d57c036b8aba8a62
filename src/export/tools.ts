import { spawn, type ChildProcess } from 'node:child_process';
import { HostmeError } from '../errors.js';

const running = new Set<ChildProcess>();

/** Kills every tool still running (interrupted export): no qemu-img keeps writing into a removed work directory. */
export function killActiveTools(): void {
  for (const child of running) child.kill('SIGKILL');
}

export interface ToolResult {
  stdout: string;
  stderr: string;
}

/**
 * Runs an external tool (qemu-img, mtools) to completion. Failure to start
 * (not installed) and non-zero exits both become HostmeError
 * 'export-tool-failed' naming the Debian package to install.
 */
export function runTool(binary: string, args: string[], options: { debianPackage: string; env?: NodeJS.ProcessEnv; code?: string } = { debianPackage: 'qemu-utils' }): Promise<ToolResult> {
  const code = options.code ?? 'export-tool-failed';
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env });
    running.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (err: NodeJS.ErrnoException) => {
      running.delete(child);
      const why = err.code === 'ENOENT' ? `${binary} is not installed (apt-get install ${options.debianPackage})` : `${binary}: ${err.message}`;
      reject(new HostmeError(code, why, { binary, package: options.debianPackage }, { cause: err }));
    });
    child.on('close', (exit, signal) => {
      running.delete(child);
      if (exit === 0) return resolve({ stdout, stderr });
      const detail = (stderr.trim() || stdout.trim()).split('\n').slice(-3).join(' / ');
      reject(new HostmeError(code, `${binary} ${args.join(' ')} failed (${exit ?? signal}): ${detail}`, { binary, args, exit, stderr }));
    });
  });
}

export function qemuImg(args: string[]): Promise<ToolResult> {
  return runTool(process.env.HOSTME_QEMU_IMG || 'qemu-img', args, { debianPackage: 'qemu-utils' });
}

/** `qemu-img convert` from our sparse raw file; holes stay holes in the output (-S default). */
export async function convertRaw(rawPath: string, outPath: string, outFormat: string, extra: string[] = []): Promise<void> {
  await qemuImg(['convert', '-f', 'raw', '-O', outFormat, ...extra, rawPath, outPath]);
}

export interface ImageInfo {
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  [key: string]: unknown;
}

export async function imageInfo(file: string, format?: string): Promise<ImageInfo> {
  const { stdout } = await qemuImg(['info', '--output=json', ...(format ? ['-f', format] : []), file]);
  return JSON.parse(stdout) as ImageInfo;
}
