import { decodeObject } from '../format/object-codec.js';
import { objectPath, type ObjectId } from '../format/digest.js';
import { MAX_CHUNK_SIZE } from '../format/chunk-index.js';
import type { Codecs } from '../format/codecs.js';
import type { GetOptions, ObjectRef, ObjectStore, VerifiedObject } from './object-store.js';
import type { RepoTransport } from './transport.js';
import { StoreError, missing } from './errors.js';

// Index objects can exceed a chunk: 32 bytes per chunk of a multi-TiB disk.
export const MAX_STORED_OBJECT = Math.max(MAX_CHUNK_SIZE + 4096, 64 * 1024 * 1024);

/**
 * The objects/ folder of a repository (or cache) reached through a transport:
 * a directory or a static HTTP server. Every object read is verified here,
 * where it enters.
 */
export class TransportStore implements ObjectStore {
  readonly name: string;

  constructor(
    readonly transport: RepoTransport,
    readonly codecs: Codecs,
  ) {
    this.name = transport.location;
  }

  async get(ref: ObjectRef, options: GetOptions = {}): Promise<VerifiedObject> {
    const started = performance.now();
    const lowPriority = options.priority !== undefined && options.priority !== 'demand';
    const stored = await this.transport.read(objectPath(ref.id), { signal: options.signal, maxBytes: MAX_STORED_OBJECT, lowPriority });
    const transferMs = performance.now() - started;
    if (!stored) throw missing(this.name, `object ${ref.id}`);
    const data = await decodeObject(this.codecs, ref.id, ref.length, stored, this.name);
    return { id: ref.id, data, stored, source: this.name, transferMs };
  }

  async has(id: ObjectId): Promise<boolean> {
    if (this.transport.exists) return this.transport.exists(objectPath(id));
    return (await this.transport.read(objectPath(id))) !== null;
  }

  async put(id: ObjectId, stored: Uint8Array): Promise<void> {
    if (!this.transport.write) throw new StoreError('store-readonly', `${this.name} is read-only`);
    // No fsync per object: objects are verified on every read, and publishers
    // sync() once before writing the manifest that refers to them.
    await this.transport.write(objectPath(id), stored, { durable: false });
  }

  async close(): Promise<void> {
    await this.transport.close?.();
  }
}

