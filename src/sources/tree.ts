// Tree mode: every regular file below a root is a candidate, minus an exclude list. The walk
// reads folders through the no-symlink root access, never follows a symlink and never
// crosses into another filesystem (a mount inside a root).
import fs from 'node:fs';
import picomatch from 'picomatch';
import { RootDir, UnsafePathError, display, type RelPath } from '../fsx/rootdir.js';
import { DT_DIR, DT_REG, DT_UNKNOWN, forEachDirent, listingDigest, readDirents } from '../fsx/sys.js';
import { VunifyError, isErrno } from '../errors.js';
import { TMP_PREFIX } from '../store/names.js';

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
  if (anchored.length === 0 && names.length === 0) return () => false;
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

/** The start of every temporary name vunify makes in a server's folder (apply.ts). */
export { TMP_PREFIX };

/** What a walk saw besides files: the folders it read, and mount points it left alone. */
export interface WalkSeen {
  folders: Set<RelPath>;
  skipped: Set<RelPath>;
  /**
   * A digest of each folder's getdents records as the walk read them: the quick-rescan
   * capture reads the folder again and takes it only if it is what the walk saw (the
   * listings themselves cost ~55 bytes a file to keep: 55 MB at 1,000,000 files).
   */
  digests?: Map<RelPath, string>;
}

/**
 * Every regular file below the root that is not excluded, sorted. Folders are listed with
 * getdents on the main thread: one call per folder, names and types at once, no trip
 * through libuv's pool. `listed` holds listings read moments ago by the quick-rescan survey
 * (same no-symlink opens; mounts unchanged since the last run, which walked these folders).
 */
export async function walkTree(root: RootDir, exclude: Excluder, seen?: WalkSeen, listed?: Map<RelPath, Buffer>): Promise<RelPath[]> {
  const files: RelPath[] = [];
  const queue: RelPath[] = [''];
  while (queue.length > 0) {
    const dir = queue.pop()!;
    const known = listed?.get(dir);
    if (known) {
      takeListing(root, known, dir, exclude, files, queue, seen);
      continue;
    }
    try {
      root.withDirSync(dir, (dfd) => readDir(root, dfd, dir, exclude, files, queue, seen));
    } catch (err) {
      // A folder that vanished or turned into a symlink meanwhile: nothing to take from it.
      if (isErrno(err, 'ENOENT') || err instanceof UnsafePathError) continue;
      throw err;
    }
  }
  return files.sort();
}

function readDir(root: RootDir, dfd: number, dir: RelPath, exclude: Excluder, files: RelPath[], queue: RelPath[], seen?: WalkSeen): void {
  if (dir !== '' && fs.fstatSync(dfd, { bigint: true }).dev !== root.dev) {
    seen?.skipped.add(dir); // a mount point: another filesystem
    return;
  }
  const dents = readDirents(dfd);
  if (!dents) throw new VunifyError('IO', 'cannot list the folder', display(`${root.path}/${dir}`));
  takeListing(root, dents, dir, exclude, files, queue, seen);
}

/** A folder's listing: its files and subfolders. */
function takeListing(root: RootDir, dents: Buffer, dir: RelPath, exclude: Excluder, files: RelPath[], queue: RelPath[], seen?: WalkSeen): void {
  seen?.folders.add(dir);
  seen?.digests?.set(dir, listingDigest(dents));
  forEachDirent(dents, (_ino, type, nameOff, nameEnd) => {
    const name = dents.toString('latin1', nameOff, nameEnd);
    // vunify's own temporary names (a run under way, or one a read-only remount left) are never candidates.
    if (name.startsWith(TMP_PREFIX)) return true;
    const rel = dir === '' ? name : `${dir}/${name}`;
    if (exclude(rel)) return true;
    if (type === DT_DIR) queue.push(rel);
    else if (type === DT_REG) files.push(rel);
    else if (type === DT_UNKNOWN) {
      // Some filesystems give no type: ask lstat.
      const st = root.lstatSync(rel);
      if (st?.isDirectory()) queue.push(rel);
      else if (st?.isFile()) files.push(rel);
    }
    return true;
  });
}
