/** A file handed to a destination. */
export interface UploadItem {
  name: string;
  path: string;
  size: number;
}

export type UploadProgress = (doneBytes: number, totalBytes: number) => void;

/**
 * Where exported files go. `put` is all-or-nothing for one file (a failed put
 * leaves nothing behind: temp file removed, multipart upload aborted); the
 * export removes the files it already put when a later one fails.
 */
export interface Destination {
  readonly kind: string;
  /** For messages, e.g. "s3://bucket/prefix". */
  readonly location: string;
  /** Local destinations: create the work directory here so finished files can be renamed into place. */
  readonly workDirParent?: string;
  /** Fails early (before the slow conversion) if the destination cannot work at all. */
  prepare?(): Promise<void>;
  /** Stores one file; returns its URL (or path). */
  put(item: UploadItem, onProgress?: UploadProgress): Promise<string>;
  /** Removes a file this export put (rollback); best effort. */
  remove(name: string): Promise<void>;
  close?(): void;
}

export interface DestinationKind {
  name: string;
  /** Example DEST, for help and errors. */
  example: string;
  matches(dest: string): boolean;
  open(dest: string, env: NodeJS.ProcessEnv): Destination;
}
