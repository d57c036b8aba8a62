/**
 * Bencoding (BEP 3): integers i42e, byte strings 4:spam, lists l…e and
 * dictionaries d…e whose keys are byte strings sorted as raw bytes. The
 * decoder is strict (canonical form only: no leading zeros, no "-0", sorted
 * unique keys, nothing after the value) and bounded (input size, nesting), so
 * hostile input costs at most its own length.
 */
import { HostmeError } from '../errors.js';

export type BValue = number | bigint | string | Uint8Array | BValue[] | { [key: string]: BValue };

export function bencode(value: BValue): Buffer {
  const parts: Buffer[] = [];
  const put = (v: BValue): void => {
    if (typeof v === 'number' || typeof v === 'bigint') {
      if (typeof v === 'number' && !Number.isSafeInteger(v)) throw new HostmeError('bencode-invalid', `bencode: ${v} is not an integer`);
      parts.push(Buffer.from(`i${v}e`));
    } else if (typeof v === 'string' || v instanceof Uint8Array) {
      const bytes = typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v);
      parts.push(Buffer.from(`${bytes.length}:`), bytes);
    } else if (Array.isArray(v)) {
      parts.push(Buffer.from('l'));
      v.forEach(put);
      parts.push(Buffer.from('e'));
    } else {
      parts.push(Buffer.from('d'));
      const keys = Object.keys(v).sort((a, b) => Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')));
      for (const key of keys) {
        put(key);
        put(v[key]!);
      }
      parts.push(Buffer.from('e'));
    }
  };
  put(value);
  return Buffer.concat(parts);
}

export interface DecodeLimits {
  maxBytes?: number;
  maxDepth?: number;
}

/** Decoded form: byte strings stay Buffers (torrent fields such as "pieces" are binary), integers are bigint. */
export type BDecoded = bigint | Buffer | BDecoded[] | Map<string, BDecoded>;

function bad(message: string, at: number): HostmeError {
  return new HostmeError('bencode-invalid', `bencode: ${message} at byte ${at}`, { at });
}

export function bdecode(input: Uint8Array, limits: DecodeLimits = {}): BDecoded {
  const data = Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  if (data.length > (limits.maxBytes ?? 16 << 20)) throw bad(`input of ${data.length} bytes is over the limit`, 0);
  const maxDepth = limits.maxDepth ?? 32;
  let pos = 0;
  const digitsUntil = (end: number, signed: boolean): string => {
    const stop = data.indexOf(end, pos);
    if (stop < 0 || stop - pos > 20) throw bad('unterminated number', pos);
    const text = data.toString('latin1', pos, stop);
    const ok = signed ? /^(0|-?[1-9]\d*)$/.test(text) : /^(0|[1-9]\d*)$/.test(text);
    if (!ok) throw bad(`"${text}" is not a canonical number`, pos);
    pos = stop + 1;
    return text;
  };
  const value = (depth: number): BDecoded => {
    if (depth > maxDepth) throw bad('nested too deeply', pos);
    const c = data[pos];
    if (c === undefined) throw bad('unexpected end', pos);
    if (c === 0x69) {
      pos++;
      return BigInt(digitsUntil(0x65, true));
    }
    if (c === 0x6c || c === 0x64) {
      const dict = c === 0x64;
      pos++;
      const list: BDecoded[] = [];
      const map = new Map<string, BDecoded>();
      let lastKey: Buffer | undefined;
      while (data[pos] !== 0x65) {
        if (pos >= data.length) throw bad('unterminated list or dictionary', pos);
        if (!dict) {
          list.push(value(depth + 1));
          continue;
        }
        const at = pos;
        const key = value(depth + 1);
        if (!Buffer.isBuffer(key)) throw bad('dictionary key is not a string', at);
        if (lastKey && Buffer.compare(lastKey, key) >= 0) throw bad('dictionary keys are not sorted and unique', at);
        lastKey = key;
        map.set(key.toString('utf8'), value(depth + 1));
      }
      pos++;
      return dict ? map : list;
    }
    if (c >= 0x30 && c <= 0x39) {
      const length = Number(digitsUntil(0x3a, false));
      if (pos + length > data.length) throw bad(`string of ${length} bytes runs past the end`, pos);
      const bytes = Buffer.from(data.subarray(pos, pos + length));
      pos += length;
      return bytes;
    }
    throw bad(`unexpected byte 0x${c.toString(16)}`, pos);
  };
  const result = value(0);
  if (pos !== data.length) throw bad('trailing bytes after the value', pos);
  return result;
}
