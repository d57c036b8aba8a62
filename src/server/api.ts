import type { IncomingMessage, ServerResponse } from 'node:http';
import { HttpError, publicBaseUrl, sendJson } from './http-util.js';
import { summarize, type RepoView } from './repo-view.js';

/** GET /api/images, /api/images/NAME, /api/images/NAME/VERSION. `segments` follow "api". */
export async function handleApi(req: IncomingMessage, res: ServerResponse, segments: string[], view: RepoView, fallbackHost: string): Promise<void> {
  const parts = segments[segments.length - 1] === '' ? segments.slice(0, -1) : segments;
  if (parts[0] !== 'images' || parts.length > 3) throw new HttpError(404, 'not-found', 'unknown API endpoint (try /api/images)');
  if (parts.length === 1) {
    sendJson(req, res, 200, await view.listing());
    return;
  }
  const { image, listing } = await view.image(parts[1]!, parts[2]);
  sendJson(req, res, 200, summarize(image, listing, publicBaseUrl(req, fallbackHost), parts[2] !== undefined));
}
