// Scan: stat each candidate path of a root without following symlinks, and give it a
// FileRecord: reused from the index when its stat signature is unchanged, else read
// and hashed once (content and extended attributes).
import type fs from 'node:fs';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import pLimit from 'p-limit';
import { oneLine } from './errors.js';
import { hashFd } from './fsx/content.js';
import { RootDir, UnsafePathError, type RelPath } from './fsx/rootdir.js';
import { readXattrs, type Xattrs } from './fsx/sys.js';
import type { FileRecord, Index } from './store/index-db.js';

export type ScanEntry =
  | { kind: 'file'; rec: FileRecord }
  | { kind: 'missing' | 'notRegular' | 'symlinkInPath' | 'error'; detail?: string };

export interface ScanStats { filesHashed: number; bytesHashed: number; filesStatted: number }

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

/**
 * True when a stat result still describes a recorded file. Any change of content, mode,
 * owner, xattrs or link count moves ctime, and ctime cannot be set from user space.
 */
export function sameSignature(a: fs.BigIntStats, rec: FileRecord): boolean {
  return (
    String(a.dev) === rec.dev && String(a.ino) === rec.ino && Number(a.size) === rec.size &&
    String(a.mtimeNs) === rec.mtimeNs && String(a.ctimeNs) === rec.ctimeNs
  );
}

export function recordOf(st: fs.BigIntStats, hash: string, xattrs: string, pkg?: string): FileRecord {
  const rec: FileRecord = {
    dev: String(st.dev), ino: String(st.ino), size: Number(st.size), mode: Number(st.mode),
    uid: Number(st.uid), gid: Number(st.gid), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs),
    nlink: Number(st.nlink), hash, xattrs,
  };
  if (pkg !== undefined) rec.pkg = pkg;
  return rec;
}

const inodeKey = (st: fs.BigIntStats) => `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;

/**
 * Records seen in this run by inode and signature: a hard link of a file already read in
 * this run (the reference's copy, when a server shares it) is not read again.
 */
export type InodeCache = Map<string, FileRecord>;

export interface ScanOptions {
  concurrency?: number;
  batch?: number;
  /** The package of each path, kept in the record. */
  pkgOf?: (rel: RelPath) => string | undefined;
  inodes?: InodeCache;
  /**
   * Records of this root that this scan covers (all, or those of the named packages): the
   * ones whose path was not scanned now (a removed package or file) are dropped.
   */
  covers?: (rec: FileRecord) => boolean;
}

/** Scans paths of one root into the index; returns an entry for every path. */
export async function scanRoot(
  root: RootDir,
  paths: RelPath[],
  index: Index,
  stats: ScanStats,
  opts: ScanOptions = {},
): Promise<Map<RelPath, ScanEntry>> {
  const limit = pLimit(opts.concurrency ?? 8);
  const out = new Map<RelPath, ScanEntry>();
  let pending: Array<[string, RelPath, FileRecord | null]> = [];
  const flush = async () => {
    const batch = pending;
    pending = [];
    await index.putFiles(batch);
  };
  // Sorted paths keep one folder's files together, so folder fds are reused.
  const sorted = [...paths].sort();
  await Promise.all(
    sorted.map((rel) =>
      limit(async () => {
        const entry = await scanOne(root, rel, index, stats, opts.inodes ?? new Map(), opts.pkgOf?.(rel));
        out.set(rel, entry);
        const old = index.getFile(root.path, rel);
        if (entry.kind === 'file') {
          if (!old || old !== entry.rec) pending.push([root.path, rel, entry.rec]);
        } else if (old && entry.kind !== 'error') {
          pending.push([root.path, rel, null]);
        }
        if (pending.length >= (opts.batch ?? 5000)) await flush();
      }),
    ),
  );
  await flush();
  if (opts.covers) {
    const gone: Array<[string, RelPath, null]> = [];
    for (const f of index.filesOf(root.path)) if (!out.has(f.path) && opts.covers(f.rec)) gone.push([root.path, f.path, null]);
    await index.putFiles(gone);
  }
  return out;
}

async function scanOne(
  root: RootDir, rel: RelPath, index: Index, stats: ScanStats, inodes: InodeCache, pkg: string | undefined,
): Promise<ScanEntry> {
  let st: fs.BigIntStats | null;
  try {
    st = await root.lstat(rel);
  } catch (err) {
    if (err instanceof UnsafePathError) return { kind: 'symlinkInPath', detail: err.message };
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'error', detail: oneLine(err) };
  }
  stats.filesStatted++;
  if (!st) return { kind: 'missing' };
  if (!st.isFile()) return { kind: 'notRegular' };
  const old = index.getFile(root.path, rel);
  if (old && sameSignature(st, old)) {
    const rec = old.pkg === pkg && old.nlink === Number(st.nlink) ? old : { ...old, pkg, nlink: Number(st.nlink) };
    inodes.set(inodeKey(st), rec);
    return { kind: 'file', rec };
  }
  const twin = inodes.get(inodeKey(st));
  if (twin) return { kind: 'file', rec: recordOf(st, twin.hash, twin.xattrs, pkg) };
  try {
    const f = await root.openFile(rel);
    try {
      if (f.stat.ino !== st.ino || f.stat.dev !== st.dev) return { kind: 'error', detail: 'replaced while scanned' };
      const xattrs = xattrDigest(readXattrs(f.fd));
      const { hash, bytes } = await hashFd(f.fd);
      stats.filesHashed++;
      stats.bytesHashed += bytes;
      const after = await root.lstat(rel);
      if (!after || !sameSignatureStats(after, f.stat) || bytes !== Number(f.stat.size)) {
        return { kind: 'error', detail: 'changed while hashed' };
      }
      const rec = recordOf(f.stat, hash, xattrs, pkg);
      inodes.set(inodeKey(f.stat), rec);
      return { kind: 'file', rec };
    } finally {
      await f.close();
    }
  } catch (err) {
    if (err instanceof UnsafePathError) return { kind: 'symlinkInPath', detail: err.message };
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') return { kind: 'notRegular' };
    if ((err as NodeJS.ErrnoException).code === 'ENOTREG') return { kind: 'notRegular' };
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'error', detail: oneLine(err) };
  }
}

export function sameSignatureStats(a: fs.BigIntStats, b: fs.BigIntStats): boolean {
  return a.dev === b.dev && a.ino === b.ino && a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs;
}
