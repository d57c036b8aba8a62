import { ExportError } from '../errors.js';
import { httpDestination } from './http.js';
import { localDestination } from './local.js';
import { s3Destination } from './s3.js';
import type { Destination, DestinationKind } from './types.js';

export type { Destination, DestinationKind, UploadItem, UploadProgress } from './types.js';

/** Every destination kind; the first whose `matches` accepts DEST wins (local last: it takes plain paths). */
export const DESTINATIONS: readonly DestinationKind[] = [s3Destination, httpDestination, localDestination];

export function openDestination(dest: string, env: NodeJS.ProcessEnv = process.env): Destination {
  const kind = DESTINATIONS.find((d) => d.matches(dest));
  if (!kind) {
    const valid = DESTINATIONS.map((d) => `${d.name} (${d.example})`).join(', ');
    throw new ExportError('export-destination-unknown', `unsupported export destination "${dest}"; valid destinations: ${valid}`, { destination: dest });
  }
  return kind.open(dest, env);
}
