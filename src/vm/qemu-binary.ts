/** Which QEMU binary runs a guest, found through PATH. */
import { HostmeError } from '../errors.js';
import { findOnPath } from '../process/tool.js';

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
