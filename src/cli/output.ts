import { HostmeError, errorMessage, isHostmeError } from '../errors.js';

/** Shared by every subcommand: human text by default, one JSON document with --json. */
export interface OutputOptions {
  json?: boolean;
}

export function emit(options: OutputOptions, value: unknown, human: () => string): void {
  if (options.json) process.stdout.write(JSON.stringify(value, null, 2) + '\n');
  else process.stdout.write(terminalSafe(human()).replace(/\n?$/, '\n'));
}

/**
 * Text for a terminal with control characters made visible (`\x1b`):
 * manifests, repository names and error messages carry publisher-controlled
 * text, and an escape sequence in a description must not drive the user's
 * terminal. Newlines and tabs stay.
 */
export function terminalSafe(text: string): string {
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

export function reportError(err: unknown, json: boolean): void {
  const code = isHostmeError(err) ? err.code : 'internal';
  if (json) {
    const body = isHostmeError(err) ? err.toJSON() : { code, message: errorMessage(err) };
    process.stdout.write(JSON.stringify({ error: body }, null, 2) + '\n');
  }
  process.stderr.write(`hostme: ${terminalSafe(errorMessage(err).split('\n')[0]!)}\n`);
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? value : value.toFixed(value >= 100 ? 0 : 1)} ${units[unit]}`;
}

/** Parse sizes like 262144, 256K, 256KiB, 1M, 4MiB. */
export function parseSize(text: string): number {
  const match = /^(\d+)\s*([KMGT]?)(i?B)?$/i.exec(text.trim());
  if (!match) throw new HostmeError('usage', `cannot parse size "${text}" (examples: 262144, 256K, 1MiB)`);
  const power = ' KMGT'.indexOf((match[2] || ' ').toUpperCase());
  return Number(match[1]) * 1024 ** power;
}

/** NAME or NAME@VERSION. */
export function parseImageSpec(spec: string): { name: string; version?: string } {
  const at = spec.indexOf('@');
  if (at < 0) return { name: spec };
  return { name: spec.slice(0, at), version: spec.slice(at + 1) || undefined };
}

export function parsePositiveInt(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new HostmeError('usage', `"${text}" is not a positive integer`);
  return n;
}
