import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MirrorGroup } from '../store/mirror-group.js';
import { SwarmPlan } from '../store/swarm-plan.js';
import { DirStore } from '../store/node/dir-store.js';
import { randomObject } from '../store/store.case.js';
import { HttpPeerSource } from './peer-source.js';
import { decodeRequest, encodeGet, MSG_GET, MSG_GET_WAIT } from './wire.js';

const root = await mkdtemp(join(tmpdir(), 'hostme-flash-'));
after(() => rm(root, { recursive: true, force: true }));

/** A real HTTP peer that records each request's method and URL and answers as told ('hang': never, until the asker gives up). */
async function peer(answer: 'hang' | 404) {
  const urls: string[] = [];
  const held: ServerResponse[] = [];
  const server = createServer((req: IncomingMessage, res) => {
    urls.push(`${req.method} ${req.url ?? ''}`);
    if (answer === 'hang') held.push(res);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  return { urls, source: new HttpPeerSource('127.0.0.1', port), key: `127.0.0.1:${port}` };
}

/** An object whose owner among `self` and `other` is `other`. */
function ownedBy(plan: SwarmPlan, other: string) {
  for (;;) {
    const object = randomObject(8192);
    if (plan.owner(object.id, [other]) === other) return object;
  }
}

test('a demand read asks the owner first with a wait, and reaches the origin when the owner does not deliver', async () => {
  const origin = new DirStore(join(root, 'origin'));
  const owner = await peer('hang');
  const plan = new SwarmPlan('127.0.0.1:1');
  const object = ownedBy(plan, owner.key);
  await origin.put(object.id, object.stored);
  const group = new MirrorGroup([origin]);
  group.addPeers([owner.source], { lan: true, member: owner.key, windowMs: 200 });
  group.setPlan(plan);
  assert.equal(group.assignedHere(object.id), false);
  const got = await group.get({ id: object.id, length: object.length });
  assert.equal(got.source, origin.name, 'the origin delivered after the window');
  assert.equal(owner.urls.length, 1);
  assert.match(owner.urls[0]!, new RegExp(`^GET /objects/${object.id.slice(0, 2)}/${object.id}\\?wait=202$`), 'asked with the demand window as its wait');
});

test('prefetch asks the owner with the long wait; a 404 from it falls back; for an object owned here, peers are only asked whether they have it', async () => {
  const origin = new DirStore(join(root, 'origin2'));
  const owner = await peer(404);
  const plan = new SwarmPlan('127.0.0.1:2');
  const theirs = ownedBy(plan, owner.key);
  let mine = randomObject(8192);
  while (plan.owner(mine.id, [owner.key]) !== plan.self) mine = randomObject(8192);
  for (const o of [theirs, mine]) await origin.put(o.id, o.stored);
  const group = new MirrorGroup([origin]);
  group.addPeers([owner.source], { lan: true, member: owner.key });
  group.setPlan(plan);
  assert.equal(group.assignedHere(mine.id), true);
  assert.equal((await group.get({ id: theirs.id, length: theirs.length }, { priority: 'prefetch' })).source, origin.name);
  assert.equal((await group.get({ id: mine.id, length: mine.length }, { priority: 'prefetch' })).source, origin.name);
  assert.deepEqual(owner.urls, [`GET /objects/${theirs.id.slice(0, 2)}/${theirs.id}?wait=8000`, `HEAD /objects/${mine.id.slice(0, 2)}/${mine.id}`]);
});

test('with a plan, the peers other than the owner are asked all at once, and only one that has the object is read from', async () => {
  const origin = new DirStore(join(root, 'origin3'));
  const owner = await peer(404);
  const lacking = await peer(404);
  // The third peer holds the object (a repository's objects/ layout, as a peer server answers).
  const held = new Map<string, Uint8Array>();
  const holder = createServer((req, res) => {
    const id = /^\/objects\/[0-9a-f]{2}\/([0-9a-f]{64})$/.exec(req.url ?? '')?.[1];
    const stored = id ? held.get(id) : undefined;
    if (!stored) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-length': stored.length }).end(req.method === 'HEAD' ? undefined : stored);
  });
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  after(() => new Promise((resolve) => holder.close(resolve)));
  const holderPort = (holder.address() as AddressInfo).port;
  const holderKey = `127.0.0.1:${holderPort}`;
  const plan = new SwarmPlan('127.0.0.1:3');
  let object = randomObject(8192);
  while (plan.owner(object.id, [owner.key, lacking.key, holderKey]) !== owner.key) object = randomObject(8192);
  held.set(object.id, object.stored);
  await origin.put(object.id, object.stored);
  const group = new MirrorGroup([origin]);
  for (const p of [owner, lacking]) group.addPeers([p.source], { lan: true, member: p.key });
  group.addPeers([new HttpPeerSource('127.0.0.1', holderPort)], { lan: true, member: holderKey });
  group.setPlan(plan);
  const got = await group.get({ id: object.id, length: object.length }, { priority: 'prefetch' });
  assert.equal(got.source, `peer http://${holderKey}`);
  assert.deepEqual(owner.urls, [`GET /objects/${object.id.slice(0, 2)}/${object.id}?wait=8000`], 'the owner was asked first, with the wait');
  assert.deepEqual(lacking.urls, [`HEAD /objects/${object.id.slice(0, 2)}/${object.id}`], 'the lacking peer was only asked whether it has it');
});

test('GET_WAIT on the data channel: 39 bytes, wait clamped to 10 s; GET without a wait stays 37 bytes', () => {
  const id = 'ab'.repeat(32);
  const waiting = encodeGet(7, id, 60_000);
  assert.equal(waiting.length, 39);
  assert.equal(waiting[0], MSG_GET_WAIT);
  assert.deepEqual(decodeRequest(waiting), { kind: 'get', req: 7, id, waitMs: 10_000 });
  const plain = encodeGet(8, id);
  assert.equal(plain.length, 37);
  assert.equal(plain[0], MSG_GET);
  assert.deepEqual(decodeRequest(plain), { kind: 'get', req: 8, id, waitMs: 0 });
  assert.equal(decodeRequest(waiting.subarray(0, 38)), undefined, 'a short GET_WAIT is dropped');
});
