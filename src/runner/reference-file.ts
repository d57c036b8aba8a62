import { readFile, stat } from 'node:fs/promises';
import { z } from 'zod';
import { HostmeError } from '../errors.js';
import { formatPublicKeyLine, parsePublicKeyLine, type PublisherKey } from '../format/node/keys.js';
import { parseImageLink, type ImageLink } from './link.js';

/** The content type of a `.hostme` reference file (docs/host.md "Reference file"). */
export const REFERENCE_MEDIA_TYPE = 'application/vnd.hostme.reference+json';
export const REFERENCE_EXTENSION = '.hostme';
const MAX_REFERENCE_BYTES = 16 * 1024;

const referenceSchema = z
  .object({
    hostme: z.literal('reference'),
    version: z.literal(1),
    /** The image's landing page (or hostme+ link). */
    link: z.string().url().max(2048),
    name: z.string().min(1).max(64),
    imageVersion: z.string().min(1).max(64),
    /** The publisher key that must have signed the manifest ("hostme-ed25519 BASE64"). */
    publisher: z.string().max(128),
    /** The signed manifest's SHA-256, as published when the reference was made (informational: a newer version may replace it). */
    manifestDigest: z.string().max(128),
  })
  .strict();

export type HostmeReference = z.infer<typeof referenceSchema>;

export function makeReference(input: { pageUrl: string; name: string; version: string; signer: PublisherKey; manifestDigest: string }): HostmeReference {
  return { hostme: 'reference', version: 1, link: input.pageUrl, name: input.name, imageVersion: input.version, publisher: formatPublicKeyLine(input.signer.publicKeyRaw).trim(), manifestDigest: input.manifestDigest };
}

/** Is this argument a reference file on disk (NAME.hostme)? */
export async function isReferenceFile(arg: string): Promise<boolean> {
  if (!arg.endsWith(REFERENCE_EXTENSION)) return false;
  return (await stat(arg).catch(() => undefined))?.isFile() === true;
}

/**
 * Reads a reference: the link to run, pinned to its publisher key (the
 * manifest must be signed by it, whatever the server says).
 */
export async function readReferenceFile(path: string): Promise<{ link: ImageLink; trusted: PublisherKey; reference: HostmeReference }> {
  const info = await stat(path);
  if (info.size > MAX_REFERENCE_BYTES) throw new HostmeError('reference-invalid', `${path}: a reference file is at most ${MAX_REFERENCE_BYTES} bytes`);
  let parsed: HostmeReference;
  try {
    parsed = referenceSchema.parse(JSON.parse(await readFile(path, 'utf8')));
  } catch (err) {
    throw new HostmeError('reference-invalid', `${path} is not a hostme reference file (${err instanceof z.ZodError ? err.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') : 'not JSON'})`);
  }
  const link = parseImageLink(parsed.link);
  if (link.name !== parsed.name) throw new HostmeError('reference-invalid', `${path}: the link names image "${link.name}", the reference "${parsed.name}"`);
  return { link, trusted: parsePublicKeyLine(parsed.publisher, path), reference: parsed };
}
