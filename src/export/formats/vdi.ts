import { join } from 'node:path';
import { convertRaw } from '../tools.js';
import type { ExportFormat } from './types.js';

export const vdi: ExportFormat = {
  name: 'vdi',
  extension: 'vdi',
  description: 'VirtualBox (dynamic VDI)',
  async write(rawPath, _image, workDir, { baseName, onStep }) {
    const name = `${baseName}.vdi`;
    const path = join(workDir, name);
    onStep?.('converting to vdi');
    await convertRaw(rawPath, path, 'vdi');
    return [{ name, path }];
  },
};
