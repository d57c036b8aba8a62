/**
 * Repository layout (docs/format.md "Repository"). Plain files, so any static
 * web server, bucket or CDN can serve a repository as it is.
 */
export const REPO_MARKER = 'hostme-repo.json';
export const LISTING = 'index.json';
export const REPO_FORMAT_VERSION = 1;

export function manifestPath(name: string, version: string): string {
  return `manifests/${name}/${version}.json`;
}

export function keyPath(keyId: string): string {
  return `keys/${keyId}.pub`;
}

export interface RepoListing {
  format: 'hostme-repo';
  formatVersion: number;
  images: Record<string, ImageListing>;
}

export interface ImageListing {
  latest: string;
  versions: Array<{ version: string; created: string; digest: string; description?: string }>;
}

export function emptyListing(): RepoListing {
  return { format: 'hostme-repo', formatVersion: REPO_FORMAT_VERSION, images: {} };
}
