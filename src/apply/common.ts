// What every part of apply shares: the context, outcomes, the metadata of an open file,
// the temporary names, and the records an inode's names get after a change.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { isErrno, oneLine } from '../errors.js';
import { WHOLE_MAX } from '../fsx/content.js';
import { RootDir, UnsafePathError, splitRel, type RelPath } from '../fsx/rootdir.js';
import {
  getInodeFlags, readXattrs, removeXattr, setInodeFlags, setTimesNs, writeXattr, type StatLite, type Xattrs,
} from '../fsx/sys.js';
import type { Decision, SkipReason } from '../plan.js';
import { recordOf } from '../scan.js';
import { TMP_PREFIX } from '../sources/tree.js';
import { phaseCounter, type ProgressSink } from '../progress.js';
import type { FileRecord, Index, LinkRecord } from '../store/index-db.js';

export type Outcome =
  | { kind: 'unified'; bytesSaved: number; diskSaved: number }
  | { kind: 'restored' }
  | { kind: 'skip'; reason: SkipReason; detail?: string };

export interface ApplyContext {
  index: Index;
  /** Open roots by root path (the reference and every server). */
  roots: Map<string, RootDir>;
  /** Root path of each server by its name. */
  serverRoots: Map<string, string>;
  refRoot: string;
  immutable: boolean;
  concurrency?: number;
  /** Failures that belong to no single decision (an attribute that could not be set). */
  problems: Array<{ root: string; path: RelPath; reason: string }>;
  /** Folder times as first seen in this run, put back after each rename in the folder. */
  dirTimes?: Map<string, { atimeNs: bigint; mtimeNs: bigint }>;
  /** Progress of compare, link and undo. */
  progress?: ProgressSink;
  /** Phase timings, when tracing. */
  trace?: (phase: string, ms: number) => void;
  /** Reference inodes found full (EMLINK) in this run, and the copy shared instead. */
  secondCopies?: Map<string, { root: string; path: RelPath; ino: bigint; sig: Sig }>;
  /** The links are spread over the farm (a run after a change): chunks take CHUNK_LINKS at most. */
  spreadLinks?: boolean;
  /** Folders where this run linked, renamed or removed a name, by `root\0folder`. */
  touchedDirs?: Set<string>;
  /** Hashes learnt while comparing in the current chunk, by `root\0path`. */
  learned?: Map<string, string>;
  /** Told of every file whose content is read (for the report). */
  read?: (root: string, rel: RelPath, bytes: number) => void;
  /** Link decisions per server inode (`server\0ino`), over the whole run. */
  linkNames?: Map<string, number>;
  /** Temporary names that could not be removed: their journal entries stay for recover. */
  stuckTmps?: Set<string>;
}

export const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
export let tmpCounter = 0;
// Unique within this process; another process's name clashes with EEXIST, never silently.
export const tmpName = () => `${TMP_PREFIX}${process.pid}.${++tmpCounter}`;

export const skip = (reason: SkipReason, detail?: string): Outcome => ({ kind: 'skip', reason, detail });

/**
 * The skip for a failure to reach a file: a folder on its path that a tenant removed, or
 * swapped for a symlink or a file, since the scan is a change of theirs, not a failure of
 * the run (a folder still in the fd cache shows it as the file missing: the same verdict).
 */
export function skipFor(err: unknown): Outcome {
  if (err instanceof UnsafePathError) return skip('symlinkInPath', err.message);
  if (isErrno(err, 'ENOENT', 'ENOTDIR')) return skip('changed', `a folder on its path was removed since scanned (${oneLine(err)})`);
  return skip('error', oneLine(err));
}

export function sameXattrs(a: Xattrs, b: Xattrs): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k].equals(b[k]));
}

export function fsyncFd(fd: number): Promise<void> {
  return new Promise((res, rej) => fs.fsync(fd, (e) => (e ? rej(e) : res())));
}

export const at = RootDir.at;

export function fstat(fd: number, _o: { bigint: true }): Promise<fs.BigIntStats> {
  return new Promise((res, rej) => fs.fstat(fd, { bigint: true }, (e, st) => (e ? rej(e) : res(st))));
}

/**
 * Links, renames and temporary files change a folder's mtime; backups and rescans key
 * on it, so the times a folder had when this run first came are put back afterwards.
 */
