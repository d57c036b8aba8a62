import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MirrorGroup } from './mirror-group.js';
import { TransportStore } from './transport-store.js';
import { DirStore } from './node/dir-store.js';
import { HttpTransport } from './http-transport.js';
import { StaticServer, type StaticServerBehavior } from './testing/static-server.js';
import { compressibleObject, randomObject } from './store.case.js';
import { hasCode } from '../testing/has-code.js';
import { nodeCodecs } from '../format/node/codecs.js';

async function closedPortUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}/down`;
}

const httpStore = (url: string) => new TransportStore(new HttpTransport(url, { retries: 1, backoffMs: 1, timeoutMs: 5000 }), nodeCodecs);

describe('MirrorGroup over real HTTP servers', () => {
  let root: string;
  const servers: StaticServer[] = [];
  const objects = [compressibleObject(), randomObject(), compressibleObject(), randomObject()];
  const refs = objects.map((o) => ({ id: o.id, length: o.length }));

  const serve = async (behavior: StaticServerBehavior) => {
    const server = await StaticServer.start(root, behavior);
    servers.push(server);
    return server;
  };

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'hostme-mirrors-'));
    const dir = new DirStore(root);
    for (const o of objects) await dir.put(o.id, o.stored);
  });
  after(async () => {
    for (const s of servers) await s.close();
    await rm(root, { recursive: true, force: true });
  });

  test('reads succeed past a down, a lying and a lacking mirror; the liar is demoted, reported and ranked last', async () => {
    const downUrl = await closedPortUrl();
    const liar = await serve({ lie: true });
    const lacking = await serve({ lackObjects: true });
    const good = await serve({});
    // Tried in this order at first: every bad mirror is in front of the good one.
    const group = new MirrorGroup([httpStore(downUrl), httpStore(liar.url), httpStore(lacking.url), httpStore(good.url)]);
    const demotions: Array<{ mirror: string; id: string }> = [];
    const onDemote = (message: unknown) => demotions.push(message as { mirror: string; id: string });
    subscribe('hostme:mirror:demote', onDemote);
    try {
      for (const ref of refs) {
        const got = await group.get(ref);
        assert.equal(got.id, ref.id);
        assert.equal(got.source, good.url);
      }
    } finally {
      unsubscribe('hostme:mirror:demote', onDemote);
    }
    assert.ok(liar.count('objects/') >= 1, 'the liar was asked');
    assert.ok(demotions.length >= 1, 'demotion reported on hostme:mirror:demote');
    assert.ok(demotions.every((d) => d.mirror === liar.url), `only the liar is demoted: ${JSON.stringify(demotions)}`);
    assert.equal(demotions[0]!.id, refs[0]!.id);
    const ranking = group.ranking();
    assert.equal(ranking.at(-1)!.name, liar.url, `liar ranks last: ${JSON.stringify(ranking)}`);
    assert.equal(ranking.at(-1)!.lying, true);
    assert.ok(ranking.filter((r) => r.lying).length === 1);
    assert.equal(ranking.find((r) => r.name === good.url)!.served, refs.length);
    // Once demoted, the liar is not asked again while others can serve.
    const liarAsked = liar.count('objects/');
    await group.get(refs[0]!);
    assert.equal(liar.count('objects/'), liarAsked);
    await group.close();
  });

  test('a lying mirror that is listed first stays behind honest mirrors even when faster', async () => {
    const liar = await serve({ lie: true });
    const slowGood = await serve({ delayMs: 50 });
    const group = new MirrorGroup([httpStore(liar.url), httpStore(slowGood.url)]);
    await group.get(refs[1]!);
    await group.measure((s) => s.has(refs[0]!.id));
    assert.deepEqual(group.ranking().map((r) => r.name), [slowGood.url, liar.url]);
  });

  test('all mirrors lacking the object is object-missing', async () => {
    const a = await serve({ lackObjects: true });
    const b = await serve({ lackObjects: true });
    const group = new MirrorGroup([httpStore(a.url), httpStore(b.url)]);
    await assert.rejects(group.get(refs[0]!), hasCode('object-missing', refs[0]!.id));
  });

  test('all mirrors failing is store-unavailable', async () => {
    const failing = await serve({ alwaysFail: true });
    const group = new MirrorGroup([httpStore(await closedPortUrl()), httpStore(failing.url)]);
    await assert.rejects(group.get(refs[0]!), hasCode('store-unavailable', refs[0]!.id));
  });

  test('missing on one mirror and down on the other is store-unavailable (not a definite miss)', async () => {
    const lacking = await serve({ lackObjects: true });
    const group = new MirrorGroup([httpStore(lacking.url), httpStore(await closedPortUrl())]);
    await assert.rejects(group.get(refs[0]!), hasCode('store-unavailable'));
  });

  test('measure() ranks the faster mirror first', async () => {
    // No wall-clock race: the slow mirror's probe answers only after the fast one's has (plus a margin), whatever the load.
    const slow = await serve({});
    const fast = await serve({});
    const group = new MirrorGroup([httpStore(slow.url), httpStore(fast.url)]);
    assert.equal(group.ranking()[0]!.name, slow.url, 'listed order before measuring');
    let fastDone!: () => void;
    const fastAnswered = new Promise<void>((resolve) => (fastDone = resolve));
    await group.measure(async (source) => {
      if (source.name === slow.url) {
        await fastAnswered;
        await new Promise((resolve) => setTimeout(resolve, 50));
        return source.get(refs[0]!);
      }
      const object = await source.get(refs[0]!);
      fastDone();
      return object;
    });
    assert.deepEqual(group.ranking().map((r) => r.name), [fast.url, slow.url]);
    const before = fast.count('objects/');
    await group.get(refs[1]!);
    assert.equal(fast.count('objects/'), before + 1, 'the next read goes to the fast mirror');
  });

  test('reads rank mirrors by transfer time: our own busy CPU (decoding, hashing) does not demote a fast mirror', async () => {
    const slow = await serve({});
    const fast = await serve({});
    // Transfer times as the transports report them, fixed (a loaded machine's real ones would race):
    // the fast mirror moves bytes in 1 ms, the slow one in 120 ms.
    const reporting = (store: ReturnType<typeof httpStore>, transferMs: number): typeof store =>
      Object.assign(Object.create(store) as typeof store, { get: async (ref: { id: string; length: number }) => ({ ...(await store.get(ref)), transferMs }) });
    const fastStore = reporting(httpStore(fast.url), 1);
    // The fast mirror's objects cost 200 ms of our CPU after they arrive (a busy machine verifying them).
    const busyAfterTransfer: typeof fastStore = Object.assign(Object.create(fastStore) as typeof fastStore, {
      get: async (ref: { id: string; length: number }) => {
        const object = await fastStore.get(ref);
        const until = performance.now() + 200;
        while (performance.now() < until);
        return object;
      },
    });
    const group = new MirrorGroup([busyAfterTransfer, reporting(httpStore(slow.url), 120)]);
    for (const ref of refs) await group.get(ref);
    const ranking = group.ranking();
    assert.equal(ranking[0]!.name, fast.url, `ranking: ${JSON.stringify(ranking)}`);
    assert.equal(ranking[0]!.served, refs.length, 'every read went to the fast mirror');
    assert.equal(slow.count('objects/'), 0);
  });

  test('measure() ranks an unreachable mirror after a reachable one', async () => {
    const good = await serve({});
    const group = new MirrorGroup([httpStore(await closedPortUrl()), httpStore(good.url)]);
    await group.measure((source) => source.get(refs[0]!));
    assert.equal(group.ranking()[0]!.name, good.url);
  });

  test('has() is true when any reachable mirror has the object', async () => {
    const lacking = await serve({ lackObjects: true });
    const good = await serve({});
    const group = new MirrorGroup([httpStore(await closedPortUrl()), httpStore(lacking.url), httpStore(good.url)]);
    assert.equal(await group.has(refs[0]!.id), true);
    assert.equal(await group.has('ab'.repeat(32)), false);
  });
});
