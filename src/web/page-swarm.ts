// The run page's part in its image's WebRTC swarm (docs/peers.md "Browser
// peers"): the same RtcSwarm and ChannelPeer as Node peers, over the
// browser's own RTCPeerConnection and WebSocket, signaled by the hub that
// served the page. Other members are untrusted sources in the reader's mirror
// group (every object verified before use, a liar dropped, named and
// reported); the tab answers them from its Cache-API store, only objects of
// this image, re-verified before they leave, within small bounds.
import { RtcSwarm, type RtcEnvironment } from '../peer/rtc.js';
import { mirrorFailoverChannel } from '../store/mirror-group.js';
import type { ChannelPeer, ObjectCatalog } from '../peer/channel-peer.js';
import { webCodecs } from './reader/codecs.js';
import type { BrowserCacheStore } from './reader/cache.js';
import type { ImageReader } from './reader/reader.js';

export interface PageSwarmEvents {
  /** A channel to another member opened. */
  onPeer?: (name: string) => void;
  /** A member was dropped: wrong bytes (refused and reported to the hub) or dead. */
  onDropped?: (name: string, reason: string, wrongBytes: boolean) => void;
}

/** A tab answers few strangers: channels it opens, objects it sends at once (each at most one chunk in memory), requests per second per channel. */
const PAGE_LIMITS = { maxConnections: 4, total: 8, maxConcurrent: 4, ratePerSecond: 200 };
/**
 * How long a demand read waits for a member before the repository (plus 1 ms
 * per 4 KiB): a tab answers from its Cache API and re-verifies on a main
 * thread that may be running a VM, slower than a Node peer's 750 ms.
 */
const TAB_WINDOW_MS = 2000;

export class PageSwarm {
  readonly rtc: RtcSwarm;
  readonly dropped: string[] = [];
  /** Why reads left a member for the next source ("missing", "busy", "slow", …), counted. */
  readonly skipped: Record<string, number> = {};
  private readonly names = new Set<string>();
  private reader?: ImageReader;
  /** Channels that opened before the manifest was verified: added to the reader once it exists. */
  private readonly early: ChannelPeer[] = [];
  private opened?: () => void;
  private readonly firstOpen = new Promise<void>((resolve) => (this.opened = resolve));

  constructor(
    image: string,
    cache: BrowserCacheStore,
    private readonly events: PageSwarmEvents = {},
  ) {
    const catalog: ObjectCatalog = {
      // Only this image's objects (the Cache API store is shared by every image of the origin), verified again as they are read.
      object: async (id) => {
        const length = this.reader?.lengthOf(id);
        if (length === undefined) return null;
        return cache.get({ id, length }).then((o) => o.stored, () => null);
      },
      manifest: async (name, version) => {
        const m = this.reader?.manifest;
        return m && m.name === name && m.version === version ? this.reader!.envelope : null;
      },
    };
    const env: RtcEnvironment = {
      RTCPeerConnection: globalThis.RTCPeerConnection as unknown as RtcEnvironment['RTCPeerConnection'],
      WebSocket: globalThis.WebSocket as unknown as RtcEnvironment['WebSocket'],
    };
    this.rtc = new RtcSwarm(env, {
      hub: location.origin,
      codecs: webCodecs,
      image,
      serve: catalog,
      maxConnections: PAGE_LIMITS.maxConnections,
      serveLimits: { total: PAGE_LIMITS.total, maxConcurrent: PAGE_LIMITS.maxConcurrent, ratePerSecond: PAGE_LIMITS.ratePerSecond },
      onPeer: (peer) => {
        this.events.onPeer?.(peer.name);
        this.opened?.();
        if (this.reader) this.add(peer);
        else this.early.push(peer);
      },
    });
  }

  /** Joins through the hub; resolves with the number of members it listed (0: nobody to fetch from yet). */
  async start(): Promise<number> {
    mirrorFailoverChannel.subscribe((message) => {
      const { from, reason } = message as { from: string; reason: string };
      if (!this.names.has(from)) return;
      const why = /busy/.test(reason) ? 'busy' : /not found|missing/i.test(reason) ? 'missing' : /no answer within|slow|cancelled/.test(reason) ? 'slow' : reason.slice(0, 60);
      this.skipped[why] = (this.skipped[why] ?? 0) + 1;
    });
    await this.rtc.start();
    return this.rtc.members.length;
  }

  /** From now on, open channels are sources of `reader`, and the tab serves the objects of its image. */
  attach(reader: ImageReader): void {
    this.reader = reader;
    for (const peer of this.early.splice(0)) this.add(peer);
  }

  /** Resolves when a first channel is open, or after `ms` (the boot's first reads should not miss a member that is about to connect). */
  firstPeer(ms: number): Promise<void> {
    return Promise.race([this.firstOpen, new Promise<void>((resolve) => setTimeout(resolve, ms))]);
  }

  /** What this tab has sent to other members. */
  served(): { objects: number; bytes: number; refused: number } {
    let objects = 0;
    let bytes = 0;
    let refused = 0;
    for (const p of this.rtc.peers) {
      objects += p.stats.served;
      bytes += p.stats.servedBytes;
      refused += p.stats.refused;
    }
    return { objects, bytes, refused };
  }

  private add(peer: ChannelPeer): void {
    if (!peer.isOpen) return;
    this.names.add(peer.name);
    this.reader!.addPeer(peer, {
      lan: true,
      latencyMs: 5,
      windowMs: TAB_WINDOW_MS,
      onDropped: (reason, wrongBytes) => {
        this.dropped.push(peer.name);
        if (wrongBytes) this.rtc.report(peer, reason);
        this.events.onDropped?.(peer.name, reason, wrongBytes);
      },
    });
  }
}
