/** Which QEMU binary runs a guest, found through PATH. */
import { HostmeError } from '../errors.js';
import path from 'node:path';
import { TOOL_PACKAGES, findOnPath, runTool } from '../process/tool.js';

export type VmArch = 'x86_64' | 'i686';

export function defaultQemuBinary(arch: VmArch): string {
  return arch === 'i686' ? 'qemu-system-i386' : 'qemu-system-x86_64';
}

/** Resolves a binary name through PATH; throws 'qemu-missing' if it is not there. */
export async function resolveQemuBinary(binary: string): Promise<string> {
  const found = await findOnPath(binary);
  if (found) return found;
  throw new HostmeError(
    'qemu-missing',
    `QEMU (${binary}) is not installed or not executable: install the Debian package qemu-system-x86 (apt-get install qemu-system-x86)`,
    { binary, package: 'qemu-system-x86' },
  );
}

/** The process layer's name for a QEMU binary (its Debian package in tool-missing errors). */
export function qemuToolName(binary: string): string {
  const name = path.basename(binary);
  return name in TOOL_PACKAGES ? name : 'qemu-system-x86_64';
}

const versionLines = new Map<string, Promise<string | undefined>>();

/** The first line of `qemu-system-… --version` (once per binary and process); undefined when it cannot run. */
export function qemuVersionLine(binary: string): Promise<string | undefined> {
  let line = versionLines.get(binary);
  if (!line) {
    line = runTool(qemuToolName(binary), ['--version'], { binary, timeoutMs: 10_000, maxOutputBytes: 64 << 10 }).then(
      ({ stdout }) => stdout.split('\n')[0]!.trim(),
      () => undefined,
    );
    versionLines.set(binary, line);
  }
  return line;
}
