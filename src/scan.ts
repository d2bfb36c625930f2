// Scan: stat each candidate path of a root without following symlinks, and give it a
// FileRecord: reused from the index when its stat signature is unchanged, else read
// and hashed once (content and extended attributes).
import fs from 'node:fs';
import { Blake3Hasher } from './fsx/blake3.js';
import pLimit from 'p-limit';
import { isErrno, oneLine } from './errors.js';
import { EMPTY_HASH, hashFd } from './fsx/content.js';
import { RootDir, UnsafePathError, lstatIn, splitRel, type RelPath } from './fsx/rootdir.js';
import { hasLstatAt, lstatSig, readXattrsAt, type StatLite, type Xattrs } from './fsx/sys.js';
import type { FileRecord, ScanEntry } from './model.js';
import type { Index } from './store/index-db.js';

export type { ScanEntry } from './model.js';

export interface ScanStats {
  filesHashed: number; bytesHashed: number; filesStatted: number; vanishedSearch?: 'skipped';
  /** Sparse scans: how many of the paths had a record before the scan. */
  recordsFound?: number;
}

export function xattrDigest(x: Xattrs): string {
  const names = Object.keys(x).sort();
  if (names.length === 0) return '';
  const h = new Blake3Hasher();
  for (const n of names) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(x[n].length);
    h.update(Buffer.concat([Buffer.from(n, 'latin1'), Buffer.from([0]), len, x[n]]));
  }
  return h.digest('hex');
}

/** What scan needs of a stat: Node's BigIntStats or the cheaper StatLite. */
export type StatLike = Pick<fs.BigIntStats, 'dev' | 'ino' | 'mode' | 'nlink' | 'uid' | 'gid' | 'size' | 'mtimeNs' | 'ctimeNs'>;

/** The signature fields, as BigIntStats/StatLite (bigints) or StatSig (strings, numbers) hold them. */
type SignatureOf = { dev: unknown; ino: unknown; size: unknown; mtimeNs: unknown; ctimeNs: unknown };

/**
 * True when a stat result still describes a recorded file. Any change of content, mode,
 * owner, xattrs or link count moves ctime, and ctime cannot be set from user space.
 */
export function sameSignature(a: SignatureOf, rec: FileRecord): boolean {
  return (
    String(a.dev) === rec.dev && String(a.ino) === rec.ino && Number(a.size) === rec.size &&
    String(a.mtimeNs) === rec.mtimeNs && String(a.ctimeNs) === rec.ctimeNs
  );
}

// The strings of the last stat made into a record. Strings are most of a record's memory:
// every name of an inode re-recorded from one stat of it (refreshInode) shares them, and
// the files of a device share one device string. Stat results are never changed in place.
const last = { st: null as StatLike | null, dev: -1n, devText: '', ino: '', mtime: '', ctime: '' };

export function recordOf(st: StatLike, hash: string, xattrs: string, pkg?: string): FileRecord {
  if (st !== last.st) {
    last.st = st;
    if (st.dev !== last.dev) { last.dev = st.dev; last.devText = String(st.dev); }
    last.ino = String(st.ino);
    last.mtime = String(st.mtimeNs);
    last.ctime = String(st.ctimeNs);
  }
  const rec: FileRecord = {
    dev: last.devText, ino: last.ino, size: Number(st.size), mode: Number(st.mode),
    uid: Number(st.uid), gid: Number(st.gid), mtimeNs: last.mtime, ctimeNs: last.ctime,
    nlink: Number(st.nlink), hash, xattrs, pkg, // pkg always: one hidden class, no property array
  };
  return rec;
}

/**
 * Records seen in this run by inode number (the record's own ino string: no key made per
 * file), taken for a twin only when its whole signature matches: a hard link of a file
 * already read in this run (the reference's copy, when a server shares it) is not read again.
 */
export type InodeCache = Map<string, FileRecord>;

export interface ScanOptions {
  batch?: number;
  /** The package of each path, kept in the record. */
  pkgOf?: (rel: RelPath) => string | undefined;
  inodes?: InodeCache;
  /**
   * Records of this root that this scan covers (all, or those of the named packages): the
   * ones whose path was not scanned now (a removed package or file) are dropped.
   */
  covers?: (rec: FileRecord, rel: RelPath) => boolean;
  /**
   * Few of the root's recorded files are scanned (the rest are settled): look records up one
   * by one instead of decoding all of them.
   */
  sparse?: boolean;
  /** Paths whose records stay whether scanned or not (settled files). */
  keep?: (rel: RelPath) => boolean;
  /** True when the record is known to match the disk (the quick-rescan survey stat'ed it): no stat. */
  current?: (dir: RelPath, name: string, rec: FileRecord) => boolean;
  /** Told of each file scanned. */
  onFile?: () => void;
  /**
   * With sparse: how many of the paths have records when no recorded file of the root
   * vanished (see scanAll). When they do, the search for records of vanished files is skipped.
   */
  recordsIfNoneVanished?: number;
  /**
   * The last write is left here instead of awaited, for the caller to await with others:
   * the index commits in order, so the records are visible to reads once it settles.
   */
  writes?: Array<Promise<unknown>>;
}

