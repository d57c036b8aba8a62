import type { Manifest } from '../format/manifest.js';

export interface OvfDisk {
  /** File name inside the OVA. */
  href: string;
  /** Bytes of that file. */
  fileSize: number;
  /** Virtual size of the disk in bytes. */
  capacity: number;
  /** Bytes actually used (optional hint). */
  populatedSize?: number;
}

export interface OvfOptions {
  /** NIC MAC address without separators (VirtualBox style), optional. */
  mac?: string;
  /** 'sata' (AHCI, ResourceType 20, default) or 'ide' (ResourceType 5). */
  controller?: 'sata' | 'ide';
  /** VirtualSystemType in the System element (default virtualbox-2.2). */
  systemType?: string;
}

export const VMDK_STREAM_OPTIMIZED_URL = 'http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized';

/** CIM OperatingSystem ids: 101 = Linux 64-bit, 36 = Linux. */
const OS_IDS: Record<string, { id: number; description: string }> = {
  x86_64: { id: 101, description: 'Linux 64-bit' },
  i686: { id: 36, description: 'Linux' },
};

export function xmlEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** One VirtualHardwareSection Item; rasd elements in schema (alphabetical) order, as strict readers expect. */
function item(fields: Record<string, string | number | boolean | undefined>): string {
  const lines = Object.keys(fields)
    .filter((k) => fields[k] !== undefined)
    .sort()
    .map((k) => `        <rasd:${k}>${xmlEscape(String(fields[k]))}</rasd:${k}>`);
  return `      <Item>\n${lines.join('\n')}\n      </Item>`;
}

/**
 * An OVF 1.0 envelope for a single-disk VM built from the manifest's
 * hardware: CPU (ResourceType 3), memory in MB (4), a SATA (20) or IDE (5)
 * controller, the disk (17) on that controller, and one NAT NIC (10).
 */
export function buildOvf(manifest: Manifest, disk: OvfDisk, options: OvfOptions = {}): string {
  const name = `${manifest.name}-${manifest.version}`;
  const os = OS_IDS[manifest.hardware.arch] ?? OS_IDS.x86_64!;
  const controller = options.controller ?? 'sata';
  const { cpus, memoryMiB } = manifest.hardware;
  const items = [
    item({ Caption: `${cpus} virtual CPU`, Description: 'Number of virtual CPUs', ElementName: `${cpus} virtual CPU`, InstanceID: 1, ResourceType: 3, VirtualQuantity: cpus }),
    item({ AllocationUnits: 'byte * 2^20', Caption: `${memoryMiB} MB of memory`, Description: 'Memory Size', ElementName: `${memoryMiB} MB of memory`, InstanceID: 2, ResourceType: 4, VirtualQuantity: memoryMiB }),
    controller === 'sata'
      ? item({ Address: 0, Caption: 'sataController0', Description: 'SATA Controller', ElementName: 'sataController0', InstanceID: 3, ResourceSubType: 'AHCI', ResourceType: 20 })
      : item({ Address: 0, Caption: 'ideController0', Description: 'IDE Controller', ElementName: 'ideController0', InstanceID: 3, ResourceSubType: 'PIIX4', ResourceType: 5 }),
    item({ AddressOnParent: 0, Caption: 'disk1', Description: 'Disk Image', ElementName: 'disk1', HostResource: '/disk/vmdisk1', InstanceID: 4, Parent: 3, ResourceType: 17 }),
    item({ Address: options.mac, AutomaticAllocation: true, Caption: 'Ethernet adapter on NAT', Connection: 'NAT', ElementName: 'Ethernet adapter on NAT', InstanceID: 5, ResourceSubType: 'E1000', ResourceType: 10 }),
  ];
  const description = manifest.description ? `\n    <Description>${xmlEscape(manifest.description)}</Description>` : '';
  return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope ovf:version="1.0" xml:lang="en-US" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:id="file1" ovf:href="${xmlEscape(disk.href)}" ovf:size="${disk.fileSize}"/>
  </References>
  <DiskSection>
    <Info>List of the virtual disks used in the package</Info>
    <Disk ovf:capacity="${disk.capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="${VMDK_STREAM_OPTIMIZED_URL}"${disk.populatedSize !== undefined ? ` ovf:populatedSize="${disk.populatedSize}"` : ''}/>
  </DiskSection>
  <NetworkSection>
    <Info>Logical networks used in the package</Info>
    <Network ovf:name="NAT">
      <Description>Logical network used by this appliance.</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="${xmlEscape(name)}">
    <Info>A virtual machine exported by hostme from ${xmlEscape(`${manifest.name}@${manifest.version}`)}</Info>
    <Name>${xmlEscape(name)}</Name>${description}
    <OperatingSystemSection ovf:id="${os.id}">
      <Info>The kind of installed guest operating system</Info>
      <Description>${os.description}</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements for a virtual machine</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>${xmlEscape(name)}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>${xmlEscape(options.systemType ?? 'virtualbox-2.2')}</vssd:VirtualSystemType>
      </System>
${items.join('\n')}
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
`;
}
