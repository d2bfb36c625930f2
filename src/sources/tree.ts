// Tree mode: every regular file below a root is a candidate, minus an exclude list. The walk
// reads folders through the no-symlink root access, never follows a symlink and never
// crosses into another filesystem (a mount inside a root).
import fsp from 'node:fs/promises';
import fs from 'node:fs';
import picomatch from 'picomatch';
import { RootDir, display, joinRel, type RelPath } from '../fsx/rootdir.js';
import { VunifyError } from '../errors.js';

/**
 * In the spirit of util-vserver's vhashify defaults: configuration, state, homes, pseudo
 * filesystems, and key material wherever it lives.
 */
export const DEFAULT_EXCLUDES = [
  '/etc', '/var', '/tmp', '/home', '/root', '/dev', '/proc', '/sys', '/mnt', '/media', '/srv',
  '/run', '/boot', '/lost+found',
  '.ssh', '.gnupg', 'ssh_host_*', '*.pem', '*.key',
];

export type Excluder = (rel: RelPath) => boolean;

/**
 * Patterns are matched against the path below the root. A pattern that starts with '/' is
 * anchored at the root; one without any '/' matches a name at any depth (like .gitignore).
 * A matched folder excludes everything below it.
 */
export function makeExcluder(patterns: string[]): Excluder {
  const anchored: string[] = [];
  const names: string[] = [];
  for (const raw of patterns) {
    const p = raw.trim().replace(/\/+$/, '');
    if (!p || p.startsWith('#')) continue;
    if (p.startsWith('/')) anchored.push(p.slice(1));
    else if (!p.includes('/')) names.push(p);
    else anchored.push(p);
  }
  const opts = { dot: true };
  const isAnchored = anchored.length ? picomatch(anchored, opts) : () => false;
  const isName = names.length ? picomatch(names, opts) : () => false;
  return (rel) => {
    const shown = display(rel);
    const base = shown.slice(shown.lastIndexOf('/') + 1);
    return isAnchored(shown) || isName(base);
  };
}

/** Patterns of an exclude file: one per line; blank lines and '#' comments are skipped. */
export function readExcludeFile(file: string): string[] {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  } catch (err) {
    throw new VunifyError('USAGE', `cannot read the exclude file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, file);
  }
}

/** What a walk saw besides files: the folders it read, and mount points it left alone. */
export interface WalkSeen { folders: Set<RelPath>; skipped: Set<RelPath> }

/** Every regular file below the root that is not excluded, sorted. */
export async function walkTree(root: RootDir, exclude: Excluder, concurrency = 16, seen?: WalkSeen): Promise<RelPath[]> {
  const files: RelPath[] = [];
  const queue: RelPath[] = [''];
  let active = 0;
  return new Promise((resolve, reject) => {
    let failed = false;
    const pump = () => {
      if (failed) return;
      if (queue.length === 0 && active === 0) { resolve(files.sort()); return; }
      while (active < concurrency && queue.length > 0) {
        const dir = queue.pop()!;
        active++;
        readDir(root, dir, exclude, files, queue, seen)
          .then(() => { active--; pump(); }, (err) => { failed = true; reject(err); });
      }
    };
    pump();
  });
}

async function readDir(root: RootDir, dir: RelPath, exclude: Excluder, files: RelPath[], queue: RelPath[], seen?: WalkSeen): Promise<void> {
  await root.withDir(dir, async (dfd) => {
    if (dir !== '' && fs.fstatSync(dfd, { bigint: true }).dev !== root.dev) {
      seen?.skipped.add(dir); // a mount point: another filesystem
      return;
    }
    seen?.folders.add(dir);
    const entries = await fsp.readdir(`/proc/self/fd/${dfd}`, { withFileTypes: true, encoding: 'buffer' });
    for (const e of entries) {
      const rel = joinRel(dir, (e.name as unknown as Buffer).toString('latin1'));
      if (exclude(rel)) continue;
      if (e.isDirectory()) queue.push(rel);
      else if (e.isFile()) files.push(rel);
      else if (!e.isSymbolicLink() && !e.isFIFO() && !e.isSocket() && !e.isCharacterDevice() && !e.isBlockDevice()) {
        // DT_UNKNOWN on some filesystems: ask lstat.
        const st = await root.lstat(rel).catch(() => null);
        if (st?.isDirectory()) queue.push(rel);
        else if (st?.isFile()) files.push(rel);
      }
    }
  }).catch((err) => {
    // A folder that vanished or turned into a symlink meanwhile: nothing to take from it.
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as { code?: string }).code === 'EUNSAFEPATH') return;
    throw err;
  });
}
