import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExportFormat } from './types.js';

/** The sparse raw disk itself. */
export const raw: ExportFormat = {
  name: 'raw',
  extension: 'raw',
  description: 'sparse raw disk image (byte-identical to the published disk)',
  async write(rawPath, _image, workDir, { baseName }) {
    const name = `${baseName}.raw`;
    const path = join(workDir, name);
    await rename(rawPath, path);
    return [{ name, path }];
  },
};
