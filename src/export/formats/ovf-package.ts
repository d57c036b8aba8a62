import { randomBytes } from 'node:crypto';
import { stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Manifest } from '../../format/manifest.js';
import { sha256File } from '../hash.js';
import { buildOvf } from '../ovf.js';
import { imageInfo } from '../tools.js';
import { writeVmdk } from './vmdk.js';

export interface OvfPackage {
  ovf: { name: string; path: string };
  vmdk: { name: string; path: string };
  mf: { name: string; path: string };
  /** NIC MAC (12 hex digits, VirtualBox's 08:00:27 prefix). */
  mac: string;
}

/** A random locally-unique MAC in VirtualBox's OUI, as VirtualBox itself assigns. */
export function randomMac(): string {
  return `080027${randomBytes(3).toString('hex').toUpperCase()}`;
}

/**
 * The pieces of an OVF package: a streamOptimized VMDK, the .ovf envelope
 * describing it, and a .mf manifest with `SHA256(file)= hex` lines.
 */
export async function writeOvfPackage(rawPath: string, manifest: Manifest, workDir: string, names: { ovf: string; vmdk: string; mf: string }, onStep?: (step: string) => void): Promise<OvfPackage> {
  const vmdkPath = join(workDir, names.vmdk);
  onStep?.('converting to vmdk (streamOptimized)');
  await writeVmdk(rawPath, vmdkPath, 'streamOptimized');
  const { size: fileSize } = await stat(vmdkPath);
  const info = await imageInfo(vmdkPath, 'vmdk');
  const mac = randomMac();
  const ovfText = buildOvf(manifest, { href: names.vmdk, fileSize, capacity: info['virtual-size'] }, { mac });
  const ovfPath = join(workDir, names.ovf);
  await writeFile(ovfPath, ovfText);
  onStep?.('hashing OVF package');
  const mfPath = join(workDir, names.mf);
  const lines = [`SHA256(${names.ovf})= ${await sha256File(ovfPath)}`, `SHA256(${names.vmdk})= ${await sha256File(vmdkPath)}`];
  await writeFile(mfPath, lines.join('\n') + '\n');
  return { ovf: { name: names.ovf, path: ovfPath }, vmdk: { name: names.vmdk, path: vmdkPath }, mf: { name: names.mf, path: mfPath }, mac };
}