export async function rememberDirTimes(ctx: ApplyContext, root: string, dir: RelPath, dfd: number): Promise<() => void> {
  const times = (ctx.dirTimes ??= new Map());
  const key = `${root}\0${dir}`;
  if (!times.has(key)) {
    // Synchronous: check and set with no await between, or a concurrent step in the same
    // folder could record the time after its first change.
    const st = fs.fstatSync(dfd, { bigint: true });
    times.set(key, { atimeNs: st.atimeNs, mtimeNs: st.mtimeNs });
  }
  const t = times.get(key)!;
  return () => {
    try { setTimesNs(dfd, t.atimeNs, t.mtimeNs); } catch { /* cosmetic: the change stands */ }
  };
}

/** Removes a temporary name we created; false when it is still there (kept in the journal). */
export async function dropTmp(dirFd: number, name: string): Promise<boolean> {
  return fsp.unlink(at(dirFd, name)).then(() => true, (err) => isErrno(err, 'ENOENT'));
}

/**
 * Inode flags that travel with a file's identity (lsattr's s u c S d A j t C): compared
 * before linking and put back by undo. i and a are vunify's own business (see below), and
 * the rest (extents, inline data...) are the filesystem's.
 */
export const KEPT_FLAGS = 0x1 | 0x2 | 0x4 | 0x8 | 0x40 | 0x80 | 0x4000 | 0x8000 | 0x800000;

/** An fd's inode flags; 0 where the filesystem has none (ENOTTY, EOPNOTSUPP). */
export function flagsOf(fd: number): number {
  try {
    return getInodeFlags(fd);
  } catch (err) {
    if (isErrno(err, 'ENOTTY', 'EOPNOTSUPP', 'EINVAL')) return 0;
    throw err;
  }
}

export interface Metadata { uid: number; gid: number; mode: number; xattrs: Xattrs; flags?: number; atimeNs: bigint; mtimeNs: bigint }

/**
 * Gives an open file exactly this metadata: owner first (chown clears setuid bits and file
 * capabilities), mode, these xattrs and no others (a new file inherits its folder's default
 * ACL), the kept inode flags when given, then the times.
 */
export function setMetadata(fd: number, want: Metadata): void {
  fs.fchownSync(fd, want.uid, want.gid);
  fs.fchmodSync(fd, want.mode & 0o7777);
  for (const k of Object.keys(readXattrs(fd))) if (!(k in want.xattrs)) removeXattr(fd, k);
  for (const [k, v] of Object.entries(want.xattrs)) writeXattr(fd, k, v);
  if (want.flags !== undefined) {
    const flags = flagsOf(fd);
    if ((flags & KEPT_FLAGS) !== want.flags) setInodeFlags(fd, (flags & ~KEPT_FLAGS) | want.flags);
  }
  setTimesNs(fd, want.atimeNs, want.mtimeNs);
}

export type LinkDecision = Extract<Decision, { kind: 'link' }>;

/** What a file must still be to be shared: any write, chmod, chown or setxattr moves ctime. */
export interface Sig { size: bigint; mtimeNs: bigint; ctimeNs: bigint; mode: bigint; uid: bigint; gid: bigint }
export const sigOf = (st: Sig): Sig => ({ size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, mode: st.mode, uid: st.uid, gid: st.gid });
export const sameSig = (a: Sig, b: Sig) => a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.mode === b.mode && a.uid === b.uid && a.gid === b.gid;
export type Group = Array<Extract<Decision, { kind: 'link' | 'already' }>>;

export interface Verified { d: LinkDecision; st1: StatLite; rec: LinkRecord; tmp: string }
export interface GroupState {
  ours: boolean; wasImmutable: boolean; refHash: string; verified: Verified[];
  /** The reference's hash is among this chunk's learned records already. */
  refLearned?: boolean;
  /** The reference as compared: any change after that (its ctime moves) voids the group. */
  refStat: fs.BigIntStats; refXattrs: Xattrs;
}

/** Reference files up to this size are held in memory while their server copies are compared. */
export const HOLD_BYTES = WHOLE_MAX;

/** Reference inodes linked at a time (the CLI sizes libuv's pool to match). */
export const LINK_CONCURRENCY = 16;

