import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * What the hub keeps across restarts: the nodes it has seen and the invite
 * tokens publishers issued. Live sessions are in memory only. A hub that
 * scales past one machine puts this behind a shared database (docs/host.md).
 */
export interface HubStore {
  nodeSeen(keyText: string, sites: string[]): void;
  /** Issues a token that lets one node (the first to use it) host the site. */
  createInvite(site: string, token: string): void;
  /** True if the token is for this site and unused or already bound to this node (then it is bound). */
  inviteValid(site: string, token: string, keyText: string): boolean;
  close(): void;
}

export class SqliteHubStore implements HubStore {
  private readonly db: Database.Database;

  /** file ':memory:' keeps nothing. */
  constructor(file: string) {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS nodes (key TEXT PRIMARY KEY, sites TEXT NOT NULL, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS invites (token TEXT PRIMARY KEY, site TEXT NOT NULL, node TEXT);
    `);
  }

  nodeSeen(keyText: string, sites: string[]): void {
    const now = new Date().toISOString();
    this.db
      .prepare('INSERT INTO nodes (key, sites, first_seen, last_seen) VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET sites = excluded.sites, last_seen = excluded.last_seen')
      .run(keyText, JSON.stringify(sites), now, now);
  }

  createInvite(site: string, token: string): void {
    this.db.prepare('INSERT OR IGNORE INTO invites (token, site) VALUES (?, ?)').run(token, site);
  }

  inviteValid(site: string, token: string, keyText: string): boolean {
    const row = this.db.prepare('SELECT site, node FROM invites WHERE token = ?').get(token) as { site: string; node: string | null } | undefined;
    if (!row || row.site !== site) return false;
    if (row.node === null) {
      this.db.prepare('UPDATE invites SET node = ? WHERE token = ? AND node IS NULL').run(keyText, token);
      return true;
    }
    return row.node === keyText;
  }

  close(): void {
    this.db.close();
  }
}
