import { join } from 'node:path';
import { ExportError } from '../errors.js';
import { writeIso } from '../iso.js';
import type { ExportFormat } from './types.js';

/** Bootable hybrid ISO (CD, DVD, USB stick) of a direct-boot image, with the website reference. */
export const iso: ExportFormat = {
  name: 'iso',
  extension: 'iso',
  description: 'bootable hybrid ISO (isolinux, El Torito BIOS + isohybrid MBR): kernel, initrd, disk and the website reference',
  async write(rawPath, image, workDir, { baseName, onStep, iso: inputs }) {
    if (!inputs) throw new ExportError('export-kernel-unbootable', `${image.name}@${image.version} boots through its firmware: the ISO needs an image published for direct kernel boot`);
    const name = `${baseName}.iso`;
    const path = join(workDir, name);
    await writeIso({ rawPath, manifest: image, digest: inputs.digest, boot: inputs.boot, busybox: inputs.busybox, site: inputs.site, workDir, out: path, onStep });
    return [{ name, path }];
  },
};