/**
 * Scans paths of one root into the index; returns an entry for every path. It costs one
 * lstat per unchanged file and reads no content: a new or changed file gets its xattrs
 * digest and hash '' (not known yet), except empty files, whose hash is known.
 */
export async function scanRoot(
  root: RootDir,
  paths: RelPath[],
  index: Index,
  stats: ScanStats,
  opts: ScanOptions = {},
): Promise<Map<RelPath, ScanEntry>> {
  const out = new Map<RelPath, ScanEntry>();
  const inodes = opts.inodes ?? new Map();
  let pending: Array<[string, RelPath, FileRecord | null]> = [];
  // One range read of the root's records costs less than a lookup per path, unless few are wanted.
  const known = new Map<RelPath, FileRecord>();
  if (opts.sparse) {
    for (const rel of paths) {
      const rec = index.getFile(root.path, rel);
      if (rec) known.set(rel, rec);
    }
    stats.recordsFound = known.size;
  } else {
    for (const f of index.filesOf(root.path)) known.set(f.path, f.rec);
  }
  // Sorted paths keep one folder's files together, so folder fds are reused.
  const held = new HeldDir();
  for (const rel of [...paths].sort()) {
    const old = known.get(rel);
    const entry = scanOne(root, rel, old, stats, inodes, opts.pkgOf?.(rel), held, opts.current);
    out.set(rel, entry);
    opts.onFile?.();
    if (entry.kind === 'file') {
      if (old !== entry.rec && !(old && sameRecord(old, entry.rec))) pending.push([root.path, rel, entry.rec]);
    } else if (old && entry.kind !== 'error') {
      pending.push([root.path, rel, null]);
    }
    if (pending.length >= (opts.batch ?? 20000)) {
      held.release();
      await index.putFiles(pending);
      pending = [];
    }
  }
  held.release();
  if (opts.covers) {
    if (opts.sparse && known.size === opts.recordsIfNoneVanished) {
      stats.vanishedSearch = 'skipped';
    } else if (opts.sparse) {
      for (const rel of index.filePathsOf(root.path)) {
        if (out.has(rel) || opts.keep?.(rel)) continue;
        const rec = index.getFile(root.path, rel);
        if (rec && opts.covers(rec, rel)) pending.push([root.path, rel, null]);
      }
    } else {
      for (const [rel, rec] of known) if (!out.has(rel) && opts.covers(rec, rel)) pending.push([root.path, rel, null]);
    }
  }
  const last = index.putFiles(pending);
  if (!opts.writes) await last;
  else {
    last.catch(() => undefined); // awaited by the caller, later: not an unhandled rejection meanwhile
    opts.writes.push(last);
  }
  return out;
}

