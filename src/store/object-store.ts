import type { ObjectId } from '../format/digest.js';

/** What a reader needs to fetch and verify one object. */
export interface ObjectRef {
  id: ObjectId;
  /** Uncompressed length, known from the index; decides raw vs zstd (docs/format.md). */
  length: number;
}

/** An object whose bytes were checked against its id where they entered. */
export interface VerifiedObject {
  id: ObjectId;
  /** Uncompressed content. */
  data: Uint8Array;
  /** As stored and transferred (zstd frame or raw); what caches keep. */
  stored: Uint8Array;
  /** Which source produced it, for stats and error messages. */
  source: string;
  /**
   * Time spent moving the bytes (request to last byte), without decoding and
   * hashing: what mirror ranking compares, since our own CPU time says nothing
   * about a mirror.
   */
  transferMs?: number;
}

export type FetchPriority = 'demand' | 'prefetch' | 'background';

export interface GetOptions {
  signal?: AbortSignal;
  priority?: FetchPriority;
  /**
   * Peers only: the peer may hold the request up to this long (ms) while its
   * own fetch of the object is in flight, instead of answering "missing" at
   * once (docs/peers.md "Flash crowd"). Other sources ignore it.
   */
  waitMs?: number;
}

/** Read side of every store: directory, HTTP, mirror group, cache. */
export interface ObjectSource {
  /** Human-readable location, used in messages ("dir:/srv/repo", "https://…"). */
  readonly name: string;
  /** Verified content; throws StoreError 'object-missing' / FormatError 'object-invalid' / StoreError 'store-unavailable'. */
  get(ref: ObjectRef, options?: GetOptions): Promise<VerifiedObject>;
  has(id: ObjectId): Promise<boolean>;
  /**
   * Whether a local layer of this chain (a cache) holds the object, so that
   * reading it costs no network. Sources without a local layer leave it out.
   */
  holdsLocally?(id: ObjectId): Promise<boolean>;
  close(): Promise<void>;
}

export interface StoredObjectInfo {
  id: ObjectId;
  storedBytes: number;
  /** Last use, ms since epoch (access time where the medium keeps one). */
  lastUsed: number;
}

/** A store that can also keep objects (a local directory, a cache, a push target). */
export interface ObjectStore extends ObjectSource {
  /** Store bytes already verified by the caller. Atomic: readers never see a partial object. */
  put(id: ObjectId, stored: Uint8Array): Promise<void>;
  remove?(id: ObjectId): Promise<void>;
  list?(): AsyncIterable<StoredObjectInfo>;
}
