import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildQemuArgs, type VmSpec } from './qemu.js';
import { afterResumeCommand } from './snapshot.js';

const base: VmSpec = { disks: [{ nbdSocket: '/tmp/n.sock', nbdExport: 'disk0' }], memoryMiB: 256, cpus: 1, arch: 'x86_64', console: 'none' };

test('a saving VM maps its RAM file shared; a restoring one maps it privately, waits for the state and needs no kernel', () => {
  const saving = buildQemuArgs({ ...base, kernel: '/k', diskBus: 'virtio', machine: 'q35', memoryFile: { path: '/c/ram.bin', shared: true } }, 'tcg', '/q.sock');
  assert.equal(saving[saving.indexOf('-machine') + 1], 'q35,memory-backend=hostme.ram');
  assert.ok(saving.includes('memory-backend-file,id=hostme.ram,size=256M,mem-path=/c/ram.bin,share=on'));
  assert.ok(saving.includes('virtio-blk-pci,drive=d0,id=vd0'));
  assert.ok(!saving.includes('-incoming'));

  const restoring = buildQemuArgs({ ...base, diskBus: 'virtio', machine: 'pc-q35-7.2', cpuModel: 'qemu64', memoryFile: { path: '/c/ram.bin', shared: false }, incoming: true }, 'tcg', '/q.sock');
  assert.equal(restoring[restoring.indexOf('-machine') + 1], 'pc-q35-7.2,memory-backend=hostme.ram');
  assert.ok(restoring.includes('memory-backend-file,id=hostme.ram,size=256M,mem-path=/c/ram.bin,share=off'));
  assert.equal(restoring[restoring.indexOf('-cpu') + 1], 'qemu64');
  assert.equal(restoring[restoring.indexOf('-incoming') + 1], 'defer');
  assert.ok(!restoring.includes('-kernel'));
  // The pinned CPU model wins over KVM's default -cpu host.
  const kvm = buildQemuArgs({ ...base, kernel: '/k', cpuModel: 'qemu64' }, 'kvm', '/q.sock');
  assert.equal(kvm.filter((a) => a === '-cpu').length, 1);
  assert.equal(kvm[kvm.indexOf('-cpu') + 1], 'qemu64');
  // QEMU's option syntax would split a path at a comma.
  assert.throws(() => buildQemuArgs({ ...base, kernel: '/k', memoryFile: { path: '/a,b/ram', shared: true } }, 'tcg', '/q.sock'), /comma/);
});

test('a snapshot machine has its NIC ports and vmgenid before the disks, so saved and resumed machines get the same PCI addresses', () => {
  const guid = '6f737468-6d65-4000-8000-000000000001';
  const args = buildQemuArgs({ ...base, kernel: '/k', diskBus: 'virtio', hotplugPorts: 2, vmgenid: guid }, 'tcg', '/q.sock');
  const devices = args.flatMap((a, i) => (args[i - 1] === '-device' ? [a] : []));
  assert.deepEqual(devices, ['pcie-root-port,id=hostme.rp0,chassis=1', 'pcie-root-port,id=hostme.rp1,chassis=2', `vmgenid,id=hostme.genid,guid=${guid}`, 'virtio-blk-pci,drive=d0,id=vd0']);
  assert.throws(() => buildQemuArgs({ ...base, kernel: '/k', vmgenid: 'x,y' }, 'tcg', '/q.sock'), /UUID/);
});

test('the after-resume command gets the host time and the NIC count', () => {
  assert.equal(afterResumeCommand('date -s @{epoch}; wait {nics}; again {epoch}', 2, 1_800_000_000_999), 'date -s @1800000000; wait 2; again 1800000000');
});
