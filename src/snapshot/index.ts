export { snapshotImage, type SnapshotRequest, type SnapshotResult, type SnapshotStep } from './take-snapshot.js';
export { NodeMachine, type MachineStart } from './node-machine.js';
export { v86PackageVersion, v86File, seabiosFile } from './v86-install.js';
export { QEMU_SNAPSHOT_DEFAULT_APPEND, QEMU_SNAPSHOT_DEFAULT_COMMAND } from './qemu-snapshot.js';
