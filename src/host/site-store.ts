import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { HostmeError } from '../errors.js';
import { SITE_NAME } from '../hub/tunnel-protocol.js';

/** One hosted site: which image to boot and which hub to serve it through. */
export interface SiteEntry {
  /** The site's name at its hub (= the image name). */
  name: string;
  /** Repository URL (or directory) the image comes from. */
  repo: string;
  image: string;
  /** Base URL of the hub the node registers with. */
  hub: string;
  /** Guest TCP port the site's server listens on (default 80). */
  guestPort: number;
  /** Invite token for hubs where hosting is by invitation. */
  invite?: string;
  /** false: stopped by the user; kept in the list. */
  enabled: boolean;
  added: string;
}

/** The node's persisted site list (SQLite by default). */
export interface SiteStore {
  list(): SiteEntry[];
  get(name: string): SiteEntry | undefined;
  add(entry: Omit<SiteEntry, 'added' | 'enabled'>): SiteEntry;
  setEnabled(name: string, enabled: boolean): void;
  remove(name: string): boolean;
  close(): void;
}

interface Row {
  name: string;
  repo: string;
  image: string;
  hub: string;
  guest_port: number;
  invite: string | null;
  enabled: number;
  added: string;
}

export class SqliteSiteStore implements SiteStore {
  private readonly db: Database.Database;

  constructor(file: string) {
    mkdirSync(dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    // Two processes (the node and `hostme host add`) may write at once.
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(`CREATE TABLE IF NOT EXISTS sites (
      name TEXT PRIMARY KEY, repo TEXT NOT NULL, image TEXT NOT NULL, hub TEXT NOT NULL,
      guest_port INTEGER NOT NULL, invite TEXT, enabled INTEGER NOT NULL DEFAULT 1, added TEXT NOT NULL)`);
  }

  list(): SiteEntry[] {
    return (this.db.prepare('SELECT * FROM sites ORDER BY name').all() as Row[]).map(toEntry);
  }

  get(name: string): SiteEntry | undefined {
    const row = this.db.prepare('SELECT * FROM sites WHERE name = ?').get(name) as Row | undefined;
    return row ? toEntry(row) : undefined;
  }

  add(entry: Omit<SiteEntry, 'added' | 'enabled'>): SiteEntry {
    if (!SITE_NAME.test(entry.name)) throw new HostmeError('usage', `"${entry.name}" is not a valid site name (lowercase letters, digits and dashes)`);
    if (!Number.isInteger(entry.guestPort) || entry.guestPort < 1 || entry.guestPort > 65535) throw new HostmeError('usage', `guest port ${entry.guestPort} is not in 1..65535`);
    const existing = this.get(entry.name);
    if (existing && (existing.hub !== entry.hub || existing.repo !== entry.repo)) {
      throw new HostmeError('site-exists', `this node already hosts a site named "${entry.name}" from ${existing.hub}; remove it first (hostme host rm ${entry.name})`);
    }
    const added = existing?.added ?? new Date().toISOString();
    this.db
      .prepare('INSERT INTO sites (name, repo, image, hub, guest_port, invite, enabled, added) VALUES (?, ?, ?, ?, ?, ?, 1, ?) ON CONFLICT(name) DO UPDATE SET image = excluded.image, guest_port = excluded.guest_port, invite = excluded.invite, enabled = 1')
      .run(entry.name, entry.repo, entry.image, entry.hub, entry.guestPort, entry.invite ?? null, added);
    return this.get(entry.name)!;
  }

  setEnabled(name: string, enabled: boolean): void {
    const { changes } = this.db.prepare('UPDATE sites SET enabled = ? WHERE name = ?').run(enabled ? 1 : 0, name);
    if (changes === 0) throw new HostmeError('site-not-found', `this node hosts no site named "${name}"`);
  }

  remove(name: string): boolean {
    return this.db.prepare('DELETE FROM sites WHERE name = ?').run(name).changes > 0;
  }

  close(): void {
    this.db.close();
  }
}

function toEntry(row: Row): SiteEntry {
  return {
    name: row.name,
    repo: row.repo,
    image: row.image,
    hub: row.hub,
    guestPort: row.guest_port,
    ...(row.invite ? { invite: row.invite } : {}),
    enabled: row.enabled === 1,
    added: row.added,
  };
}
