import * as z from 'zod/mini';
import { FormatError } from './errors.js';
import { ID_PATTERN } from './digest.js';
import { MAX_CHUNK_SIZE, MIN_CHUNK_SIZE } from './chunk-index.js';

/**
 * The image manifest (docs/format.md "Manifest"). It is the signed payload of
 * an envelope; everything it references is content-addressed, so the signature
 * over these bytes covers the whole image.
 */
export const MANIFEST_FORMAT_VERSION = 1;

const objectId = z.string().check(z.regex(ID_PATTERN, 'must be 64 lowercase hex digits (a SHA-256)'));
const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.int().check(z.minimum(min), z.maximum(max));
const chunkSize = int(MIN_CHUNK_SIZE, MAX_CHUNK_SIZE).check(z.refine((n) => (n & (n - 1)) === 0, 'must be a power of two'));

/** Any chunked content: a disk, a kernel, an initrd, a memory snapshot. */
export const blobRefSchema = z.object({
  size: int(0),
  chunkSize,
  /** Object id of the chunk index. */
  index: objectId,
});

export const diskSchema = z.extend(blobRefSchema, {
  name: z.string().check(z.regex(/^[a-z0-9][a-z0-9_-]{0,31}$/)),
  /** Bytes stored for this disk's objects when it was packed (informational). */
  storedBytes: z.optional(int(0)),
});

export const imageNamePattern = /^[a-z0-9][a-z0-9._-]{0,63}$/;
/** Overlay network names are DNS labels (INSTANCE.NETWORK.hostme); same rule as src/net/registry.ts. */
export const networkNamePattern = /^[a-z0-9][a-z0-9-]{0,31}$/;
export const versionPattern = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/;

const text = (max: number) => z.string().check(z.maxLength(max));

// zod/mini: the same checks as zod's classic API at a twentieth of the size in
// the run page's bundle (measured: 29 KB against 454 KB minified).
export const manifestSchema = z.object({
  formatVersion: z.literal(MANIFEST_FORMAT_VERSION),
  kind: z.literal('hostme-image'),
  name: z.string().check(z.regex(imageNamePattern, 'lowercase letters, digits, ".", "_" or "-", at most 64')),
  version: z.string().check(z.regex(versionPattern, 'letters, digits, ".", "_", "+" or "-", at most 64')),
  created: z.iso.datetime({ offset: true }),
  description: z.optional(text(4096)),
  hardware: z.object({
    arch: z.enum(['x86_64', 'i686']),
    memoryMiB: int(16, 1 << 20),
    cpus: int(1, 256),
    /** The image asks for a screen (a VGA adapter; granted or not by the user, docs/grants.md). */
    screen: z.optional(z.boolean()),
  }),
  boot: z.discriminatedUnion('mode', [
    z.object({
      mode: z.literal('direct'),
      kernel: blobRefSchema,
      initrd: z.optional(blobRefSchema),
      cmdline: text(4096),
    }),
    z.object({ mode: z.literal('firmware') }),
  ]),
  disks: z.array(diskSchema).check(z.minLength(1), z.maxLength(16)),
  /** Saved emulator state (hostme snapshot): only the exact emulator and machine sizes that wrote it may load it. */
  memorySnapshot: z.optional(
    z.extend(blobRefSchema, {
      emulator: z.string().check(z.minLength(1), z.maxLength(128)),
      memoryBytes: z.optional(int(1)),
      vgaMemoryBytes: z.optional(int(0)),
    }),
  ),
  /**
   * A QEMU machine saved at its ready point (hostme snapshot, x86_64): RAM as a
   * blob (zero chunks are holes), the migration stream of device state as a
   * blob, and everything a restoring QEMU must match (docs/format.md).
   */
  qemuSnapshot: z.optional(
    z.object({
      ram: blobRefSchema,
      deviceState: blobRefSchema,
      /** QEMU version that wrote the state ("7.2.22"): restore only with exactly this version. */
      qemu: z.string().check(z.regex(/^\d+\.\d+\.\d+$/)),
      /** Resolved machine type ("pc-q35-7.2"). */
      machine: z.string().check(z.regex(/^[a-z0-9][a-z0-9.-]{0,63}$/)),
      cpu: z.string().check(z.regex(/^[a-z0-9][a-z0-9.,=+-]{0,63}$/)),
      accel: z.enum(['tcg', 'kvm']),
      /** How disks attach ("virtio": virtio-blk-pci, one per manifest disk, in order). */
      diskBus: z.literal('virtio'),
      /** Text appended to boot.cmdline for the boot that was saved (e.g. "root=/dev/vda"). */
      cmdlineAppend: text(4096),
      /** The console pattern (regular expression source) the guest had printed when it was saved. */
      readyMark: text(1024),
      /**
       * Empty PCIe root ports (ids hostme.rp0…) the saved machine has: NICs are hot-plugged there
       * after a resume, so each instance gets its own MAC (a migrated NIC keeps the saved one).
       * Absent: 0, the snapshot resumes only runs without a NIC.
       */
      hotplugPorts: z.optional(int(0, 4)),
      /** The saved machine has a vmgenid device; a resume gives it a new generation id. */
      vmgenid: z.optional(z.boolean()),
      /**
       * Typed into the console right after a resume (then a newline), with {epoch} replaced by the
       * host's time in whole seconds and {nics} by the number of hot-plugged NICs: sets the clock,
       * waits for the NICs and renews DHCP. Absent: nothing is typed.
       */
      afterResume: z.optional(text(4096)),
      /**
       * RAM chunk numbers in the order a resume first touched them (recorded by `hostme snapshot`):
       * fetched before QEMU resumes, then the rest in the background (docs/lazyfs.md).
       */
      ramWorkingSet: z.optional(z.array(int(0)).check(z.maxLength(1 << 20))),
    }),
  ),
  /** Boot working set, in the order the guest read it: [diskIndex, chunkNumber]. */
  prefetch: z.optional(z.array(z.tuple([int(0), int(0)])).check(z.maxLength(1 << 20))),
  mirrors: z._default(z.array(z.url()), []),
  /** The overlay network the image joins by default (hostme run --net overrides; docs/net.md). */
  network: z.optional(z.object({ join: z.string().check(z.regex(networkNamePattern, 'a network name: lowercase letters, digits and "-", at most 32')) })),
  /** Who may host the image as a site through a hub (docs/host.md "Hosting policy"); absent = the hub's own policy. */
  hosting: z.optional(z.enum(['open', 'invite'])),
  /** The version this one was derived from (commit, profile, snapshot). */
  parent: z.optional(z.object({ version: z.string(), digest: objectId })),
});

