import type { Manifest } from '../../format/manifest.js';
import type { BootKit } from '../boot-kit.js';
import type { SiteReference } from '../iso.js';

/** One file an export produces, ready to hand to a destination. */
export interface ExportedFile {
  /** Name at the destination (no directories). */
  name: string;
  /** Local path of the finished file (inside the work directory). */
  path: string;
}

export interface FormatOptions {
  /** Base name for outputs, e.g. "hello-1". */
  baseName: string;
  /** qcow2 only: compress clusters. */
  compress?: boolean;
  /** vagrant only. */
  provider?: 'libvirt' | 'virtualbox';
  /** iso only (set by exportImage for direct-boot images): kernel kit with modules, a static busybox, the website reference. */
  iso?: { boot: BootKit; busybox: Buffer; site: SiteReference; digest: string };
  /** Progress lines ("converting to qcow2"). */
  onStep?: (step: string) => void;
}

/**
 * A disk export format. Adding one = one file in src/export/formats/ plus a
 * line in formats/index.ts. `write` gets the materialized sparse raw disk
 * (it may modify or move it: it is a private temporary) and returns the files
 * to upload, all inside workDir.
 */
export interface ExportFormat {
  name: string;
  /** File extension of the main output, without the dot. */
  extension: string;
  description: string;
  write(rawPath: string, image: Manifest, workDir: string, options: FormatOptions): Promise<ExportedFile[]>;
}
