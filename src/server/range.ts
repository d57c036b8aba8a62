/**
 * Range requests (RFC 9110 section 14). Only single byte ranges are honoured;
 * a multi-range request is answered with the whole representation (200), which
 * the RFC allows and which avoids the overlapping-range amplification attacks
 * multipart/byteranges invites.
 */
export type RangeResult =
  | { kind: 'full' }
  | { kind: 'partial'; start: number; end: number }
  | { kind: 'unsatisfiable' };

export function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return { kind: 'full' };
  const match = /^\s*bytes\s*=\s*(.*)$/i.exec(header);
  // Unknown range units and malformed headers are ignored (RFC 9110 14.2).
  if (!match) return { kind: 'full' };
  const specs = match[1]!.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (specs.length !== 1) return { kind: 'full' };
  const spec = /^(\d*)-(\d*)$/.exec(specs[0]!);
  if (!spec || (spec[1] === '' && spec[2] === '')) return { kind: 'full' };
  const first = spec[1]!;
  const last = spec[2]!;
  if (first === '') {
    // Suffix range: the last N bytes.
    const suffix = Number(last);
    if (!Number.isSafeInteger(suffix)) return { kind: 'full' };
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Number(last);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end)) return { kind: 'full' };
  // "a-b" with b < a is syntactically invalid: ignore the header.
  if (end < start && last !== '') return { kind: 'full' };
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end: Math.min(end, size - 1) };
}

/** Strong comparison for If-Range; weak comparison for If-None-Match. */
export function etagMatchesAny(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === '*') return true;
  const opaque = etag.replace(/^W\//, '');
  return header.split(',').some((candidate) => candidate.trim().replace(/^W\//, '') === opaque);
}

export function ifRangeAllows(header: string | undefined, etag: string): boolean {
  if (header === undefined) return true;
  // Only a strong ETag can validate a range; a date or weak tag means "send it all".
  return header.trim() === etag && !etag.startsWith('W/');
}
