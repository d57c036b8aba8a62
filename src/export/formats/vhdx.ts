import { join } from 'node:path';
import { convertRaw } from '../tools.js';
import type { ExportFormat } from './types.js';

export const vhdx: ExportFormat = {
  name: 'vhdx',
  extension: 'vhdx',
  description: 'Hyper-V (dynamic VHDX)',
  async write(rawPath, _image, workDir, { baseName, onStep }) {
    const name = `${baseName}.vhdx`;
    const path = join(workDir, name);
    onStep?.('converting to vhdx');
    await convertRaw(rawPath, path, 'vhdx');
    return [{ name, path }];
  },
};