/**
 * The groups in an order where neighbours come from different folders: round robin over
 * the folders of their reference paths, each folder's groups in their own order. Groups
 * linked at once then rename in different folders of each server: a rename holds its
 * folder's lock while the filesystem frees the replaced inode, and a link into that folder
 * waits for it (measured here: linkat 108 us against 20 us, 3,000 replacements 16 at a time
 * 0.41 s in 60 folders one after another against 0.20 s spread over them).
 */
export function spreadByFolder(groups: Group[]): Group[] {
  const byDir = new Map<string, Group[]>();
  for (const g of groups) {
    const { dir } = splitRel(g[0].refPath);
    const list = byDir.get(dir);
    if (list) list.push(g);
    else byDir.set(dir, [g]);
  }
  if (byDir.size < 2) return groups;
  const lists = [...byDir.values()];
  const out: Group[] = [];
  for (let i = 0; out.length < groups.length; i++) {
    for (const l of lists) if (i < l.length) out.push(l[i]);
  }
  return out;
}

/** How many reference inodes are verified, journaled and linked together. */
export const CHUNK_GROUPS = 2048;

/**
 * How many links a chunk takes at most (a group is never split) when they are spread over
 * the farm (ApplyContext.spreadLinks). A chunk's journal is one transaction: 9,000 links of a
 * 1%-change run on a 1,000,000-file farm mapped 363 MB of the index while the write thread
 * ran (a first unify's slice links files of a few folders: capped at 1,024 too, its
 * verify took 17 s in all instead of 10 s on 250,000 files).
 */
export const CHUNK_LINKS = 1024;
/** CHUNK_LINKS, or VUNIFY_CHUNK_LINKS (for tests and measurements). */
export const chunkLinks = (env: NodeJS.ProcessEnv = process.env): number => (Number(env.VUNIFY_CHUNK_LINKS) > 0 ? Number(env.VUNIFY_CHUNK_LINKS) : CHUNK_LINKS);

export type Counter = ReturnType<typeof phaseCounter>;

/**
 * Re-records every indexed path of an inode whose ctime or nlink this run changed (the
 * given paths, and any holder of its content in the roots open now), keeping the hash.
 */
export async function refreshInode(
  ctx: ApplyContext,
  r: { dev: string; ino: string; hash: string; xattrs: string },
  extra: Array<[string, RelPath, FileRecord?]>,
  updates: Array<[string, RelPath, FileRecord | null]>,
  inode?: fs.BigIntStats,
): Promise<void> {
  const seen = new Set<string>();
  let last: FileRecord | undefined;
  // A name may come with its record as this run scanned it (no index read for it).
  const todo: Array<[string, RelPath, FileRecord?]> = [...extra];
  // The inode's link count counts every name it has: when the given names are that many,
  // no other holder can be on it, and the content index need not be searched.
  const allNamed = (n: bigint) => BigInt(new Set(extra.map(([root, rel]) => `${root}\0${rel}`)).size) >= n;
  for (const h of r.hash && !(inode && allNamed(inode.nlink)) ? ctx.index.holders(r.hash) : []) {
    const rec = ctx.index.getFile(h.root, h.path);
    if (rec && rec.dev === r.dev && rec.ino === r.ino) todo.push([h.root, h.path, rec]);
  }
  for (const [root, rel, known] of todo) {
    const key = `${root}\0${rel}`;
    const dir = ctx.roots.get(root);
    if (seen.has(key) || !dir) continue;
    seen.add(key);
    // With the inode's own stat, every name of it has that signature: no lstat per name.
    // A name that moved on meanwhile is caught by the next scan (its inode differs).
    const st = inode ?? (await dir.lstat(rel).catch(() => null));
    if (st && String(st.ino) === r.ino && String(st.dev) === r.dev) {
      const old = known ?? ctx.index.getFile(root, rel);
      // Never a worse hash than known: one learnt while comparing (same transaction), or the
      // name's own record when the reference's content was not read.
      const hash = r.hash || ctx.learned?.get(key) || (old?.ino === r.ino ? old.hash : '');
      // From one stat, names with the same hash and package share one record object
      // (records are never changed in place).
      const same = inode && last && last.hash === hash && last.pkg === old?.pkg;
      const rec = same ? last! : (last = recordOf(st, hash, r.xattrs, old?.pkg));
      updates.push([root, rel, rec]);
    }
  }
}

