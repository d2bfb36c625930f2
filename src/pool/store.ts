// The pool (--pool): a host-only folder of canonical copies, one per content and metadata,
// named by content hash. Servers that hold a file the reference lacks are linked to its pool
// copy. The pool sits outside every root, so no tenant can reach a pool name by any path.
// Layout: POOL/HH/HASH-META, where HH is the hash's first two hex digits and META a short
// digest of mode, owner, mtime and xattrs (one content may need copies with other metadata).
// Temporary copies are written at POOL's top level, so a run's start finds them with one readdir.
import fs from 'node:fs';
import { VunifyError, isErrno, oneLine } from '../errors.js';
import { copyFd, hashFd } from '../fsx/content.js';
import { RootDir, splitRel, type RelPath } from '../fsx/rootdir.js';
import { readXattrs, setImmutable, syncFilesystem } from '../fsx/sys.js';
import { KEPT_FLAGS, flagsOf, setMetadata } from '../apply.js';
import { recordOf, xattrDigest } from '../scan.js';
import { TMP_PREFIX } from '../sources/tree.js';
import type { FileRecord, Index } from '../store/index-db.js';
import { beforePoolCopy, faultPoint } from '../fault.js';

export { POOL_DIR_NAME, poolDirOf } from '../paths.js';

export { entryName, hashOfEntry } from './names.js';
import { hashOfEntry } from './names.js';

/**
 * Opens the pool folder. With create, makes it (mode 0700) when missing; its parent must
 * exist. A symlink or anything but a folder is refused.
 */
export async function openPool(dir: string, create: boolean): Promise<RootDir | null> {
  let st: fs.Stats | null = null;
  try { st = fs.lstatSync(dir); } catch (err) { if (!isErrno(err, 'ENOENT')) throw new VunifyError('BAD_POOL', oneLine(err), dir); }
  if (!st) {
    if (!create) return null;
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      throw new VunifyError('BAD_POOL', `cannot make the pool folder: ${oneLine(err)}`, dir);
    }
  } else if (!st.isDirectory()) {
    throw new VunifyError('BAD_POOL', st.isSymbolicLink() ? 'is a symlink; the pool must be a real folder' : 'is not a folder', dir);
  } else if (st.uid !== process.geteuid?.() || (st.mode & 0o077) !== 0) {
    // Entries carry the tenants' owners and modes: no other host user may reach them.
    throw new VunifyError('BAD_POOL', `must belong to vunify's user and be reachable by no one else (mode ${(st.mode & 0o777).toString(8)}, owner ${st.uid}; chmod 700)`, dir);
  }
  return RootDir.open(dir);
}

/** lstat of an entry; null when it or its folder does not exist. */
export function entryStat(pool: RootDir, rel: RelPath): fs.BigIntStats | null {
  try {
    return pool.lstatSync(rel);
  } catch (err) {
    if (isErrno(err, 'ENOENT', 'ENOTDIR')) return null;
    throw err;
  }
}

let tmpCounter = 0;

/** A new entry (with its disk blocks, in bytes), one found at its name, or a source that changed. */
export type Created = { kind: 'created'; rec: FileRecord; disk: number } | { kind: 'exists'; rec: FileRecord } | { kind: 'changed'; detail: string };

/**
 * Writes the pool entry `rel` as a copy of a server file that was scanned as `rec`: the
 * copy must hash to rec.hash, and gets rec's metadata (the source's live xattrs must have
 * rec's digest). Reads the server file; changes no vserver. The entry is not immutable yet:
 * apply sets the attribute once it is shared.
 */
