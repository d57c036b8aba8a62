import { HttpError } from './http-util.js';

export const MAX_URL_LENGTH = 4096;

export interface RequestPath {
  /** Decoded path segments; a trailing slash gives a final empty segment. */
  segments: string[];
  /** The decoded path, always starting with "/". */
  path: string;
  query: URLSearchParams;
}

/**
 * Parse a request target into safe, decoded path segments. The path is
 * percent-decoded exactly once; after that, anything that could climb out of
 * the repository or confuse a filesystem is refused: "." and ".." segments
 * (also when they arrive as %2e%2e or ..%2f), empty segments ("//"),
 * backslashes, NUL and other control characters.
 */
export function parseRequestPath(rawUrl: string | undefined): RequestPath {
  const url = rawUrl ?? '';
  if (url.length > MAX_URL_LENGTH) throw new HttpError(414, 'uri-too-long', `request URL longer than ${MAX_URL_LENGTH} characters`);
  if (!url.startsWith('/')) throw new HttpError(400, 'bad-path', 'request target must be an absolute path');
  const queryAt = url.indexOf('?');
  const rawPath = queryAt === -1 ? url : url.slice(0, queryAt);
  const query = new URLSearchParams(queryAt === -1 ? '' : url.slice(queryAt + 1).replace(/#.*$/, ''));
  let path: string;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    throw new HttpError(400, 'bad-path', 'malformed percent-encoding in the request path');
  }
  if (/[\u0000-\u001f\u007f\\]/.test(path)) throw new HttpError(400, 'bad-path', 'request path contains a backslash or control character');
  const segments = path.slice(1).split('/');
  for (let i = 0; i < segments.length; i++) {
    const segment = segments[i]!;
    if (segment === '.' || segment === '..') throw new HttpError(400, 'bad-path', 'request path contains "." or ".." segments');
    const last = i === segments.length - 1;
    if (segment === '' && !last) throw new HttpError(400, 'bad-path', 'request path contains an empty segment');
  }
  return { segments, path, query };
}
