import { join } from 'node:path';
import { writeTar } from '../tar.js';
import { writeOvfPackage } from './ovf-package.js';
import type { ExportFormat } from './types.js';

/** OVA: a ustar archive holding the .ovf first, then the streamOptimized .vmdk, then the .mf. */
export const ova: ExportFormat = {
  name: 'ova',
  extension: 'ova',
  description: 'OVF 1.0 appliance (VirtualBox, VMware, most hypervisors): .ovf + streamOptimized .vmdk + .mf in a tar',
  async write(rawPath, image, workDir, { baseName, onStep }) {
    const pkg = await writeOvfPackage(rawPath, image, workDir, { ovf: `${baseName}.ovf`, vmdk: `${baseName}-disk1.vmdk`, mf: `${baseName}.mf` }, onStep);
    const name = `${baseName}.ova`;
    const path = join(workDir, name);
    onStep?.('writing ova');
    await writeTar(path, [pkg.ovf, pkg.vmdk, pkg.mf]);
    return [{ name, path }];
  },
};
