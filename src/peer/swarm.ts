import { nodeCodecs } from '../format/node/codecs.js';
import { errorMessage } from '../errors.js';
import type { MirrorGroup } from '../store/mirror-group.js';
import type { CacheDir } from '../runner/cache-dir.js';
import { localNets } from './address.js';
import { ShareCatalog, type SharedImage } from './catalog.js';
import { PeerHttpServer, type PeerServerOptions } from './http-server.js';
import { HttpPeerSource } from './peer-source.js';
import { TrackerClient } from './tracker-client.js';

export interface SwarmOptions {
  /** The hub whose tracker lists the peers (docs/peers.md). */
  hub: string;
  /** How long a demand read waits for a peer before the origin (ms, default 750 + size). */
  windowMs?: number;
  log?: (line: string) => void;
}

/** Starting latency estimates: a LAN peer ranks before any WAN origin; a WAN peer after a measured nearby one. */
const LAN_LATENCY_MS = 5;
const WAN_LATENCY_MS = 80;

/**
 * One machine's part in a hub's swarm: finds peers for an image and adds them
 * to a mirror group as untrusted sources (reporting the ones that lie), and
 * shares this machine's cache of the images it runs.
 */
export class Swarm {
  readonly tracker: TrackerClient;
  private sharing?: { server: PeerHttpServer; catalog: ShareCatalog };
  /** Peers dropped for lying or dying: never added again by a later lookup. */
  private readonly dropped = new Set<string>();
  private readonly timers: NodeJS.Timeout[] = [];
  private rtc?: { close(): void };

  constructor(private readonly opts: SwarmOptions) {
    this.tracker = new TrackerClient(opts.hub, opts.log);
  }

  /** Peers of NAME@VERSION this machine may dial (tracker answer, checked). */
  async sources(name: string, version: string): Promise<Array<{ source: HttpPeerSource; lan: boolean }>> {
    const self = this.sharing ? { port: this.sharing.server.port } : undefined;
    const peers = await this.tracker.peers(`${name}@${version}`, { self, nets: localNets() });
    return peers.map((p) => ({ source: new HttpPeerSource(p.address, p.port), lan: p.lan }));
  }

  /**
   * Adds the image's peers to a mirror group; returns how many. The tracker
   * is asked again every `refreshMs` while the swarm is open, so peers that
   * start later (or at the same moment) join the group too.
   */
  async attach(group: MirrorGroup, name: string, version: string, refreshMs = 5000): Promise<number> {
    const add = async () => {
      const found = (await this.sources(name, version)).filter(({ source }) => !this.dropped.has(source.name));
      for (const { source, lan } of found) {
        group.addPeers([source], {
          latencyMs: lan ? LAN_LATENCY_MS : WAN_LATENCY_MS,
          lan,
          windowMs: this.opts.windowMs,
          onDropped: (reason, wrongBytes) => {
            this.dropped.add(source.name);
            if (wrongBytes) void this.tracker.report(source, reason);
          },
        });
      }
      return found.length;
    };
    const timer = setInterval(() => void add().catch(() => {}), refreshMs);
    timer.unref();
    this.timers.push(timer);
    return add();
  }

  /**
   * Signed manifest envelopes for NAME@VERSION from the peers (for when the
   * repository is unreachable); the caller verifies each against the keys it trusts.
   */
  async manifests(name: string, version: string): Promise<Array<{ source: string; envelope: Uint8Array }>> {
    const found = await this.sources(name, version);
    const offers = await Promise.all(
      found.slice(0, 8).map(async ({ source }) => {
        const envelope = await source.manifest(name, version, AbortSignal.timeout(5000)).catch(() => null);
        return envelope ? { source: source.name, envelope } : undefined;
      }),
    );
    return offers.filter((o): o is { source: string; envelope: Uint8Array } => o !== undefined);
  }

  /** Serves the cache's objects of `images` to other peers and announces them; returns the port. */
  async share(cache: CacheDir, images: SharedImage[], listen: PeerServerOptions = {}): Promise<number> {
    if (this.sharing) {
      this.sharing.catalog.setImages(images);
      return this.sharing.server.port;
    }
    const catalog = new ShareCatalog(cache, images);
    const server = new PeerHttpServer(catalog, { ...listen, log: this.opts.log });
    const port = await server.listen();
    this.sharing = { server, catalog };
    await this.tracker.share(port, () => catalog.keys).catch((err: unknown) => this.opts.log?.(`sharing on port ${port}, but the tracker at ${this.tracker.hub.origin} did not take the announce: ${errorMessage(err)}`));
    return port;
  }

  /**
   * Also trade over WebRTC data channels, signaled through the hub (browser
   * tabs and other Node peers): serves what share() shares, and with a group,
   * adds every opened channel to it as a LAN peer.
   */
  async joinRtc(image: string, options: { group?: MirrorGroup; maxMessage?: number } = {}): Promise<void> {
    const [{ RtcSwarm }, { nodeRtcEnvironment }] = await Promise.all([import('./rtc.js'), import('./node-rtc.js')]);
    const rtc = new RtcSwarm(await nodeRtcEnvironment(), {
      hub: this.opts.hub,
      codecs: nodeCodecs,
      image,
      serve: this.sharing?.catalog,
      maxMessage: options.maxMessage,
      onPeer: (peer) =>
        options.group?.addPeers([peer], {
          lan: true,
          latencyMs: LAN_LATENCY_MS,
          windowMs: this.opts.windowMs,
          // A member that served wrong bytes is reported through the signaling socket, as HTTP peers are to the tracker.
          onDropped: (reason, wrongBytes) => {
            if (wrongBytes) rtc.report(peer, reason);
          },
        }),
    });
    this.rtc = rtc;
    await rtc.start();
  }

  get shareStats(): PeerHttpServer['stats'] | undefined {
    return this.sharing?.server.stats;
  }

  async close(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    await this.tracker.stop(this.sharing?.server.port);
    await this.sharing?.server.close();
    if (this.rtc) {
      this.rtc.close();
      await (await import('./node-rtc.js')).closeNodeRtc();
    }
  }
}
