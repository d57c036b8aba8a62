import * as z from 'zod/mini';
import { FormatError } from './errors.js';
import { BASE64_PATTERN, concatBytes, fromBase64, toBase64 } from './digest.js';
import type { Codecs } from './codecs.js';

/**
 * Signed envelopes (docs/format.md "Envelope"): the one reader of Node and the
 * browser. The payload is carried as base64 of its exact bytes, so no JSON
 * canonicalization is needed; the signature covers a domain-separation prefix
 * plus those bytes. Signing and key files are Node-only (format/node/keys.ts).
 */
export const ENVELOPE_VERSION = 1;
export const MANIFEST_PAYLOAD_TYPE = 'application/vnd.hostme.manifest+json';
const SIGNING_PREFIX = 'hostme-envelope-v1\n';

/** A publisher's public key. */
export interface PublicKeyInfo {
  /** SHA-256 hex of the 32-byte raw public key. */
  keyId: string;
  publicKeyRaw: Uint8Array;
}

export const envelopeSchema = z.object({
  hostmeEnvelope: z.int(),
  payloadType: z.string(),
  payload: z.string().check(z.regex(BASE64_PATTERN, 'must be base64')),
  signatures: z.array(z.object({ keyId: z.string(), publicKey: z.string(), sig: z.string() })),
});
export type Envelope = z.infer<typeof envelopeSchema>;

export const PUBLIC_KEY_LINE = /^hostme-ed25519 ([A-Za-z0-9+/]{43}=)\s*$/;

export function formatPublicKeyLine(raw: Uint8Array): string {
  return `hostme-ed25519 ${toBase64(raw)}\n`;
}

/** The bytes a signature covers: prefix, payload type, newline, payload. */
export function signingMessage(payloadType: string, payload: Uint8Array): Uint8Array {
  return concatBytes([new TextEncoder().encode(`${SIGNING_PREFIX}${payloadType}\n`), payload]);
}

export interface OpenedEnvelope {
  payload: Uint8Array;
  signer: PublicKeyInfo;
  /** SHA-256 of the envelope file bytes: names this exact signed manifest. */
  digest: string;
}

/**
 * Parse an envelope and check its signature. With `trusted` keys given, the
 * signer must be one of them ('key-mismatch' otherwise); without, any valid
 * signature is accepted and the caller decides what to do with the signer
 * (pin it, show its fingerprint).
 */
export async function openEnvelope(
  codecs: Codecs,
  bytes: Uint8Array,
  options: { origin?: string; trusted?: PublicKeyInfo[]; payloadType?: string } = {},
): Promise<OpenedEnvelope> {
  const origin = options.origin ?? 'envelope';
  const payloadType = options.payloadType ?? MANIFEST_PAYLOAD_TYPE;
  const envelope = parseEnvelopeJson(bytes, origin);
  if (envelope.payloadType !== payloadType) {
    throw new FormatError('format-unsupported', `${origin}: payload type ${envelope.payloadType}, expected ${payloadType}`, { origin });
  }
  if (envelope.signatures.length === 0) {
    throw new FormatError('manifest-unsigned', `${origin}: the manifest is not signed; refusing it (ask the publisher to sign it with "hostme pack --key")`, { origin });
  }
  const payload = fromBase64(envelope.payload);
  if (!payload) throw new FormatError('manifest-corrupt', `${origin}: the payload is not base64`, { origin });
  const message = signingMessage(envelope.payloadType, payload);
  const failures: string[] = [];
  for (const entry of envelope.signatures) {
    const raw = fromBase64(entry.publicKey);
    const sig = fromBase64(entry.sig);
    if (!raw || raw.length !== 32 || (await codecs.sha256Hex(raw)) !== entry.keyId) {
      failures.push(`signature entry ${entry.keyId.slice(0, 16)} has a malformed key`);
      continue;
    }
    if (options.trusted && !options.trusted.some((k) => k.keyId === entry.keyId)) {
      failures.push(`signed by key ${entry.keyId.slice(0, 16)}, which is not trusted`);
      continue;
    }
    if (sig && sig.length === 64 && (await codecs.verifyEd25519(raw, message, sig))) {
      return { payload, signer: { keyId: entry.keyId, publicKeyRaw: raw }, digest: await codecs.sha256Hex(bytes) };
    }
    failures.push(`signature by key ${entry.keyId.slice(0, 16)} does not match the content (tampered)`);
  }
  const code = failures.every((f) => f.includes('not trusted')) ? 'key-mismatch' : 'signature-invalid';
  const advice = code === 'key-mismatch' ? 'the publisher key differs from the one you trust' : 'the manifest was modified after signing';
  throw new FormatError(code, `${origin}: ${failures.join('; ')}: ${advice}`, { origin });
}

function parseEnvelopeJson(bytes: Uint8Array, origin: string): Envelope {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    throw new FormatError('manifest-corrupt', `${origin}: not valid JSON, truncated or corrupt (${(err as Error).message})`, { origin });
  }
  const version = (raw as { hostmeEnvelope?: unknown } | null)?.hostmeEnvelope;
  if (typeof version === 'number' && version !== ENVELOPE_VERSION) {
    throw new FormatError('format-unsupported', `${origin}: envelope version ${version} is not supported (this hostme reads ${ENVELOPE_VERSION}); upgrade hostme`, { origin, version });
  }
  const parsed = envelopeSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new FormatError('manifest-corrupt', `${origin}: not a hostme signed envelope (${issue.path.join('.') || 'root'}: ${issue.message})`, { origin });
  }
  return parsed.data;
}
