// Access to one vserver root that never follows a symlink below the root folder.
// Each folder is opened component by component with O_DIRECTORY|O_NOFOLLOW and then
// used through /proc/self/fd/N/name, so a folder swapped for a symlink during the run
// cannot redirect a read, link, rename or attribute change outside the root.
//
// Paths below a root are "binary strings": each char is one byte (latin1), so names
// that are not valid UTF-8 survive the round trip from the package database to disk.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { isErrno } from '../errors.js';
import { hasLstatAt, lstatAt, openDirAtOrThrow, type StatLite } from './sys.js';

// libuv adds O_CLOEXEC to every open.
const { O_RDONLY, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK, O_NOATIME } = fs.constants;
const DIR_FLAGS = O_RDONLY | O_DIRECTORY | O_NOFOLLOW;
const READ_FLAGS = O_RDONLY | O_NOFOLLOW | O_NONBLOCK;

/** A relative path below a root, one char per byte. */
export type RelPath = string;

export const toBytes = (p: RelPath): Buffer => Buffer.from(p, 'latin1');
/** For messages: bytes shown as UTF-8 (invalid sequences become U+FFFD). */
export const display = (p: RelPath): string => toBytes(p).toString('utf8');

export function splitRel(rel: RelPath): { dir: RelPath; name: string } {
  const i = rel.lastIndexOf('/');
  return i < 0 ? { dir: '', name: rel } : { dir: rel.slice(0, i), name: rel.slice(i + 1) };
}

/**
 * fn, keeping its result for the last key asked: for paths that come grouped by folder, each
 * folder's lookups are then made once for its run of files.
 */
export function lastKeyMemo<V>(fn: (key: string) => V): (key: string) => V {
  let last: string | null = null;
  let value!: V;
  return (key) => {
    if (key !== last) {
      last = key;
      value = fn(key);
    }
    return value;
  };
}

/** A path below a root is safe when it has no empty, '.' or '..' component. */
export function isSafeRel(rel: RelPath): boolean {
  if (rel === '' || rel.startsWith('/') || rel.includes('\0')) return false;
  return rel.split('/').every((c) => c !== '' && c !== '.' && c !== '..');
}

/** Thrown when a folder on the way to a file is a symlink or not a folder. */
export class UnsafePathError extends Error {
  readonly code = 'EUNSAFEPATH';
  constructor(readonly rel: RelPath, readonly component: RelPath) {
    super(`${display(component)} is a symlink or not a folder`);
  }
}

interface DirEntry { fd: number; refs: number }

export interface OpenedFile {
  fd: number;
  stat: fs.BigIntStats;
  close(): Promise<void>;
}

let noatimeAllowed = true;

/**
 * Folder fds all roots may keep open at once: a quarter of the process's fd limit, at most
 * 2,048. Each root keeps at most 512; a farm of 50 roots kept 512 each and ran out of fds.
 */
export function folderFdBudget(limitsText?: string): number {
  let limit = 1024;
  try {
    const m = /^Max open files\s+(\d+)/m.exec(limitsText ?? fs.readFileSync('/proc/self/limits', 'utf8'));
    if (m) limit = Number(m[1]);
  } catch { /* no /proc: the common default */ }
  return Math.max(64, Math.min(2048, Math.floor(limit / 4)));
}
let budget: number | undefined;
/** Open roots, least recently trimmed first; and their cached folder fds, all told. */
const live = new Set<RootDir>();
let cachedFds = 0;

export class RootDir {
  // Open folders by path, least recently used first. Opening is synchronous: a cached
  // metadata call is cheaper on the main thread than a trip through libuv's pool.
  private readonly dirs = new Map<RelPath, DirEntry>();
  private closed = false;

  private constructor(
    /** Absolute path of the root folder (as given, resolved once). */
    readonly path: string,
    readonly rootFd: number,
    readonly dev: bigint,
    private readonly maxDirs = 512,
  ) {}

  static async open(rootPath: string): Promise<RootDir> {
    const abs = await fsp.realpath(rootPath);
    const fd = fs.openSync(abs, DIR_FLAGS);
    const st = fs.fstatSync(fd, { bigint: true });
    const root = new RootDir(abs, fd, st.dev);
    live.add(root);
    return root;
  }

  /** The /proc path of `name` inside an open folder: resolves without following symlinks above it. */
  static at(dirFd: number, name: string): Buffer | string {
    // A plain ASCII name can go as a string (cheaper); any other byte must go as bytes.
    if (/^[\x20-\x7e]*$/.test(name)) return `/proc/self/fd/${dirFd}/${name}`;
    return Buffer.concat([Buffer.from(`/proc/self/fd/${dirFd}/`), Buffer.from(name, 'latin1')]);
  }

  /** Opens (or reuses) the folder `dir` and runs fn with its fd; the fd stays valid during fn. */
  async withDir<T>(dir: RelPath, fn: (dirFd: number) => Promise<T> | T): Promise<T> {
    if (dir === '') return fn(this.rootFd);
    const entry = this.acquire(dir, dir);
    try {
      return await fn(entry.fd);
    } finally {
      entry.refs--;
      this.trim();
    }
  }

