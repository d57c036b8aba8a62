import { runTool as runProcessTool, type ToolOptions, type ToolResult } from '../process/tool.js';

export type { ToolResult };

const running = new Set<AbortController>();

/** Kills every tool still running (interrupted export): no qemu-img keeps writing into a removed work directory. */
export function killActiveTools(): void {
  for (const controller of running) controller.abort();
}

/**
 * Runs an export tool (qemu-img, xorriso, mtools) through the process layer
 * (src/process/tool.ts), registered so killActiveTools can stop it. A
 * non-zero exit is 'export-tool-failed' unless `failureCode` says otherwise;
 * a missing tool is 'tool-missing' naming its Debian package.
 */
export async function runTool(tool: string, args: string[], options: Omit<ToolOptions, 'signal'> = {}): Promise<ToolResult> {
  const controller = new AbortController();
  running.add(controller);
  try {
    return await runProcessTool(tool, args, { failureCode: 'export-tool-failed', ...options, signal: controller.signal });
  } finally {
    running.delete(controller);
  }
}

export function qemuImg(args: string[]): Promise<ToolResult> {
  return runTool('qemu-img', args);
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
