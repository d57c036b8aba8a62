import { ExportError } from '../errors.js';
import { iso } from './iso.js';
import { ova } from './ova.js';
import { qcow2 } from './qcow2.js';
import { raw } from './raw.js';
import type { ExportFormat } from './types.js';
import { vagrant } from './vagrant.js';
import { vdi } from './vdi.js';
import { vhd } from './vhd.js';
import { vhdx } from './vhdx.js';
import { vmdk } from './vmdk.js';

export type { ExportFormat, ExportedFile, FormatOptions } from './types.js';

/** Every export format, in the order `hostme export --help` lists them. */
export const EXPORT_FORMATS: readonly ExportFormat[] = [raw, qcow2, vmdk, vdi, vhd, vhdx, ova, vagrant, iso];

export function exportFormat(name: string): ExportFormat {
  const found = EXPORT_FORMATS.find((f) => f.name === name.toLowerCase());
  if (!found) {
    throw new ExportError('export-format-unknown', `unknown export format "${name}"; valid formats: ${EXPORT_FORMATS.map((f) => f.name).join(', ')}`, { format: name, valid: EXPORT_FORMATS.map((f) => f.name) });
  }
  return found;
}