export type Manifest = z.infer<typeof manifestSchema>;
export type BlobRef = z.infer<typeof blobRefSchema>;
export type DiskRef = z.infer<typeof diskSchema>;

/** Parse manifest JSON bytes, refusing unknown versions before anything else. */
export function parseManifest(bytes: Uint8Array, origin = 'manifest'): Manifest {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new FormatError('manifest-corrupt', `${origin}: not valid JSON (${(err as Error).message})`, { origin });
  }
  const version = (raw as { formatVersion?: unknown } | null)?.formatVersion;
  if (typeof version === 'number' && version !== MANIFEST_FORMAT_VERSION) {
    throw new FormatError(
      'format-unsupported',
      `${origin}: manifest format version ${version} is not supported (this hostme reads version ${MANIFEST_FORMAT_VERSION}); upgrade hostme`,
      { origin, version },
    );
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const path = issue.path.join('.') || '(root)';
    throw new FormatError('manifest-corrupt', `${origin}: invalid manifest at ${path}: ${issue.message}`, { origin, path });
  }
  checkConsistency(parsed.data, origin);
  return parsed.data;
}

function checkConsistency(manifest: Manifest, origin: string): void {
  const snapshot = manifest.qemuSnapshot;
  if (snapshot && snapshot.ram.size !== manifest.hardware.memoryMiB * 1024 * 1024) {
    throw new FormatError('manifest-corrupt', `${origin}: qemuSnapshot.ram holds ${snapshot.ram.size} bytes, the machine has ${manifest.hardware.memoryMiB} MiB`, { origin });
  }
  const ramChunks = snapshot ? Math.ceil(snapshot.ram.size / snapshot.ram.chunkSize) : 0;
  for (const chunk of snapshot?.ramWorkingSet ?? []) {
    if (chunk >= ramChunks) throw new FormatError('manifest-corrupt', `${origin}: qemuSnapshot.ramWorkingSet entry ${chunk} points past the RAM's ${ramChunks} chunks`, { origin });
  }
  for (const [disk, chunk] of manifest.prefetch ?? []) {
    const ref = manifest.disks[disk];
    if (!ref || chunk * ref.chunkSize >= ref.size) {
      throw new FormatError('manifest-corrupt', `${origin}: prefetch entry [${disk}, ${chunk}] points past the disks`, { origin });
    }
  }
}

export function serializeManifest(manifest: Manifest): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(manifestSchema.parse(manifest), null, 2) + '\n');
}

/** All blobs (disks, kernel, initrd, snapshot) a manifest references, labelled. */
export function manifestBlobs(manifest: Manifest): Array<{ label: string; ref: BlobRef }> {
  const blobs: Array<{ label: string; ref: BlobRef }> = manifest.disks.map((d) => ({ label: `disk ${d.name}`, ref: d }));
  if (manifest.boot.mode === 'direct') {
    blobs.push({ label: 'kernel', ref: manifest.boot.kernel });
    if (manifest.boot.initrd) blobs.push({ label: 'initrd', ref: manifest.boot.initrd });
  }
  if (manifest.memorySnapshot) blobs.push({ label: 'memory snapshot', ref: manifest.memorySnapshot });
  if (manifest.qemuSnapshot) {
    blobs.push({ label: 'snapshot RAM', ref: manifest.qemuSnapshot.ram });
    blobs.push({ label: 'snapshot device state', ref: manifest.qemuSnapshot.deviceState });
  }
  return blobs;
}