  /** An open folder to hold across calls; release() it when done. */
  holdDir(dir: RelPath): { fd: number; release: () => void } {
    if (dir === '') return { fd: this.rootFd, release: () => {} };
    const e = this.acquire(dir, dir);
    let held = true;
    return { fd: e.fd, release: () => { if (held) { held = false; e.refs--; this.trim(); } } };
  }

  /** The same for synchronous work. */
  withDirSync<T>(dir: RelPath, fn: (dirFd: number) => T): T {
    if (dir === '') return fn(this.rootFd);
    const entry = this.acquire(dir, dir);
    try {
      return fn(entry.fd);
    } finally {
      entry.refs--;
      this.trim();
    }
  }

  private acquire(dir: RelPath, forRel: RelPath): DirEntry {
    if (this.closed) throw new Error('root closed');
    let e = this.dirs.get(dir);
    if (e) {
      this.dirs.delete(dir); // refresh the LRU position
    } else {
      const { dir: parent, name } = splitRel(dir);
      const open = (parentFd: number) => {
        try {
          // openat on the parent's fd: no lookup through /proc, which costs more than the open.
          return openDirAtOrThrow(parentFd, name);
        } catch (err) {
          if (isErrno(err, 'ELOOP', 'ENOTDIR')) throw new UnsafePathError(forRel, dir);
          throw err;
        }
      };
      let fd: number;
      if (parent === '') fd = open(this.rootFd);
      else {
        const pe = this.acquire(parent, forRel);
        try { fd = open(pe.fd); } finally { pe.refs--; }
      }
      e = { fd, refs: 0 };
      cachedFds++;
    }
    this.dirs.set(dir, e);
    e.refs++;
    return e;
  }

  private trim(): void {
    this.shed(this.maxDirs);
    budget ??= folderFdBudget();
    if (cachedFds <= budget) return;
    // Over the farm's budget: the roots used longest ago give up their folders first.
    live.delete(this);
    live.add(this);
    for (const r of live) {
      if (r !== this) r.shed(0, budget);
      if (cachedFds <= budget) return;
    }
    this.shed(0, budget);
  }

  /** Closes unused folders, least recently used first, down to `keep` here or `total` in all. */
  private shed(keep: number, total = -1): void {
    if (this.dirs.size <= keep) return;
    for (const [key, e] of this.dirs) {
      if (this.dirs.size <= keep || cachedFds <= total) break;
      if (e.refs === 0) {
        this.dirs.delete(key);
        cachedFds--;
        fs.closeSync(e.fd);
      }
    }
  }

  /** lstat without following a symlink anywhere below the root; null when it does not exist. */
  lstatSync(rel: RelPath): fs.BigIntStats | null {
    const { dir, name } = splitRel(rel);
    return this.withDirSync(dir, (dfd) => lstatOrNull(RootDir.at(dfd, name)));
  }

  /** lstat of a path below the root; null when it does not exist. */
  async lstat(rel: RelPath): Promise<fs.BigIntStats | null> {
    return this.lstatSync(rel);
  }

  /** Opens a regular file for reading without following a symlink, atime untouched. */
  async openFile(rel: RelPath): Promise<OpenedFile> {
    const { dir, name } = splitRel(rel);
    return this.withDir(dir, (dfd) => openFileAtSync(dfd, name));
  }

  async close(): Promise<void> {
    this.closed = true;
    live.delete(this);
    for (const e of this.dirs.values()) {
      cachedFds--;
      try { fs.closeSync(e.fd); } catch { /* already closed */ }
    }
    this.dirs.clear();
    fs.closeSync(this.rootFd);
  }
}

/**
 * Opens a regular file for reading, without following a symlink, atime untouched.
 * Synchronous: the scan has just stat'ed these files, so the open costs no disk access,
 * and a FileHandle's promise machinery costs more than the call.
 */
export function openFileAtSync(dirFd: number, name: string): OpenedFile {
  const p = RootDir.at(dirFd, name);
  let fd: number;
  try {
    fd = fs.openSync(p, READ_FLAGS | (noatimeAllowed ? O_NOATIME : 0));
  } catch (err) {
    // O_NOATIME needs ownership or CAP_FOWNER; without it, read the normal way.
    if (!isErrno(err, 'EPERM') || !noatimeAllowed) throw err;
    noatimeAllowed = false;
    fd = fs.openSync(p, READ_FLAGS);
  }
  try {
    const stat = fs.fstatSync(fd, { bigint: true });
    if (!stat.isFile()) {
      const err = new Error(`not a regular file`) as NodeJS.ErrnoException;
      err.code = 'ENOTREG';
      throw err;
    }
    let open = true;
    return { fd, stat, close: async () => { if (open) { open = false; fs.closeSync(fd); } } };
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/** lstat of a name in an open folder (fstatat where the stat layout is known); null when it does not exist. */
export function lstatIn(dirFd: number, name: string): StatLite | null {
  return hasLstatAt ? lstatAt(dirFd, name) : lstatOrNull(RootDir.at(dirFd, name));
}

/** lstat that says null for a name that does not exist. */
export function lstatOrNull(p: Buffer | string): fs.BigIntStats | null {
  try {
    return fs.lstatSync(p, { bigint: true });
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return null;
    throw err;
  }
}

export const joinRel = (...parts: RelPath[]): RelPath => parts.filter(Boolean).join('/');
