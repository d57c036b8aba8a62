import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import { FormatError } from './errors.js';
import { sha256Hex } from './digest.js';

/**
 * Signed envelopes (docs/format.md "Envelope"). The payload is carried as
 * base64 of its exact bytes, so no JSON canonicalization is needed; the
 * signature covers a domain-separation prefix plus those bytes.
 */
export const ENVELOPE_VERSION = 1;
export const MANIFEST_PAYLOAD_TYPE = 'application/vnd.hostme.manifest+json';
const SIGNING_PREFIX = 'hostme-envelope-v1\n';

export interface PublisherKey {
  /** SHA-256 hex of the 32-byte raw public key. */
  keyId: string;
  publicKeyRaw: Uint8Array;
  privateKey?: KeyObject;
}

const envelopeSchema = z.object({
  hostmeEnvelope: z.number().int(),
  payloadType: z.string(),
  payload: z.string().regex(/^[A-Za-z0-9+/]*={0,2}$/, 'must be base64'),
  signatures: z.array(z.object({ keyId: z.string(), publicKey: z.string(), sig: z.string() })),
});
export type Envelope = z.infer<typeof envelopeSchema>;

// SPKI DER prefix for an Ed25519 public key (RFC 8410): the raw key follows.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export function publicKeyFromRaw(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new FormatError('key-invalid', `an Ed25519 public key is 32 bytes, got ${raw.length}`);
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

export function rawPublicKey(key: KeyObject): Uint8Array {
  const der = key.export({ format: 'der', type: 'spki' });
  return new Uint8Array(der.subarray(der.length - 32));
}

export function keyIdOf(raw: Uint8Array): string {
  return sha256Hex(raw);
}

export function generatePublisherKey(): { privatePem: string; publicLine: string; keyId: string } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const raw = rawPublicKey(publicKey);
  return {
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    publicLine: formatPublicKeyLine(raw),
    keyId: keyIdOf(raw),
  };
}

export function formatPublicKeyLine(raw: Uint8Array): string {
  return `hostme-ed25519 ${Buffer.from(raw).toString('base64')}\n`;
}

export function parsePublicKeyLine(text: string, origin = 'public key'): PublisherKey {
  const match = /^hostme-ed25519 ([A-Za-z0-9+/]{43}=)\s*$/.exec(text.trim());
  if (!match) throw new FormatError('key-invalid', `${origin}: expected "hostme-ed25519 <base64>"`, { origin });
  const raw = new Uint8Array(Buffer.from(match[1]!, 'base64'));
  return { keyId: keyIdOf(raw), publicKeyRaw: raw };
}

export function parsePrivateKeyPem(pem: string, origin = 'private key'): PublisherKey {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(pem);
  } catch (err) {
    throw new FormatError('key-invalid', `${origin}: not a PEM private key (${(err as Error).message})`, { origin });
  }
  if (privateKey.asymmetricKeyType !== 'ed25519') {
    throw new FormatError('key-invalid', `${origin}: key type ${privateKey.asymmetricKeyType}, expected ed25519`, { origin });
  }
  const raw = rawPublicKey(createPublicKey(privateKey));
  return { keyId: keyIdOf(raw), publicKeyRaw: raw, privateKey };
}

function signingMessage(payloadType: string, payload: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(`${SIGNING_PREFIX}${payloadType}\n`), payload]);
}

export function signEnvelope(payload: Uint8Array, key: PublisherKey, payloadType = MANIFEST_PAYLOAD_TYPE): Uint8Array {
  if (!key.privateKey) throw new FormatError('key-invalid', 'signing needs a private key');
  const sig = sign(null, signingMessage(payloadType, payload), key.privateKey);
  const envelope: Envelope = {
    hostmeEnvelope: ENVELOPE_VERSION,
    payloadType,
    payload: Buffer.from(payload).toString('base64'),
    signatures: [{ keyId: key.keyId, publicKey: Buffer.from(key.publicKeyRaw).toString('base64'), sig: sig.toString('base64') }],
  };
  return new TextEncoder().encode(JSON.stringify(envelope, null, 2) + '\n');
}

export interface OpenedEnvelope {
  payload: Uint8Array;
  signer: PublisherKey;
  /** SHA-256 of the envelope file bytes: names this exact signed manifest. */
  digest: string;
}

/**
 * Parse an envelope and check its signature. With `trusted` keys given, the
 * signer must be one of them ('key-mismatch' otherwise); without, any valid
 * signature is accepted and the caller decides what to do with the signer
 * (pin it, show its fingerprint).
 */
export function openEnvelope(
  bytes: Uint8Array,
  options: { origin?: string; trusted?: PublisherKey[]; payloadType?: string } = {},
): OpenedEnvelope {
  const origin = options.origin ?? 'envelope';
  const payloadType = options.payloadType ?? MANIFEST_PAYLOAD_TYPE;
  const envelope = parseEnvelopeJson(bytes, origin);
  if (envelope.payloadType !== payloadType) {
    throw new FormatError('format-unsupported', `${origin}: payload type ${envelope.payloadType}, expected ${payloadType}`, { origin });
  }
  if (envelope.signatures.length === 0) {
    throw new FormatError('manifest-unsigned', `${origin}: the manifest is not signed; refusing it (ask the publisher to sign it with "hostme pack --key")`, { origin });
  }
  const payload = new Uint8Array(Buffer.from(envelope.payload, 'base64'));
  const message = signingMessage(envelope.payloadType, payload);
  const failures: string[] = [];
  for (const entry of envelope.signatures) {
    const raw = new Uint8Array(Buffer.from(entry.publicKey, 'base64'));
    if (raw.length !== 32 || keyIdOf(raw) !== entry.keyId) {
      failures.push(`signature entry ${entry.keyId.slice(0, 16)} has a malformed key`);
      continue;
    }
    if (options.trusted && !options.trusted.some((k) => k.keyId === entry.keyId)) {
      failures.push(`signed by key ${entry.keyId.slice(0, 16)}, which is not trusted`);
      continue;
    }
    const ok = verify(null, message, publicKeyFromRaw(raw), Buffer.from(entry.sig, 'base64'));
    if (ok) return { payload, signer: { keyId: entry.keyId, publicKeyRaw: raw }, digest: sha256Hex(bytes) };
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
