import { stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { convertRaw } from '../tools.js';
import type { ExportFormat } from './types.js';

const MIB = 1024 * 1024;

/**
 * Fixed VHD as Azure wants it: virtual size a whole number of MiB and exactly
 * the raw size (force_size keeps qemu-img from rounding to CHS geometry).
 */
export const vhd: ExportFormat = {
  name: 'vhd',
  extension: 'vhd',
  description: 'Hyper-V / Azure (fixed VHD, size rounded up to a whole MiB)',
  async write(rawPath, _image, workDir, { baseName, onStep }) {
    const { size } = await stat(rawPath);
    const rounded = Math.ceil(size / MIB) * MIB;
    if (rounded !== size) await truncate(rawPath, rounded);
    const name = `${baseName}.vhd`;
    const path = join(workDir, name);
    onStep?.('converting to vhd (fixed)');
    await convertRaw(rawPath, path, 'vpc', ['-o', 'subformat=fixed,force_size=on']);
    return [{ name, path }];
  },
};
