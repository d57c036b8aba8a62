import { HostNode } from '../host/node.js';
import { parseImageLink } from '../runner/link.js';
import { nodeKeyText } from './tunnel-protocol.js';
import type { HubFallback } from './hub.js';

/**
 * `hostme serve --hub --fallback`: when no visitor hosts a site, the hub
 * boots it itself with the same node code a visitor runs (`HostNode`,
 * in-process, its own home under the hub's state), which dials the hub's
 * own tunnel endpoint like any node. The hub prefers visitors' nodes, so
 * the fallback only serves while none is ready.
 */
export class HubFallbackNode implements HubFallback {
  readonly keyText: string;
  private readonly node: HostNode;
  private hubUrl?: string;

  constructor(home: string, log: (line: string) => void) {
    this.node = new HostNode({ home, log: (line) => log(`hub fallback: ${line}`) });
    // Sites the fallback hosted before a restart are booted again only when asked for.
    for (const entry of this.node.store.list()) this.node.store.remove(entry.name);
    this.keyText = nodeKeyText(this.node.home.publicKey);
  }

  get nodeId(): string {
    return this.node.nodeId;
  }

  /** Starts the node once the hub listens (its URL is where the node dials and fetches images). */
  attach(hubUrl: string): void {
    this.hubUrl = hubUrl;
    this.node.start();
  }

  start(site: string): void {
    if (!this.hubUrl || this.node.store.get(site)) return;
    const link = parseImageLink(`${this.hubUrl}/i/${site}`);
    this.node.add({ name: site, repo: link.repo, image: link.name, hub: new URL(this.hubUrl).origin, guestPort: 80 });
  }

  status() {
    return this.node.status();
  }

  stop(): Promise<void> {
    return this.node.stop();
  }
}
