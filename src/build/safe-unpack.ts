/**
 * Unpacks a tar stream into a root directory without ever writing outside it:
 * entries with absolute paths or ".." components are refused, relative
 * symlinks and hard links that point above the root are refused, and every
 * path is resolved inside the root as if it were "/" (a symlink already in
 * the tree, absolute or relative, is followed within the root, never on the
 * host). Modes are kept; ownership is applied with lchown when running as
 * root and recorded in `owners` either way (the ext4 step applies it with
 * debugfs, so non-root builds get the right owners too).
 */
import { createWriteStream } from 'node:fs';
import { chmod, link, lchown, lstat, mkdir, readlink, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { HostmeError } from '../errors.js';

export interface Ownership {
  uid: number;
  gid: number;
  /** Permission bits for the image when the host copy differs (non-root builds keep host copies owner-writable). */
  mode?: number;
}

export interface UnpackResult {
  entries: number;
  skipped: string[];
}

const isRoot = process.getuid?.() === 0;

function unsafe(entry: string, why: string, source: string): HostmeError {
  return new HostmeError('unsafe-archive', `${source}: refusing entry "${entry}": ${why}`, { source, entry, reason: why });
}

/** "./a//b/" → ["a","b"]; throws on absolute paths and "..". */
export function entryComponents(name: string, source: string): string[] {
  if (name.startsWith('/')) throw unsafe(name, 'absolute path', source);
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw unsafe(name, '".." component', source);
  return parts;
}

/**
 * Resolves `parts` inside `root` following symlinks found in the tree with
 * `root` as "/"; the last component is not followed when `followLast` is
 * false. Returns the host path. Throws if a relative link climbs above the root.
 */
export async function resolveInRoot(root: string, parts: readonly string[], followLast: boolean, source = root): Promise<string> {
  const stack: string[] = [];
  const todo = [...parts];
  let hops = 0;
  while (todo.length) {
    const part = todo.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (!stack.length) throw unsafe(parts.join('/'), 'resolves above the root', source);
      stack.pop();
      continue;
    }
    const host = path.join(root, ...stack, part);
    const info = await lstat(host).catch(() => null);
    if (info?.isSymbolicLink() && (todo.length > 0 || followLast)) {
      if (++hops > 40) throw unsafe(parts.join('/'), 'too many levels of symbolic links', source);
      const target = await readlink(host);
      if (target.startsWith('/')) stack.length = 0;
      todo.unshift(...target.split('/'));
      continue;
    }
    stack.push(part);
  }
  return path.join(root, ...stack);
}

async function removeNonDir(file: string): Promise<void> {
  const info = await lstat(file).catch(() => null);
  if (info && !info.isDirectory()) await rm(file, { force: true });
}

/**
 * Extracts `input` (an uncompressed tar stream) into `root`.
 * `owners` collects "/path" → uid/gid of every entry.
 */
export async function unpackTar(input: Readable, root: string, source: string, owners: Map<string, Ownership>): Promise<UnpackResult> {
  const extract = tar.extract();
  const result: UnpackResult = { entries: 0, skipped: [] };
  // Directory modes are applied last, so a read-only directory does not block its own entries.
  const dirModes: Array<[string, number]> = [];
  const work = (async () => {
    for await (const entry of extract) {
      const h = entry.header;
      try {
        const parts = entryComponents(h.name, source);
        if (parts.length === 0) {
          if (h.type === 'directory') owners.set('/', { uid: h.uid ?? 0, gid: h.gid ?? 0 });
          entry.resume();
          continue;
        }
        const parent = await resolveInRoot(root, parts.slice(0, -1), true, source);
        await mkdir(parent, { recursive: true });
        const dest = path.join(parent, parts[parts.length - 1]!);
        const mode = (h.mode ?? 0o644) & 0o7777;
        switch (h.type) {
          case 'directory': {
            const info = await lstat(dest).catch(() => null);
            if (info && !info.isDirectory()) await rm(dest, { force: true });
            if (!info?.isDirectory()) await mkdir(dest);
            break;
          }
          case 'file':
          case 'contiguous-file':
          case undefined:
          case null:
            await removeNonDir(dest);
            await pipeline(entry, createWriteStream(dest, { flags: 'wx', mode: 0o600 }));
            break;
          case 'symlink': {
            const target = h.linkname ?? '';
            if (!target.startsWith('/')) {
              // A relative target must stay inside the root (counted from the link's directory).
              let depth = parts.length - 1;
              for (const p of target.split('/')) {
                if (p === '..') depth--;
                else if (p !== '' && p !== '.') depth++;
                if (depth < 0) throw unsafe(h.name, `symlink target "${target}" points outside the root`, source);
              }
            }
            await removeNonDir(dest);
            await symlink(target, dest);
            break;
          }
          case 'link': {
            const targetParts = entryComponents(h.linkname ?? '', source);
            const target = await resolveInRoot(root, targetParts, false, source);
            const info = await lstat(target).catch(() => null);
            if (!info || info.isDirectory()) throw unsafe(h.name, `hard link target "${h.linkname}" is not a file in the root`, source);
            await removeNonDir(dest);
            await link(target, dest);
            break;
          }
          default:
            // Device nodes and fifos: not created (the guest's devtmpfs provides /dev).
            result.skipped.push(`${h.name} (${h.type})`);
            entry.resume();
            continue;
        }
        entry.resume();
        const owner: Ownership = { uid: h.uid ?? 0, gid: h.gid ?? 0 };
        // Not root: the host copy stays readable/writable by us (mke2fs must read it, cleanup must delete it);
        // the real mode is recorded and set in the image with debugfs.
        const hostMode = isRoot || h.type === 'symlink' ? mode : mode | (h.type === 'directory' ? 0o700 : 0o600);
        if (hostMode !== mode) owner.mode = mode;
        owners.set('/' + path.relative(root, dest).split(path.sep).join('/'), owner);
        if (isRoot) await lchown(dest, owner.uid, owner.gid);
        if (h.type === 'directory') dirModes.push([dest, hostMode]);
        else if (h.type !== 'symlink') await chmod(dest, hostMode);
        result.entries++;
      } catch (err) {
        entry.resume();
        throw err;
      }
    }
  })();
  try {
    await Promise.all([pipeline(input, extract), work]);
  } catch (err) {
    input.destroy();
    extract.destroy();
    await work.catch(() => {});
    throw err;
  }
  for (const [dir, mode] of dirModes.reverse()) await chmod(dir, mode);
  return result;
}
