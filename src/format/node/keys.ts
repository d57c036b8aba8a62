import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { FormatError } from '../errors.js';
import { fromBase64, toBase64 } from '../digest.js';
import { ENVELOPE_VERSION, MANIFEST_PAYLOAD_TYPE, PUBLIC_KEY_LINE, formatPublicKeyLine, signingMessage, type Envelope, type PublicKeyInfo } from '../envelope.js';
import { sha256Hex } from './codecs.js';

/** Node adapter: publisher key files and signing (node:crypto). Reading envelopes is format/envelope.ts. */
export { formatPublicKeyLine, MANIFEST_PAYLOAD_TYPE };

export interface PublisherKey extends PublicKeyInfo {
  privateKey?: KeyObject;
}

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

export function parsePublicKeyLine(text: string, origin = 'public key'): PublisherKey {
  const match = PUBLIC_KEY_LINE.exec(text.trim());
  const raw = match ? fromBase64(match[1]!) : undefined;
  if (!raw || raw.length !== 32) throw new FormatError('key-invalid', `${origin}: expected "hostme-ed25519 <base64>"`, { origin });
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

export function signEnvelope(payload: Uint8Array, key: PublisherKey, payloadType = MANIFEST_PAYLOAD_TYPE): Uint8Array {
  if (!key.privateKey) throw new FormatError('key-invalid', 'signing needs a private key');
  const sig = sign(null, signingMessage(payloadType, payload), key.privateKey);
  const envelope: Envelope = {
    hostmeEnvelope: ENVELOPE_VERSION,
    payloadType,
    payload: toBase64(payload),
    signatures: [{ keyId: key.keyId, publicKey: toBase64(key.publicKeyRaw), sig: toBase64(sig) }],
  };
  return new TextEncoder().encode(JSON.stringify(envelope, null, 2) + '\n');
}
