/**
 * The node ⇄ hub tunnel (docs/host.md "Tunnel"). The node dials the hub
 * (works behind NAT), proves its Ed25519 identity by signing a fresh hub
 * nonce together with the sites it claims, and the connection is upgraded
 * to a raw byte stream on which the hub speaks HTTP/2 as the client and the
 * node answers as the server.
 */
import { createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { HostmeError } from '../errors.js';

export const TUNNEL_PROTOCOL = 'hostme-tunnel/1';
export const CHALLENGE_PATH = '/api/hub/challenge';
export const TUNNEL_PATH = '/api/hub/tunnel';
/** Request header the hub sets on every gateway request sent down a tunnel. */
export const SITE_HEADER = 'x-hostme-site';
/** Response header the node sets: which node answered (its key id). */
export const NODE_HEADER = 'x-hostme-node';
/** Response header a node sets when it cannot serve the site right now: the hub may try another node. */
export const RETRY_HEADER = 'x-hostme-retry';
/** Path the hub polls (no site header) for the node's per-site readiness. */
export const STATUS_PATH = '/.hostme/status';
/**
 * HTTP/2 flow-control windows on the tunnel, both ends. RFC 9113's default
 * (64 KiB per stream and per connection) costs one window update round trip
 * per 64 KiB: a 1 MiB page crossed the tunnel at a few MB/s. 4 MiB per
 * stream and 32 MiB per connection keep a loopback or LAN tunnel busy; the
 * memory stays bounded by the receivers' back-pressure (maxSessionMemory).
 */
export const STREAM_WINDOW_BYTES = 4 << 20;
export const SESSION_WINDOW_BYTES = 32 << 20;

export const SITE_NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const MAX_SITES_PER_NODE = 64;

export interface SiteClaim {
  site: string;
  /** Invite token for sites whose hosting is by invitation. */
  invite?: string;
}

export interface NodeStatus {
  /** Sites whose VM answers on its published port right now. */
  ready: string[];
  /** Requests in flight at the node. */
  inflight: number;
}

function b64url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64url');
}

/** The raw 32-byte Ed25519 public key, base64url: the node's identity on the wire. */
export function nodeKeyText(publicKey: KeyObject): string {
  const der = publicKey.export({ format: 'der', type: 'spki' });
  return b64url(der.subarray(der.length - 32));
}

/** Short, stable id for logs and headers. */
export function nodeIdOf(keyText: string): string {
  return keyText.slice(0, 16);
}

function publicKeyFromText(text: string): KeyObject {
  const raw = Buffer.from(text, 'base64url');
  if (raw.length !== 32 || !/^[A-Za-z0-9_-]{43}$/.test(text)) throw new HostmeError('tunnel-auth', 'the node key must be 32 bytes of base64url');
  // SPKI prefix for Ed25519 (RFC 8410).
  return createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b6570032100', 'hex'), raw]), format: 'der', type: 'spki' });
}

function signedText(nonce: string, sitesHeader: string): Buffer {
  return Buffer.from(`${TUNNEL_PROTOCOL}\n${nonce}\n${sitesHeader}`, 'utf8');
}

export interface TunnelAuthHeaders {
  'x-hostme-node-key': string;
  'x-hostme-nonce': string;
  'x-hostme-sites': string;
  'x-hostme-signature': string;
}

export function signTunnelRequest(privateKey: KeyObject, publicKey: KeyObject, nonce: string, claims: SiteClaim[]): TunnelAuthHeaders {
  const sitesHeader = JSON.stringify(claims);
  return {
    'x-hostme-node-key': nodeKeyText(publicKey),
    'x-hostme-nonce': nonce,
    'x-hostme-sites': sitesHeader,
    'x-hostme-signature': b64url(sign(null, signedText(nonce, sitesHeader), privateKey)),
  };
}

/** Checks the signature and the claim list's shape; the caller checks the nonce and hosting policy. */
export function verifyTunnelRequest(headers: Record<string, string | string[] | undefined>): { keyText: string; nonce: string; claims: SiteClaim[] } {
  const one = (name: string): string => {
    const value = headers[name];
    if (typeof value !== 'string' || value.length === 0 || value.length > 8192) throw new HostmeError('tunnel-auth', `missing or oversized ${name}`);
    return value;
  };
  const keyText = one('x-hostme-node-key');
  const nonce = one('x-hostme-nonce');
  const sitesHeader = one('x-hostme-sites');
  const signature = Buffer.from(one('x-hostme-signature'), 'base64url');
  if (!verify(null, signedText(nonce, sitesHeader), publicKeyFromText(keyText), signature)) throw new HostmeError('tunnel-auth', 'bad node signature');
  let parsed: unknown;
  try {
    parsed = JSON.parse(sitesHeader);
  } catch {
    throw new HostmeError('tunnel-auth', 'x-hostme-sites is not JSON');
  }
  if (!Array.isArray(parsed) || parsed.length > MAX_SITES_PER_NODE) throw new HostmeError('tunnel-auth', `x-hostme-sites must be a list of at most ${MAX_SITES_PER_NODE} claims`);
  const claims = parsed.map((c: unknown): SiteClaim => {
    const claim = c as Partial<SiteClaim> | null;
    if (!claim || typeof claim.site !== 'string' || !SITE_NAME.test(claim.site)) throw new HostmeError('tunnel-auth', 'a site claim has no valid site name');
    if (claim.invite !== undefined && (typeof claim.invite !== 'string' || claim.invite.length > 256)) throw new HostmeError('tunnel-auth', 'a site claim has a malformed invite');
    return claim.invite === undefined ? { site: claim.site } : { site: claim.site, invite: claim.invite };
  });
  return { keyText, nonce, claims };
}
