import { join } from 'node:path';
import { convertRaw } from '../tools.js';
import type { ExportFormat } from './types.js';

export type VmdkSubformat = 'monolithicSparse' | 'streamOptimized';

export async function writeVmdk(rawPath: string, path: string, subformat: VmdkSubformat): Promise<void> {
  await convertRaw(rawPath, path, 'vmdk', ['-o', `subformat=${subformat}`]);
}

export const vmdk: ExportFormat = {
  name: 'vmdk',
  extension: 'vmdk',
  description: 'VMware / VirtualBox (monolithicSparse VMDK)',
  async write(rawPath, _image, workDir, { baseName, onStep }) {
    const name = `${baseName}.vmdk`;
    const path = join(workDir, name);
    onStep?.('converting to vmdk (monolithicSparse)');
    await writeVmdk(rawPath, path, 'monolithicSparse');
    return [{ name, path }];
  },
};