function scanOne(
  root: RootDir, rel: RelPath, old: FileRecord | undefined, stats: ScanStats, inodes: InodeCache, pkg: string | undefined,
  held: HeldDir, current?: ScanOptions['current'],
): ScanEntry {
  const { dir, name } = splitRel(rel);
  // An unchanged file keeps its record (with this run's package and link count); only files
  // with more than one link can have a twin met earlier in this run.
  const unchanged = (old: FileRecord, nlink: number): ScanEntry => {
    let rec = old.pkg === pkg && old.nlink === nlink ? old : { ...old, pkg, nlink };
    if (nlink > 1) {
      const twin = inodes.get(rec.ino);
      if (twin && sameRecord(twin, rec)) rec = twin;
      inodes.set(rec.ino, rec);
    }
    return { kind: 'file', rec };
  };
  // ctime moves with any change of the link count, so the record's nlink is current too.
  if (old && current?.(dir, name, old)) return unchanged(old, old.nlink);
  try {
    const dfd = held.fd(root, dir);
    // The common case of a rescan first: an unchanged file costs one fstatat and no BigInt.
    if (old && hasLstatAt) {
      const sig = lstatSig(dfd, name);
      if (!sig) return { kind: 'missing' };
      if ((sig.mode & 0o170000) === 0o100000 && sameSignature(sig, old)) {
        stats.filesStatted++;
        return unchanged(old, sig.nlink);
      }
    }
    const p = RootDir.at(dfd, name);
    const st = lstatIn(dfd, name);
    if (!st) return { kind: 'missing' };
    stats.filesStatted++;
    if (!st.isFile()) return (st.mode & 0o170000n) === 0o040000n ? { kind: 'folder' } : { kind: 'notRegular' };
    if (old && sameSignature(st, old)) return unchanged(old, Number(st.nlink));
    const linked = st.nlink > 1n;
    const twin = linked ? inodes.get(String(st.ino)) : undefined;
    if (twin && sameSignature(st, twin)) {
      const rec = recordOf(st, twin.hash, twin.xattrs, pkg);
      return { kind: 'file', rec: sameRecord(twin, rec) ? twin : rec };
    }
    const rec = recordOf(st, st.size === 0n ? EMPTY_HASH : '', xattrDigest(readXattrsAt(p)), pkg);
    if (linked) inodes.set(rec.ino, rec);
    return { kind: 'file', rec };
  } catch (err) {
    if (err instanceof UnsafePathError) return { kind: 'symlinkInPath', detail: err.message };
    if (isErrno(err, 'ENOENT')) return { kind: 'missing' };
    return { kind: 'error', detail: oneLine(err) };
  }
}

/**
 * Every field equal: the names of one inode then share one record object (records are never
 * changed in place), and a unified farm holds about one record per shared inode, not per name.
 */
function sameRecord(a: FileRecord, b: FileRecord): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mode === b.mode && a.uid === b.uid && a.gid === b.gid &&
    a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.nlink === b.nlink && a.hash === b.hash && a.xattrs === b.xattrs &&
    a.pkg === b.pkg;
}

/** The folder of the previous file stays open for the next one (paths come sorted). */
class HeldDir {
  private dir: RelPath | null = null;
  private hold: { fd: number; release: () => void } | null = null;
  fd(root: RootDir, dir: RelPath): number {
    if (this.dir !== dir || !this.hold) {
      this.release();
      this.hold = root.holdDir(dir);
      this.dir = dir;
    }
    return this.hold.fd;
  }
  release(): void {
    this.hold?.release();
    this.hold = null;
    this.dir = null;
  }
}

/**
 * Reads and hashes the files of one root whose hash is not known (each inode once), and
 * records the hashes. A file that changes while read becomes an 'error' entry.
 */
export async function hashFiles(
  root: RootDir,
  entries: Map<RelPath, ScanEntry>,
  paths: RelPath[],
  index: Index,
  stats: ScanStats,
  opts: { concurrency?: number; inodes?: Map<string, string>; onBytes?: (n: number) => void } = {},
): Promise<void> {
  const limit = pLimit(opts.concurrency ?? 4);
  const known = opts.inodes ?? new Map<string, string>(); // dev:ino:ctime -> hash
  const updates: Array<[string, RelPath, FileRecord]> = [];
  await Promise.all(paths.map((rel) => limit(async () => {
    const e = entries.get(rel);
    if (e?.kind !== 'file' || e.rec.hash !== '') return;
    const key = `${e.rec.dev}:${e.rec.ino}:${e.rec.ctimeNs}`;
    let hash = known.get(key);
    if (hash === undefined) {
      try {
        const f = await root.openFile(rel);
        try {
          if (String(f.stat.ino) !== e.rec.ino || String(f.stat.ctimeNs) !== e.rec.ctimeNs) throw new Error('changed since scanned');
          const r = await hashFd(f.fd, e.rec.size);
          const after = await new Promise<fs.BigIntStats>((res, rej) => fs.fstat(f.fd, { bigint: true }, (er, s) => (er ? rej(er) : res(s))));
          if (!sameSignatureStats(after, f.stat) || r.bytes !== e.rec.size) throw new Error('changed while read');
          stats.filesHashed++;
          stats.bytesHashed += r.bytes;
          hash = r.hash;
          known.set(key, hash);
        } finally {
          await f.close();
        }
      } catch (err) {
        entries.set(rel, { kind: 'error', detail: oneLine(err) });
        return;
      }
    }
    e.rec = { ...e.rec, hash };
    opts.onBytes?.(e.rec.size);
    updates.push([root.path, rel, e.rec]);
  })));
  await index.putFiles(updates);
}

export function sameSignatureStats(a: StatLite, b: StatLite): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}
