import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { FormatError } from '../format/errors.js';
import type { ChunkIndex } from '../format/chunk-index.js';
import { parseManifest, serializeManifest, type BlobRef, type Manifest } from '../format/manifest.js';
import { formatPublicKeyLine, signEnvelope, type PublisherKey } from '../format/node/keys.js';
import { openEnvelope } from '../format/envelope.js';
import { DirTransport } from '../store/node/dir-transport.js';
import { S3Transport } from './s3-transport.js';
import { HttpTransport, type HttpTransportOptions } from '../store/http-transport.js';
import type { RepoTransport } from '../store/transport.js';
import type { ObjectSource } from '../store/object-store.js';
import { readChunkIndex } from '../device/image-disks.js';
import { TransportStore } from '../store/transport-store.js';
import { StoreError } from '../store/errors.js';
import { HostmeError } from '../errors.js';
import { LISTING, REPO_FORMAT_VERSION, REPO_MARKER, emptyListing, keyPath, manifestPath, type RepoListing } from './layout.js';
import { nodeCodecs } from '../format/node/codecs.js';

const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface LoadedImage {
  manifest: Manifest;
  signer: PublisherKey;
  /** SHA-256 of the signed envelope file. */
  digest: string;
  /** The envelope bytes as read, for re-publishing unchanged. */
  envelope: Uint8Array;
  origin: string;
}

export interface TrustOptions {
  /** When given, manifests must be signed by one of these keys. */
  trusted?: PublisherKey[];
}

/** A repository reached through a transport: listings, signed manifests, indexes, objects. */
export class Repository {
  readonly objects: TransportStore;

  constructor(readonly transport: RepoTransport) {
    this.objects = new TransportStore(transport, nodeCodecs);
  }

  get location(): string {
    return this.transport.location;
  }

  get isLocal(): boolean {
    return this.transport instanceof DirTransport;
  }

  async listing(): Promise<RepoListing> {
    if (this.transport instanceof DirTransport) return scanDirListing(this);
    const bytes = await this.transport.read(LISTING, { maxBytes: MAX_MANIFEST_BYTES });
    if (!bytes) {
      throw new StoreError('object-missing', `${this.location}: no ${LISTING} (is this a hostme repository? check the URL)`, { location: this.location });
    }
    return parseListing(bytes, `${this.location}/${LISTING}`);
  }

  async resolveVersion(name: string, version?: string): Promise<string> {
    if (version) return version;
    const listing = await this.listing();
    const image = listing.images[name];
    if (!image) {
      const known = Object.keys(listing.images).join(', ') || 'none';
      throw new HostmeError('image-not-found', `${this.location}: no image named "${name}" (images here: ${known})`, { name });
    }
    return image.latest;
  }

  async loadImage(name: string, version: string | undefined, trust: TrustOptions = {}): Promise<LoadedImage> {
    const resolved = await this.resolveVersion(name, version);
    const path = manifestPath(name, resolved);
    const origin = `${this.location}/${path}`;
    const envelope = await this.transport.read(path, { maxBytes: MAX_MANIFEST_BYTES });
    if (!envelope) throw new HostmeError('image-not-found', `${this.location}: no version "${resolved}" of image "${name}"`, { name, version: resolved });
    const opened = await openEnvelope(nodeCodecs, envelope, { origin, trusted: trust.trusted });
    const manifest = parseManifest(opened.payload, origin);
    if (manifest.name !== name || manifest.version !== resolved) {
      throw new FormatError('manifest-corrupt', `${origin}: manifest says ${manifest.name}@${manifest.version}, but is stored as ${name}@${resolved}`, { origin });
    }
    return { manifest, signer: opened.signer, digest: opened.digest, envelope, origin };
  }

  /** Fetch and check the chunk index of a blob against the manifest's claims. */
  async readIndex(ref: BlobRef, source: ObjectSource = this.objects, label = 'blob'): Promise<ChunkIndex> {
    return readChunkIndex(source, ref, label);
  }

  /** Write a signed manifest (after all its objects) and update the listing: the image becomes visible atomically. */
  async publish(manifest: Manifest, key: PublisherKey): Promise<LoadedImage> {
    const write = this.requireWritable();
    const payload = serializeManifest(manifest);
    const republished = await this.checkPublishable(manifest, payload, key);
    if (republished) return republished;
    // Every object the manifest refers to must be on disk before the manifest is.
    await this.transport.sync?.();
    const envelope = signEnvelope(payload, key);
    await write(REPO_MARKER, new TextEncoder().encode(JSON.stringify({ format: 'hostme-repo', formatVersion: REPO_FORMAT_VERSION }) + '\n'));
    await write(keyPath(key.keyId), new TextEncoder().encode(formatPublicKeyLine(key.publicKeyRaw)));
    await write(manifestPath(manifest.name, manifest.version), envelope);
    const published = await this.loadImage(manifest.name, manifest.version, { trusted: [key] });
    await this.updateListing(published);
    return published;
  }