export async function createEntry(pool: RootDir, rel: RelPath, src: { dir: RootDir; path: RelPath; rec: FileRecord }): Promise<Created> {
  const { dir: hh, name } = splitRel(rel);
  const f = await src.dir.openFile(src.path);
  try {
    const s = f.stat;
    if (String(s.ino) !== src.rec.ino || String(s.ctimeNs) !== src.rec.ctimeNs || Number(s.size) !== src.rec.size) {
      return { kind: 'changed', detail: 'changed since scanned' };
    }
    const xattrs = readXattrs(f.fd);
    if (xattrDigest(xattrs) !== src.rec.xattrs) return { kind: 'changed', detail: 'extended attributes changed since scanned' };
    const flags = flagsOf(f.fd) & KEPT_FLAGS;
    beforePoolCopy();
    try { fs.mkdirSync(RootDir.at(pool.rootFd, hh), { mode: 0o700 }); } catch (err) { if (!isErrno(err, 'EEXIST')) throw err; }
    const tmp = `${TMP_PREFIX}pool.${process.pid}.${++tmpCounter}`;
    const tmpPath = RootDir.at(pool.rootFd, tmp);
    const { O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
    const fd = fs.openSync(tmpPath, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
    let kept = false;
    let ok = false;
    try {
      // One byte over the scanned size already voids the copy: no need to read on.
      const n = await copyFd(f.fd, fd, src.rec.size + 1);
      // The tenant may write its file while it is copied: the copy itself must have the content.
      const h = await hashFd(fd);
      if (n !== src.rec.size || h.hash !== src.rec.hash) return { kind: 'changed', detail: 'changed while copied to the pool' };
      setMetadata(fd, { uid: src.rec.uid, gid: src.rec.gid, mode: src.rec.mode, xattrs, flags, atimeNs: s.atimeNs, mtimeNs: BigInt(src.rec.mtimeNs) });
      fs.fsyncSync(fd);
      faultPoint(); // a temporary copy at the pool's top: the next run's start removes it
      pool.withDirSync(hh, (dfd) => {
        try {
          fs.linkSync(tmpPath, RootDir.at(dfd, name));
          kept = true;
          faultPoint(); // an entry no server links to yet: the next run uses it, gc removes it
        } catch (err) {
          if (!isErrno(err, 'EEXIST')) throw err;
        }
      });
      ok = true;
    } finally {
      fs.unlinkSync(tmpPath);
      // After the unlink: it moves the inode's ctime, which apply compares.
      const st = ok && kept ? fs.fstatSync(fd, { bigint: true }) : null;
      fs.closeSync(fd);
      if (st) return { kind: 'created', rec: recordOf(st, src.rec.hash, src.rec.xattrs), disk: Number(st.blocks) * 512 };
    }
    const now = entryStat(pool, rel);
    return now?.isFile() ? { kind: 'exists', rec: recordOf(now, src.rec.hash, src.rec.xattrs) } : { kind: 'changed', detail: 'the pool holds something else at its name' };
  } finally {
    await f.close();
  }
}

/** Temporary copies a killed run left at the pool's top level: removed (the pool lock is held). */
export function dropPoolTmps(pool: RootDir): number {
  let n = 0;
  for (const name of fs.readdirSync(RootDir.at(pool.rootFd, ''))) {
    if (!name.startsWith(TMP_PREFIX)) continue;
    try { fs.unlinkSync(RootDir.at(pool.rootFd, name)); n++; } catch (err) { if (!isErrno(err, 'ENOENT')) throw err; }
  }
  return n;
}

export interface PoolEntry { rel: RelPath; hash: string; st: fs.BigIntStats }

/** Every entry of the pool, and names in it that are not entries (never followed). */
export function* poolEntries(pool: RootDir, strays?: RelPath[]): Generator<PoolEntry> {
  for (const hh of fs.readdirSync(RootDir.at(pool.rootFd, '')).sort()) {
    if (hh.startsWith(TMP_PREFIX)) continue;
    const top = pool.lstatSync(hh);
    if (!top?.isDirectory() || !/^[0-9a-f]{2}$/.test(hh)) { strays?.push(hh); continue; }
    const names = pool.withDirSync(hh, (dfd) => fs.readdirSync(RootDir.at(dfd, '')));
    for (const name of names.sort()) {
      const rel = `${hh}/${name}`;
      const hash = hashOfEntry(rel);
      const st = pool.lstatSync(rel);
      if (!hash || !st?.isFile()) { strays?.push(rel); continue; }
      yield { rel, hash, st };
    }
  }
}

/** What the pool holds: entries, their apparent bytes and their disk blocks. */
export function poolUsage(pool: RootDir): { entries: number; bytes: number; disk: number } {
  const u = { entries: 0, bytes: 0, disk: 0 };
  for (const e of poolEntries(pool)) {
    u.entries++;
    u.bytes += Number(e.st.size);
    u.disk += Number(e.st.blocks) * 512;
  }
  return u;
}

type Usage = { entries: number; bytes: number; disk: number };

/**
 * Removes entries no server uses any more (one name left: the pool's), attribute first, and
 * folders left empty. `only`: just these entries (the ones a run made); else every entry, and
 * then `left` says what the pool still holds (the same walk).
 */
export function dropUnusedEntries(pool: RootDir, only?: Iterable<RelPath>): Usage & { left?: Usage } {
  const out: Usage & { left?: Usage } = { entries: 0, bytes: 0, disk: 0 };
  const left: Usage = { entries: 0, bytes: 0, disk: 0 };
  const add = (u: Usage, st: fs.BigIntStats) => { u.entries++; u.bytes += Number(st.size); u.disk += Number(st.blocks) * 512; };
  const folders = new Set<string>();
  const drop = (rel: RelPath): fs.BigIntStats | null => {
    const { dir: hh, name } = splitRel(rel);
    return pool.withDirSync(hh, (dfd) => {
      const p = RootDir.at(dfd, name);
      let fd: number;
      try { fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW); } catch (err) { if (isErrno(err, 'ENOENT', 'ELOOP')) return null; throw err; }
      try {
        const st = fs.fstatSync(fd, { bigint: true });
        if (!st.isFile() || st.nlink !== 1n) return null;
        setImmutable(fd, false);
        fs.unlinkSync(p);
        add(out, st);
        folders.add(hh);
        return st;
      } finally {
        fs.closeSync(fd);
      }
    });
  };
  if (only) {
    for (const rel of only) drop(rel);
  } else {
    for (const e of [...poolEntries(pool)]) if (e.st.nlink !== 1n || !drop(e.rel)) add(left, e.st);
    out.left = left;
  }
  for (const hh of folders) {
    try { fs.rmdirSync(RootDir.at(pool.rootFd, hh)); } catch (err) { if (!isErrno(err, 'ENOTEMPTY', 'EEXIST', 'ENOENT')) throw err; }
  }
  if (out.entries) syncFilesystem(pool.rootFd);
  return out;
}

export interface PoolSummary { dir: string; entries: number; bytes: number; disk: number; linkedFiles: number; missing?: true }

/** A pool the index knows: its size from the folder, its links from the index. */
export async function poolSummary(dir: string, index: Index): Promise<PoolSummary> {
  let linkedFiles = 0;
  for (const l of index.allLinks()) if (l.rec.refRoot === dir) linkedFiles++;
  const pool = await openPool(dir, false).catch(() => null);
  if (!pool) return { dir, entries: 0, bytes: 0, disk: 0, linkedFiles, missing: true };
  try {
    return { dir, ...poolUsage(pool), linkedFiles };
  } finally {
    await pool.close();
  }
}
