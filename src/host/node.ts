import { HostmeError } from '../errors.js';
import { openNodeHome, type NodeHome } from './node-home.js';
import { SiteVm, type SiteVmStatus } from './site-vm.js';
import { SqliteSiteStore, type SiteEntry, type SiteStore } from './site-store.js';
import { TunnelClient } from './tunnel-client.js';
import { CacheBudget } from './cache-budget.js';
import { nodeIdOf, nodeKeyText } from '../hub/tunnel-protocol.js';

export interface NodeLimits {
  /** Site VMs running at once (default 4). */
  maxVms: number;
  /** Sum of the running VMs' memory in MiB (default 4096). */
  maxMemoryMiB: number;
  /** Sites in the list (default 32). */
  maxSites: number;
  /** Disk the node's cache may take, MiB (default 10240): chunks, decoded copies and the sites' overlays. */
  maxCacheMiB: number;
}

export const DEFAULT_LIMITS: NodeLimits = { maxVms: 4, maxMemoryMiB: 4096, maxSites: 32, maxCacheMiB: 10240 };
/** How often the node re-reads its site list (`hostme host add` from another process). */
const RECONCILE_MS = 1000;

/**
 * `hostme host`: the site list, one supervised VM per enabled site, and one
 * tunnel per hub announcing the sites this node serves through it.
 */
export class HostNode {
  readonly home: NodeHome;
  readonly store: SiteStore;
  private readonly vms = new Map<string, SiteVm>();
  private readonly tunnels = new Map<string, TunnelClient>();
  private timer?: NodeJS.Timeout;
  private stopped = false;

  /** Site VMs get a VGA adapter, shown on the dashboard (hostme host --vga). */
  readonly vga: boolean;

  constructor(options: { home?: string; limits?: Partial<NodeLimits>; log?: (line: string) => void; vga?: boolean }) {
    this.vga = options.vga ?? false;
    this.home = openNodeHome(options.home);
    this.store = new SqliteSiteStore(this.home.dbFile);
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    this.cache = new CacheBudget(this.home.cacheDir, this.limits.maxCacheMiB * 1024 * 1024);
    this.log = options.log ?? ((line) => process.stderr.write(`hostme host: ${line}\n`));
  }

  readonly limits: NodeLimits;
  readonly cache: CacheBudget;
  readonly log: (line: string) => void;

  get nodeId(): string {
    return nodeIdOf(nodeKeyText(this.home.publicKey));
  }

  start(): void {
    this.reconcile();
    this.timer = setInterval(() => this.reconcile(), RECONCILE_MS);
  }

  /** Adds a site (limits checked) and starts it. */
  add(entry: Omit<SiteEntry, 'added' | 'enabled'>): SiteEntry {
    if (!this.store.get(entry.name) && this.store.list().length >= this.limits.maxSites) {
      throw new HostmeError('node-limit', `this node already hosts ${this.limits.maxSites} sites (its limit); remove one first`);
    }
    const added = this.store.add(entry);
    this.reconcile();
    return added;
  }

  setEnabled(name: string, enabled: boolean): void {
    this.store.setEnabled(name, enabled);
    this.reconcile();
  }

  async remove(name: string): Promise<boolean> {
    const removed = this.store.remove(name);
    const vm = this.vms.get(name);
    if (vm) {
      this.vms.delete(name);
      await vm.stop();
    }
    this.reconcile();
    return removed;
  }

  status(): Array<SiteVmStatus & { hub: string; repo: string; image: string; enabled: boolean; hubConnected: boolean }> {
    return this.store.list().map((entry) => {
      const vm = this.vms.get(entry.name);
      const tunnel = this.tunnels.get(entry.hub);
      const status = vm?.status() ?? { name: entry.name, state: 'stopped' as const, uptimeMs: 0, restarts: 0, requests: 0, bytesFetched: 0, bytesFromCache: 0, screen: false };
      return { ...status, hub: entry.hub, repo: entry.repo, image: entry.image, enabled: entry.enabled, hubConnected: Boolean(tunnel?.connected && tunnel.admitted.includes(entry.name)) };
    });
  }

  vm(name: string): SiteVm | undefined {
    return this.vms.get(name);
  }

  /** SIGTERM: stop every VM cleanly, close the tunnels. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    for (const t of this.tunnels.values()) t.close();
    await Promise.all([...this.vms.values()].map((vm) => vm.stop()));
    this.store.close();
  }

  /** Brings VMs and tunnels in line with the stored site list. */
  private reconcile(): void {
    if (this.stopped) return;
    const entries = this.store.list();
    const wanted = new Map(entries.filter((e) => e.enabled).map((e) => [e.name, e]));
    for (const [name, vm] of this.vms) {
      if (!wanted.has(name)) {
        this.vms.delete(name);
        void vm.stop();
      }
    }
    for (const entry of wanted.values()) {
      let vm = this.vms.get(entry.name);
      if (!vm) {
        if (this.vms.size >= this.limits.maxVms) continue;
        vm = new SiteVm(entry, { cacheDir: this.home.cacheDir, log: this.log, admitMemory: (me, mib) => this.admitMemory(me, mib), admitCache: () => this.cache.refuse(0, 'not started'), vga: this.vga });
        this.vms.set(entry.name, vm);
      }
      vm.entry = entry;
      vm.start();
    }
    const hubs = new Map<string, SiteEntry[]>();
    for (const entry of wanted.values()) hubs.set(entry.hub, [...(hubs.get(entry.hub) ?? []), entry]);
    for (const [hub, tunnel] of this.tunnels) {
      if (!hubs.has(hub)) {
        tunnel.close();
        this.tunnels.delete(hub);
      }
    }
    for (const [hub, sites] of hubs) {
      let tunnel = this.tunnels.get(hub);
      if (!tunnel) {
        tunnel = new TunnelClient(hub, this.home, {
          portOf: (site) => {
            const vm = this.vms.get(site);
            return vm?.ready && vm.entry.hub === hub ? vm.port : undefined;
          },
          ready: () => [...this.vms.values()].filter((v) => v.ready && v.entry.hub === hub).map((v) => v.entry.name),
          counted: (site) => {
            const vm = this.vms.get(site);
            if (vm) vm.requests++;
          },
        }, this.log);
        this.tunnels.set(hub, tunnel);
      }
      tunnel.update(sites.map((s) => (s.invite ? { site: s.name, invite: s.invite } : { site: s.name })));
    }
  }

  private admitMemory(me: SiteVm, memoryMiB: number): string | undefined {
    const others = [...this.vms.values()].filter((v) => v !== me).reduce((sum, v) => sum + (v.memoryMiB ?? 0), 0);
    if (others + memoryMiB > this.limits.maxMemoryMiB) return `not started: ${memoryMiB} MiB more would exceed this node's memory limit (${this.limits.maxMemoryMiB} MiB, ${others} MiB in use)`;
    return undefined;
  }
}
