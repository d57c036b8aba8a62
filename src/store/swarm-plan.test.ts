import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { SwarmPlan, rendezvousScore } from './swarm-plan.js';

const ids = Array.from({ length: 4000 }, () => randomBytes(32).toString('hex'));
const members = Array.from({ length: 8 }, (_, i) => `127.0.0.1:${40000 + i}`);

test('every member owns about its share of the objects, and every node computes the same owner', () => {
  const counts = new Map<string, number>();
  for (const id of ids) {
    const owners = members.map((self) => new SwarmPlan(self).owner(id, members.filter((m) => m !== self)));
    assert.equal(new Set(owners).size, 1, `nodes disagree on ${id}`);
    counts.set(owners[0]!, (counts.get(owners[0]!) ?? 0) + 1);
  }
  for (const m of members) {
    const share = (counts.get(m) ?? 0) / ids.length;
    assert.ok(share > 0.08 && share < 0.17, `${m} owns ${(share * 100).toFixed(1)} %`);
  }
});

test('a member leaving moves only its own objects; one without a key owns nothing', () => {
  const plan = new SwarmPlan(members[0]);
  const gone = members[3]!;
  for (const id of ids) {
    const before = plan.owner(id, members.slice(1));
    const after = plan.owner(id, members.slice(1).filter((m) => m !== gone));
    if (before !== gone) assert.equal(after, before, `${id} moved from ${before} to ${after}`);
  }
  const keyless = new SwarmPlan(undefined);
  for (const id of ids.slice(0, 200)) assert.notEqual(keyless.owner(id, members), undefined);
  assert.equal(keyless.owner(ids[0]!, []), undefined);
});

test('the score is the documented FNV-1a + fmix32 (docs/peers.md "Flash crowd")', () => {
  // Reference values computed by hand from the definition; a second implementation must match them.
  assert.equal(rendezvousScore('', ''), fmix(fnv('\u0000')));
  assert.equal(rendezvousScore('ab', 'k'), fmix(fnv('k\u0000ab')));
});

function fnv(text: string): number {
  let h = 0x811c9dc5n;
  for (const byte of Buffer.from(text, 'latin1')) h = ((h ^ BigInt(byte)) * 0x01000193n) & 0xffffffffn;
  return Number(h);
}
function fmix(x: number): number {
  let h = BigInt(x);
  h ^= h >> 16n;
  h = (h * 0x85ebca6bn) & 0xffffffffn;
  h ^= h >> 13n;
  h = (h * 0xc2b2ae35n) & 0xffffffffn;
  h ^= h >> 16n;
  return Number(h);
}
