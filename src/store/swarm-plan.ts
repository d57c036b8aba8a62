/**
 * Who in a swarm fetches which object from the origin (docs/peers.md
 * "Flash crowd: one origin fetch per object"). Nodes that start together
 * would otherwise all ask the origin for the same chunks, since none of them
 * has any yet. Every object gets one *owner* among the members by rendezvous
 * (highest random weight) hashing of (object id, member key): each node
 * computes it on its own from the member list the tracker gave it, a member
 * joining or leaving moves only its own share, and two nodes with slightly
 * different lists still agree on most objects. The owner fetches the object
 * from the origin; the others ask the owner first and let it hold the request
 * while its fetch is in flight (the `wait` of the peer protocols).
 *
 * Web-standard only: the browser and Node share it.
 */
export class SwarmPlan {
  /** This machine's member key as the others know it (tracker address:port); undefined: not serving, so never an owner. */
  self: string | undefined;

  constructor(self?: string) {
    this.self = self;
  }

  /** The owner of `id` among `members` (self included when known): the highest score wins. */
  owner(id: string, members: Iterable<string>): string | undefined {
    let best: string | undefined;
    let bestScore = -1;
    const consider = (member: string) => {
      const score = rendezvousScore(id, member);
      if (score > bestScore || (score === bestScore && best !== undefined && member < best)) {
        best = member;
        bestScore = score;
      }
    };
    if (this.self !== undefined) consider(this.self);
    for (const member of members) consider(member);
    return best;
  }
}

/**
 * FNV-1a (32 bit) over the member key, then the object id: ids are SHA-256
 * hex, so already uniform; the hash only has to mix in the member.
 */
export function rendezvousScore(id: string, member: string): number {
  let h = 0x811c9dc5;
  const text = `${member}\u0000${id}`;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // A final avalanche (murmur3 fmix32) so members differing in their last characters still spread evenly.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
