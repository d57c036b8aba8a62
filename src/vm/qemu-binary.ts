/** Which QEMU binary runs a guest, found through PATH. */
import { constants as fsConstants } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { HostmeError } from '../errors.js';

export type VmArch = 'x86_64' | 'i686';

export function defaultQemuBinary(arch: VmArch): string {
  return arch === 'i686' ? 'qemu-system-i386' : 'qemu-system-x86_64';
}

/** Resolves a binary name through PATH; throws 'qemu-missing' if it is not there. */
export async function resolveQemuBinary(binary: string): Promise<string> {
  const candidates = binary.includes('/')
    ? [path.resolve(binary)]
    : (process.env.PATH ?? '').split(path.delimiter).filter(Boolean).map((dir) => path.join(dir, binary));
  for (const candidate of candidates) {
    try {
      await fs.access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      /* next */
    }
  }
  throw new HostmeError(
    'qemu-missing',
    `QEMU (${binary}) is not installed or not executable: install the Debian package qemu-system-x86 (apt-get install qemu-system-x86)`,
    { binary, package: 'qemu-system-x86' },
  );
}
