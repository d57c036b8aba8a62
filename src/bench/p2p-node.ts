/**
 * One node of `npm run bench:p2p`, run as its own process: optionally joins
 * the hub's swarm (shares its cache and announces first, so nodes starting
 * together find each other), waits for "go" on stdin, then fetches the boot
 * set the way `hostme run` would before QEMU reads it: the manifest and chunk
 * indexes from the repository, every boot-set chunk through the runner's
 * cache → mirror group (origin + peers) with 16 requests in flight,
 * coordinated with the other nodes as run-image.ts does (Swarm.coordinate;
 * HOSTME_P2P_NO_PLAN=1 leaves that out, to compare). Prints one JSON line, then keeps sharing until stdin ends.
 */
import { readFile } from 'node:fs/promises';
import { subscribe } from 'node:diagnostics_channel';
import { chunkLength, isHole } from '../format/chunk-index.js';
import { manifestBlobs } from '../format/manifest.js';
import { CacheDir } from '../runner/cache-dir.js';
import { resolveImage } from '../runner/image-source.js';
import { FetchScheduler } from '../store/fetch-scheduler.js';
import type { ObjectRef } from '../store/object-store.js';
import { Swarm } from '../peer/swarm.js';

interface Args {
  repo: string;
  name: string;
  version: string;
  cache: string;
  bootSet: string;
  hub?: string;
}

const args = JSON.parse(process.argv[2] ?? '{}') as Args;
const lines = (async function* () {
  let buffer = '';
  for await (const chunk of process.stdin) {
    buffer += String(chunk);
    let at;
    while ((at = buffer.indexOf('\n')) >= 0) {
      yield buffer.slice(0, at);
      buffer = buffer.slice(at + 1);
    }
  }
})();

const cache = new CacheDir(args.cache);
await cache.ensure();
const swarm = args.hub ? new Swarm({ hub: args.hub }) : undefined;
if (swarm) await swarm.share(cache, [{ repo: args.repo, name: args.name, version: args.version }], { host: '127.0.0.1' });
process.stdout.write(JSON.stringify({ state: 'waiting' }) + '\n');
await lines.next();

const bootSet = new Set((await readFile(args.bootSet, 'utf8')).split('\n').filter(Boolean));
let fromPeers = 0;
let fromOrigin = 0;
subscribe('hostme:cache:miss', (m) => {
  const { source, bytes } = m as { source: string; bytes: number };
  if (source.startsWith('peer ')) fromPeers += bytes;
  else fromOrigin += bytes;
});
const started = performance.now();
// 8 nodes × 16 requests share one 50 Mbit/s link with peers off: the runner's 10 s per-request timeout would fail them.
const resolved = await resolveImage({ repo: args.repo, name: args.name, version: args.version }, { cache, peers: swarm, http: { timeoutMs: 120_000 } });
const scheduler = new FetchScheduler(resolved.source, 16);
// As run-image.ts does: each object from the origin about once across the nodes (docs/peers.md "Flash crowd").
if (swarm && resolved.mirrors && !process.env.HOSTME_P2P_NO_PLAN) swarm.coordinate(resolved.mirrors, scheduler);
const refs: ObjectRef[] = [];
for (const { label, ref } of manifestBlobs(resolved.image.manifest)) {
  const index = await resolved.repo.readIndex(ref, scheduler, label);
  index.ids.forEach((id, i) => {
    if (!isHole(id) && bootSet.has(id)) refs.push({ id, length: chunkLength(index, i) });
  });
}
// Every node in the same (index) order, as boots of one image read it; the scheduler puts what this node owns first.
await Promise.all(refs.map((ref) => scheduler.get(ref, { priority: 'prefetch' })));
const ms = performance.now() - started;
process.stdout.write(JSON.stringify({ state: 'done', ms, chunks: refs.length, fromPeers, fromOrigin, served: swarm?.shareStats?.bytes ?? 0, waited: swarm?.shareStats?.waited ?? 0, notices: resolved.notices, sources: resolved.mirrors?.ranking(), shareStats: swarm?.shareStats }) + '\n');
await lines.next();
await swarm?.close();
process.exit(0);
