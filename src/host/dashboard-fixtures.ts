/**
 * What the dashboard and LAN tests share: a published web site behind a repo
 * server, a HostNode that boots nothing (maxVms 0) in its own temporary home,
 * its dashboard listening on loopback, and raw HTTP requests (fetch cannot set
 * Host, Origin or Sec-Fetch-Site freely).
 */
import { request } from 'node:http';
import { join } from 'node:path';
import { startRepoServer, type RunningRepoServer } from '../server/server.js';
import { publishedWebSite } from '../testing/web-site.js';
import { removeDir, tempDir } from '../testing/fixtures.js';
import { HostNode } from './node.js';
import { Dashboard } from './dashboard.js';

export interface DashboardFixture {
  dir: string;
  repo: RunningRepoServer;
  node: HostNode;
  dashboard: Dashboard;
  /** The dashboard's loopback URL. */
  url: string;
  close(): Promise<void>;
}

/** Starts the set-up; `beforeStart` runs once the dashboard listens and before the node starts (e.g. a LAN listener). */
export async function startDashboardFixture(prefix: string, beforeStart?: (fixture: DashboardFixture) => Promise<void>): Promise<DashboardFixture> {
  const dir = await tempDir(prefix);
  const repo = await startRepoServer({ repoDir: (await publishedWebSite()).repoDir });
  const node = new HostNode({ home: join(dir, 'home'), limits: { maxVms: 0 }, log: () => {} });
  const dashboard = new Dashboard(node);
  const fixture: DashboardFixture = {
    dir,
    repo,
    node,
    dashboard,
    url: await dashboard.listen(0),
    async close() {
      await dashboard.close();
      await node.stop();
      await repo.close();
      await removeDir(dir);
    },
  };
  await beforeStart?.(fixture);
  node.start();
  return fixture;
}

export interface RawResponse {
  status: number;
  headers: Record<string, unknown>;
  body: string;
}

/** One HTTP request with exactly these headers. */
export function rawRequest(base: string, method: string, path: string, headers: Record<string, string>, body = ''): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(`${base}${path}`, { method, headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}
