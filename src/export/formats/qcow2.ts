import { join } from 'node:path';
import { convertRaw } from '../tools.js';
import type { ExportFormat } from './types.js';

export const qcow2: ExportFormat = {
  name: 'qcow2',
  extension: 'qcow2',
  description: 'QEMU/KVM, libvirt, OpenStack (qcow2 v3; --compress for compressed clusters)',
  async write(rawPath, _image, workDir, { baseName, compress, onStep }) {
    const name = `${baseName}.qcow2`;
    const path = join(workDir, name);
    onStep?.(`converting to qcow2${compress ? ' (compressed)' : ''}`);
    await convertRaw(rawPath, path, 'qcow2', compress ? ['-c'] : []);
    return [{ name, path }];
  },
};
