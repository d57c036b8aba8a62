import { StoreError } from './errors.js';

/**
 * Byte-level access to a repository's files (manifests, index.json, keys,
 * objects). A repository is plain files, so a directory and a static HTTP
 * server are interchangeable behind this interface.
 */
export interface RepoTransport {
  /** "dir:/path" or the base URL. */
  readonly location: string;
  /** File bytes, or null when the file does not exist. */
  read(path: string, options?: ReadOptions): Promise<Uint8Array | null>;
  /**
   * Atomic replace: readers see the old or the new file, never a partial one.
   * `durable: false` skips the per-file fsync (content-addressed objects are
   * verified on every read); call `sync()` before writing what refers to them.
   */
  write?(path: string, data: Uint8Array, options?: WriteOptions): Promise<void>;
  /** Make every earlier write durable (one syncfs instead of an fsync per object). */
  sync?(): Promise<void>;
  exists?(path: string): Promise<boolean>;
  close?(): Promise<void>;
}

export interface WriteOptions {
  durable?: boolean;
}

export interface ReadOptions {
  signal?: AbortSignal;
  /** Refuse bodies larger than this (a lying server must not exhaust memory). */
  maxBytes?: number;
  /** A hint that nobody waits for these bytes (prefetch): a browser sends them after waiting requests. */
  lowPriority?: boolean;
  /** Ask HTTP caches to revalidate (mutable files: listings, manifests). */
  revalidate?: boolean;
}

/** Repository-relative paths only: no absolute paths, no "..", no empty segments. */
export function assertRepoPath(path: string): void {
  if (path.startsWith('/') || path.split('/').some((seg) => seg === '' || seg === '.' || seg === '..') || path.includes('\\') || path.includes('\0')) {
    throw new StoreError('store-path-invalid', `invalid repository path ${JSON.stringify(path)}`, { path });
  }
}
