// Warm-up: fetch what a memory-snapshot start will read (the snapshot's chunk
// index and chunks, the run page's scripts) into the browser's HTTP cache
// before the reader asks for it. Objects are content-addressed and served
// `immutable`, so the reader's own fetch of the same URL is then answered
// from the cache (or joins the request still in flight: Chromium lets one
// request fill a cache entry while identical ones wait for it). Nothing is
// trusted here: the reader verifies every byte as before. Browser-only.

/** How many warm-up requests are in flight at once (16 fill a 50 Mbit/s, 100 ms link with 256 KiB chunks). */
const WARM_CONCURRENCY = 16;

/** The list the server rendered into `data-hostme-warm` (space-separated same-origin paths). */
export function warmPaths(el: HTMLElement | null | undefined): string[] {
  const raw = el?.dataset.hostmeWarm ?? '';
  // Same-origin absolute paths only: a page attribute never sends the browser elsewhere.
  return raw.split(/\s+/).filter((p) => /^\/[A-Za-z0-9._/-]+$/.test(p) && !p.includes('..'));
}

const started = new Set<string>();

/**
 * Fetches `paths` (in order, at most WARM_CONCURRENCY at a time) and drops
 * the bodies; a path already warmed by this page is skipped. Failures are
 * ignored: the reader fetches (and reports) for itself.
 */
export async function warm(paths: string[], priority: RequestPriority = 'auto'): Promise<number> {
  const queue = paths.filter((p) => !started.has(p));
  queue.forEach((p) => started.add(p));
  let done = 0;
  const worker = async (): Promise<void> => {
    for (let path = queue.shift(); path !== undefined; path = queue.shift()) {
      try {
        // credentials 'omit' like the reader's requests, so both use one cache entry.
        const res = await fetch(path, { credentials: 'omit', priority });
        await res.arrayBuffer();
        done++;
      } catch {
        /* the reader will try again and say why */
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(WARM_CONCURRENCY, queue.length) }, worker));
  return done;
}

/**
 * Starts the warm-up when the visitor shows intent to run: the pointer over
 * the link (or a touch, or keyboard focus on it). Once per page.
 */
export function warmOnIntent(link: HTMLElement | null): void {
  if (!link) return;
  const paths = warmPaths(link);
  if (paths.length === 0) return;
  const go = (): void => {
    for (const ev of ['pointerenter', 'touchstart', 'focus'] as const) link.removeEventListener(ev, go);
    link.dataset.hostmeWarming = 'started';
    void warm(paths).then((n) => {
      link.dataset.hostmeWarming = String(n);
    });
  };
  for (const ev of ['pointerenter', 'touchstart', 'focus'] as const) link.addEventListener(ev, go, { passive: true });
}