  /**
   * Published versions are immutable and signed by the repository's own
   * publisher keys (docs/format.md): a second publish of NAME@VERSION is
   * refused unless it is the same image again (same content and signer, only
   * the timestamp differs: a reproducible rebuild), which returns the version
   * already there; a key that is not among the repository's keys/ is refused
   * until the operator adds it.
   */
  private async checkPublishable(manifest: Manifest, payload: Uint8Array, key: PublisherKey): Promise<LoadedImage | undefined> {
    const path = manifestPath(manifest.name, manifest.version);
    const existing = await this.transport.read(path, { maxBytes: MAX_MANIFEST_BYTES });
    if (existing) {
      const current = await this.loadImage(manifest.name, manifest.version).catch(() => undefined);
      const same = current && current.signer.keyId === key.keyId && Buffer.from(serializeManifest({ ...current.manifest, created: manifest.created })).equals(Buffer.from(payload));
      if (same) return current;
      throw new HostmeError(
        'version-exists',
        `${manifest.name}@${manifest.version} is already published${current ? ` (digest ${current.digest.slice(0, 16)}…)` : ''} with other content or another key; published versions are never rewritten: publish a new version`,
        { name: manifest.name, version: manifest.version },
      );
    }
    const keys = await this.publisherKeyIds();
    if (keys && keys.length > 0 && !keys.includes(key.keyId)) {
      throw new HostmeError(
        'publisher-key-not-pinned',
        `${this.location} is published with key(s) ${keys.map((k) => k.slice(0, 16)).join(', ')}, not with ${key.keyId.slice(0, 16)}; to add a publisher, the repository's operator copies its keys/${key.keyId}.pub into the repository first`,
        { keyId: key.keyId, keys },
      );
    }
    return undefined;
  }

  /** Key ids under keys/ (local repositories; undefined where a transport cannot list). */
  async publisherKeyIds(): Promise<string[] | undefined> {
    if (!(this.transport instanceof DirTransport)) return undefined;
    const files = await readdir(join(this.transport.root, 'keys')).catch(() => [] as string[]);
    return files.filter((f) => /^[0-9a-f]{64}\.pub$/.test(f)).map((f) => f.slice(0, -4));
  }

  /** Rebuild index.json from the manifests present (dir) or merge the newest (remote). */
  async updateListing(added?: LoadedImage): Promise<RepoListing> {
    const write = this.requireWritable();
    let listing: RepoListing;
    if (this.transport instanceof DirTransport) {
      listing = await scanDirListing(this);
    } else {
      listing = await this.listing().catch(() => emptyListing());
      if (added) addToListing(listing, added);
    }
    await write(LISTING, new TextEncoder().encode(JSON.stringify(listing, null, 2) + '\n'));
    return listing;
  }

  private requireWritable(): (path: string, data: Uint8Array) => Promise<void> {
    const write = this.transport.write?.bind(this.transport);
    if (!write) throw new StoreError('store-readonly', `${this.location} is read-only`);
    return write;
  }
}

export function openRepository(location: string, http: HttpTransportOptions = {}): Repository {
  if (/^https?:\/\//i.test(location)) return new Repository(new HttpTransport(location, http));
  if (/^s3:\/\//i.test(location)) return new Repository(new S3Transport(location));
  return new Repository(new DirTransport(location));
}

function parseListing(bytes: Uint8Array, origin: string): RepoListing {
  let raw: RepoListing;
  try {
    raw = JSON.parse(new TextDecoder().decode(bytes)) as RepoListing;
  } catch (err) {
    throw new FormatError('manifest-corrupt', `${origin}: not valid JSON (${(err as Error).message})`);
  }
  if (raw?.format !== 'hostme-repo' || typeof raw.images !== 'object') throw new FormatError('manifest-corrupt', `${origin}: not a hostme repository listing`);
  if (raw.formatVersion !== REPO_FORMAT_VERSION) {
    throw new FormatError('format-unsupported', `${origin}: repository format version ${raw.formatVersion} is not supported (this hostme reads ${REPO_FORMAT_VERSION}); upgrade hostme`);
  }
  return raw;
}

function addToListing(listing: RepoListing, image: LoadedImage): void {
  const { name, version, created, description } = image.manifest;
  const entry = (listing.images[name] ??= { latest: version, versions: [] });
  entry.versions = entry.versions.filter((v) => v.version !== version);
  entry.versions.push({ version, created, digest: image.digest, ...(description ? { description } : {}) });
  entry.versions.sort((a, b) => a.created.localeCompare(b.created) || a.version.localeCompare(b.version));
  entry.latest = entry.versions[entry.versions.length - 1]!.version;
}

/**
 * For a local directory the manifests themselves are the truth: scan them
 * (signatures checked, unreadable ones skipped) so a crash between writing a
 * manifest and the listing cannot leave them disagreeing.
 */
async function scanDirListing(repo: Repository): Promise<RepoListing> {
  const root = (repo.transport as DirTransport).root;
  const listing = emptyListing();
  const names = await readdir(join(root, 'manifests')).catch(() => [] as string[]);
  for (const name of names.sort()) {
    const files = await readdir(join(root, 'manifests', name)).catch(() => [] as string[]);
    for (const file of files.filter((f) => f.endsWith('.json') && !f.includes('.tmp-'))) {
      try {
        addToListing(listing, await repo.loadImage(name, file.slice(0, -'.json'.length)));
      } catch {
        // A corrupt manifest is reported by verify/inspect, not hidden from the listing silently:
        // it is simply not offered as an image.
      }
    }
  }
  return listing;
}
