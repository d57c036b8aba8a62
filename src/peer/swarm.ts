import { nodeCodecs } from '../format/node/codecs.js';
import { errorMessage } from '../errors.js';
import type { MirrorGroup } from '../store/mirror-group.js';
import type { FetchScheduler } from '../store/fetch-scheduler.js';
import { SwarmPlan } from '../store/swarm-plan.js';
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

/** A member's key in the swarm's plan: its address as the tracker saw it, and its port; the same on every node. */
function memberKey(address: string, port: number): string {
  return `${address}:${port}`;
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
  /** Asks the tracker again now (set by attach()). */
  private lookAgain?: () => Promise<number>;

  constructor(private readonly opts: SwarmOptions) {
    this.tracker = new TrackerClient(opts.hub, opts.log);
  }

  /** Peers of NAME@VERSION this machine may dial (tracker answer, checked). */
  async sources(name: string, version: string): Promise<Array<{ source: HttpPeerSource; lan: boolean; member: string }>> {
    const self = this.sharing ? { port: this.sharing.server.port } : undefined;
    const peers = await this.tracker.peers(`${name}@${version}`, { self, nets: localNets() });
    return peers.map((p) => ({ source: new HttpPeerSource(p.address, p.port), lan: p.lan, member: memberKey(p.address, p.port) }));
  }

  /**
   * Adds the image's peers to a mirror group; returns how many. The tracker
   * is asked again every `refreshMs` while the swarm is open, so peers that
   * start later (or at the same moment) join the group too.
   */
  async attach(group: MirrorGroup, name: string, version: string, refreshMs = 5000): Promise<number> {
    const add = async () => {
      const found = (await this.sources(name, version)).filter(({ source }) => !this.dropped.has(source.name));
      for (const { source, lan, member } of found) {
        group.addPeers([source], {
          latencyMs: lan ? LAN_LATENCY_MS : WAN_LATENCY_MS,
          lan,
          member,
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
    this.lookAgain = add;
    return add();
  }

  /**
   * Nodes that start together fetch each object from the origin about once
   * (docs/peers.md "Flash crowd"): the group asks an object's owner first and
   * lets it hold the request while it fetches; the scheduler fetches what this
   * machine owns first; the peer server holds requests for those while they
   * are queued or in flight here, and fetches one that is not (yet) wanted here. Call after share() (this machine is a member
   * only when it serves) and after attach().
   */
  coordinate(group: MirrorGroup, scheduler: FetchScheduler): SwarmPlan {
    const self = this.sharing && this.tracker.seenAs ? memberKey(this.tracker.seenAs, this.sharing.server.port) : undefined;
    const plan = new SwarmPlan(self);
    group.setPlan(plan);
    scheduler.preferFirst = (id) => group.assignedHere(id);
    // Only objects this machine owns: one that waits on another owner itself would make a cycle. A member that
    // asks before this machine queued the object (it started a moment later) gets it fetched now, not a duplicate.
    if (this.sharing) {
      this.sharing.catalog.fetchForSwarm = (id, length) => {
        if (!group.assignedHere(id)) return undefined;
        return scheduler.inFlight(id) ?? (length === undefined ? undefined : scheduler.get({ id, length }, { priority: 'prefetch' }));
      };
    }
    // Members that announced while this one resolved its image (nodes started together) join the plan now, not at the next refresh.
    void this.lookAgain?.().catch(() => {});
    return plan;
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
