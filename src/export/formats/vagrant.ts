import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Manifest } from '../../format/manifest.js';
import { writeTar, type TarMember } from '../tar.js';
import { convertRaw, imageInfo } from '../tools.js';
import { writeOvfPackage } from './ovf-package.js';
import type { ExportFormat } from './types.js';

const GB = 1024 ** 3;

export function vagrantfile(manifest: Manifest, provider: 'libvirt' | 'virtualbox', mac?: string): string {
  const { memoryMiB, cpus } = manifest.hardware;
  const lines = [
    `# Vagrantfile embedded in the ${manifest.name}@${manifest.version} box exported by hostme.`,
    'Vagrant.configure("2") do |config|',
    ...(mac ? [`  config.vm.base_mac = "${mac}"`] : []),
    `  config.vm.provider :${provider} do |vm|`,
    `    vm.memory = ${memoryMiB}`,
    `    vm.cpus = ${cpus}`,
    '  end',
    'end',
  ];
  return lines.join('\n') + '\n';
}

/**
 * A Vagrant box (.box = gzip-compressed tar). libvirt: metadata.json
 * {"provider":"libvirt","format":"qcow2","virtual_size":GB} + box.img (qcow2);
 * virtualbox: metadata.json {"provider":"virtualbox"} + box.ovf + box-disk001.vmdk.
 * Both carry a minimal Vagrantfile with the manifest's memory and CPUs.
 */
export const vagrant: ExportFormat = {
  name: 'vagrant',
  extension: 'box',
  description: 'Vagrant box (--provider libvirt (default, qcow2) or virtualbox (OVF + vmdk))',
  async write(rawPath, image, workDir, { baseName, provider = 'libvirt', onStep }) {
    const members: TarMember[] = [];
    const metadataPath = join(workDir, 'metadata.json');
    const vagrantfilePath = join(workDir, 'Vagrantfile');
    if (provider === 'libvirt') {
      const img = join(workDir, 'box.img');
      onStep?.('converting to qcow2 for the libvirt box');
      await convertRaw(rawPath, img, 'qcow2');
      const info = await imageInfo(img, 'qcow2');
      const metadata = { provider: 'libvirt', format: 'qcow2', virtual_size: Math.ceil(info['virtual-size'] / GB) };
      await writeFile(metadataPath, JSON.stringify(metadata, null, 2) + '\n');
      await writeFile(vagrantfilePath, vagrantfile(image, 'libvirt'));
      members.push({ name: 'metadata.json', path: metadataPath }, { name: 'Vagrantfile', path: vagrantfilePath }, { name: 'box.img', path: img });
    } else {
      const pkg = await writeOvfPackage(rawPath, image, workDir, { ovf: 'box.ovf', vmdk: 'box-disk001.vmdk', mf: 'box.mf' }, onStep);
      await writeFile(metadataPath, JSON.stringify({ provider: 'virtualbox' }, null, 2) + '\n');
      await writeFile(vagrantfilePath, vagrantfile(image, 'virtualbox', pkg.mac));
      members.push({ name: 'metadata.json', path: metadataPath }, { name: 'Vagrantfile', path: vagrantfilePath }, pkg.ovf, pkg.vmdk, pkg.mf);
    }
    const name = `${baseName}.${provider}.box`;
    const path = join(workDir, name);
    onStep?.(`writing ${provider} box`);
    await writeTar(path, members, { gzip: true });
    return [{ name, path }];
  },
};
