// Apply: the only code that changes a vserver. Every link is guarded by a fresh stat,
// a live metadata and extended-attribute check, and a byte-for-byte comparison; it is
// made as a temporary link in the server's folder and renamed over the file, so the
// path never disappears. Undo writes a private copy the same way.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { Blake3Hasher } from './fsx/blake3.js';
import pLimit from 'p-limit';
import { isErrno, oneLine } from './errors.js';
import { WHOLE_MAX, copyFd, hashFd, readWhole, releaseWhole, sameAsBuffer, sameBytes } from './fsx/content.js';
import { RootDir, lstatIn, openFileAtSync, splitRel, type OpenedFile, type RelPath } from './fsx/rootdir.js';
import {
  FS_APPEND_FL, FS_IMMUTABLE_FL, getInodeFlags, immutableAt, isImmutable, leaseIntact, linkFd, readXattrs, removeXattr,
  setImmutable, setInodeFlags, setTimesNs, syncFilesystem, takeReadLease, writeXattr, type StatLite, type Xattrs,
} from './fsx/sys.js';
import type { Decision, SkipReason } from './plan.js';
import { recordOf, sameSignatureStats } from './scan.js';
import { TMP_PREFIX } from './sources/tree.js';
import { afterTmpLink, afterVerify, faultPoint } from './fault.js';
import { phaseCounter, type ProgressSink } from './progress.js';
import type { FileRecord, Index, JournalEntry, LinkRecord } from './store/index-db.js';

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

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
let tmpCounter = 0;
// Unique within this process; another process's name clashes with EEXIST, never silently.
const tmpName = () => `${TMP_PREFIX}${process.pid}.${++tmpCounter}`;

const skip = (reason: SkipReason, detail?: string): Outcome => ({ kind: 'skip', reason, detail });

function sameXattrs(a: Xattrs, b: Xattrs): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k].equals(b[k]));
}

function fsyncFd(fd: number): Promise<void> {
  return new Promise((res, rej) => fs.fsync(fd, (e) => (e ? rej(e) : res())));
}

const at = RootDir.at;

function fstat(fd: number, _o: { bigint: true }): Promise<fs.BigIntStats> {
  return new Promise((res, rej) => fs.fstat(fd, { bigint: true }, (e, st) => (e ? rej(e) : res(st))));
}

/**
 * Links, renames and temporary files change a folder's mtime; backups and rescans key
 * on it, so the times a folder had when this run first came are put back afterwards.
 */
async function rememberDirTimes(ctx: ApplyContext, root: string, dir: RelPath, dfd: number): Promise<() => void> {
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
async function dropTmp(dirFd: number, name: string): Promise<boolean> {
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

interface Metadata { uid: number; gid: number; mode: number; xattrs: Xattrs; flags?: number; atimeNs: bigint; mtimeNs: bigint }

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

type LinkDecision = Extract<Decision, { kind: 'link' }>;

/** What a file must still be to be shared: any write, chmod, chown or setxattr moves ctime. */
interface Sig { size: bigint; mtimeNs: bigint; ctimeNs: bigint; mode: bigint; uid: bigint; gid: bigint }
const sigOf = (st: Sig): Sig => ({ size: st.size, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, mode: st.mode, uid: st.uid, gid: st.gid });
const sameSig = (a: Sig, b: Sig) => a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.mode === b.mode && a.uid === b.uid && a.gid === b.gid;
type Group = Array<Extract<Decision, { kind: 'link' | 'already' }>>;

interface Verified { d: LinkDecision; st1: StatLite; rec: LinkRecord; tmp: string }
interface GroupState {
  ours: boolean; wasImmutable: boolean; refHash: string; verified: Verified[];
  /** The reference's hash is among this chunk's learned records already. */
  refLearned?: boolean;
  /** The reference as compared: any change after that (its ctime moves) voids the group. */
  refStat: fs.BigIntStats; refXattrs: Xattrs;
}

/** Reference files up to this size are held in memory while their server copies are compared. */
const HOLD_BYTES = WHOLE_MAX;

/** Reference inodes linked at a time (the CLI sizes libuv's pool to match). */
export const LINK_CONCURRENCY = 16;

/** How many reference inodes are verified, journaled and linked together. */
const CHUNK_GROUPS = 2048;

/**
 * Carries out the link decisions in chunks of reference inodes:
 *  1. verify: a fresh lstat of each server file against the scan, a live comparison of
 *     mode, owner, mtime and every xattr, and of the bytes (hashing the reference in the
 *     same pass when its hash is not known);
 *  2. journal: one durable transaction records every link about to be made, with what
 *     it replaces;
 *  3. link: per inode, a temporary hard link in the server's folder, checked to be the
 *     reference's inode, and renamed over the file only if the file's signature (ino,
 *     size, mtime, ctime) is still the one verified; then the immutable attribute;
 *  4. each touched folder gets its times back and is fsynced once;
 *  5. one transaction drops the records of links not made and re-records signatures.
 */
export async function applyLinks(decisions: Decision[], ctx: ApplyContext): Promise<Map<Decision, Outcome>> {
  const outcomes = new Map<Decision, Outcome>();
  const groups = new Map<string, Group>();
  for (const d of decisions) {
    if (d.kind !== 'link' && d.kind !== 'already') continue;
    const key = `${d.ref.dev}:${d.ref.ino}`;
    const g = groups.get(key) ?? [];
    g.push(d);
    groups.set(key, g);
  }
  // Groups without a new link need a visit only to put the attribute on: after a
  // --no-immutable run, or where a killed run or a failed chattr left it off (one statx
  // per shared inode tells, without opening it).
  const todo = [...groups.values()].filter((g) =>
    g.some((d) => d.kind === 'link') || (ctx.immutable && !carriesAttribute(g[0].refPath, g[0].ref, ctx)));
  const links = todo.flatMap((g) => g.filter((d): d is LinkDecision => d.kind === 'link'));
  ctx.stuckTmps ??= new Set();
  // How many names of each server inode this run links, whichever reference inode each goes to.
  ctx.linkNames = new Map();
  for (const d of links) ctx.linkNames.set(`${d.server}\0${d.srv.ino}`, (ctx.linkNames.get(`${d.server}\0${d.srv.ino}`) ?? 0) + 1);
  const bytes = phaseCounter(ctx.progress, 'compare', links.reduce((a, d) => a + d.srv.size, 0), 'bytes');
  const count = { bytes, links: phaseCounter(undefined, 'link', 0, 'files') };
  for (let i = 0; i < todo.length; i += CHUNK_GROUPS) {
    await linkChunk(todo.slice(i, i + CHUNK_GROUPS), ctx, outcomes, count);
  }
  bytes.end();
  return outcomes;
}

type Counter = ReturnType<typeof phaseCounter>;

/** True when the reference's inode is recorded as vunify's and has the attribute now. */
function carriesAttribute(refPath: RelPath, r: FileRecord, ctx: ApplyContext): boolean {
  if (!ctx.index.getInode(r.dev, r.ino)) return false;
  const { dir, name } = splitRel(refPath);
  try {
    const now = ctx.roots.get(ctx.refRoot)!.withDirSync(dir, (dfd) => immutableAt(dfd, name));
    return now !== null && String(now.ino) === r.ino && now.immutable;
  } catch {
    return false; // the visit reports what is wrong
  }
}

async function linkChunk(
  groups: Group[], ctx: ApplyContext, outcomes: Map<Decision, Outcome>, count: { bytes: Counter; links: Counter },
): Promise<void> {
  const limit = pLimit(ctx.concurrency ?? 4);
  const states = new Map<Group, GroupState>();
  const fail = (g: Group, err: unknown) => {
    for (const d of g) if (d.kind === 'link' && !outcomes.has(d)) outcomes.set(d, skip('error', oneLine(err)));
  };
  let t = performance.now();
  const lap = (phase: string) => { const now = performance.now(); ctx.trace?.(phase, now - t); t = now; };
  // 1. verify
  const learned: Array<[string, RelPath, FileRecord]> = [];
  await Promise.all(groups.map((g) => limit(() => verifyGroup(g, ctx, outcomes, learned, count.bytes).then((st) => { if (st) states.set(g, st); }, (err) => fail(g, err)))));
  lap('verify');
  afterVerify();
  // 2. journal
  const verified = [...states.values()].flatMap((st) => st.verified);
  const journal: JournalEntry[] = verified.map((v) => ({
    op: 'link', root: ctx.serverRoots.get(v.d.server)!, path: v.d.path, tmp: v.tmp, dev: v.rec.dev, ino: v.rec.ino,
  }));
  for (const [g, st] of states) {
    // The attribute is cleared while links are added to an inode that has it.
    if (st.wasImmutable && st.verified.length > 0) journal.push({ op: 'flag', root: ctx.refRoot, path: g[0].refPath, dev: g[0].ref.dev, ino: g[0].ref.ino });
  }
  for (const v of verified) void ctx.index.putLink(ctx.serverRoots.get(v.d.server)!, v.d.path, v.rec);
  // Inodes that may get the attribute are recorded as vunify's before it is set: a crash
  // in between must not leave an attribute that looks as if someone else had set it.
  for (const [g, st] of states) {
    if (ctx.immutable && !st.ours && !st.wasImmutable) {
      void ctx.index.putInode(g[0].ref.dev, g[0].ref.ino, { root: ctx.refRoot, path: g[0].refPath, setAt: new Date().toISOString() });
    }
  }
  await ctx.index.journalAdd(journal);
  lap('journal');
  count.links = phaseCounter(ctx.progress, 'link', verified.length, 'files');
  // 3. link: more inodes at a time than for reading, since renames wait on the filesystem
  const linkLimit = pLimit(LINK_CONCURRENCY);
  const updates: Array<[string, RelPath, FileRecord | null]> = [...learned];
  ctx.learned = new Map(learned.map(([root, rel, rec]) => [`${root}\0${rel}`, rec.hash]));
  const touched = new Map<string, [string, RelPath]>();
  await Promise.all(groups.map((g) => linkLimit(async () => {
    const st = states.get(g);
    if (st) await linkGroup(g, st, ctx, outcomes, updates, touched).catch((err) => fail(g, err));
    count.links.add(st?.verified.length ?? 0);
  })));
  count.links.end();
  lap('link');
  // 4. folders get their times back; then one syncfs makes every rename durable
  for (const [root, dir] of touched.values()) {
    const times = ctx.dirTimes?.get(`${root}\0${dir}`);
    if (times) {
      await ctx.roots.get(root)!.withDir(dir, (dfd) => setTimesNs(dfd, times.atimeNs, times.mtimeNs)).catch(() => { /* cosmetic */ });
    }
  }
  for (const k of touched.keys()) ctx.touchedDirs?.add(k);
  let synced = true;
  if (touched.size > 0) {
    try {
      syncFilesystem(ctx.roots.get(ctx.refRoot)!.rootFd);
    } catch (err) {
      synced = false; // the journal stays: recover settles these entries once the disk says they are durable
      ctx.problems.push({ root: ctx.refRoot, path: '', reason: `cannot sync the filesystem: ${oneLine(err)}` });
    }
  }
  lap('sync');
  // 5. records
  const notMade = verified.filter((v) => outcomes.get(v.d)?.kind !== 'unified');
  const stuck = ctx.stuckTmps ?? new Set<string>();
  for (const v of verified) {
    if (stuck.has(v.tmp)) ctx.problems.push({ root: ctx.serverRoots.get(v.d.server)!, path: v.d.path, reason: `its temporary name ${v.tmp} could not be removed; the next run (or vunify recover) removes it` });
  }
  await Promise.all([
    ...notMade.map((v) => ctx.index.removeLink(ctx.serverRoots.get(v.d.server)!, v.d.path)),
    ctx.index.putFiles(updates),
    ctx.index.journalDone(synced ? journal.filter((e) => e.op !== 'link' || !stuck.has(e.tmp)) : []),
  ]);
  lap('records');
  // The decisions live to the end of the run (the report): a linked one takes the records
  // just written, so the scanned ones, of every server copy, can go now.
  const now = new Map<string, FileRecord>();
  for (const [root, rel, rec] of updates) if (rec) now.set(`${root}\0${rel}`, rec);
  for (const v of verified) {
    if (outcomes.get(v.d)?.kind !== 'unified') continue;
    v.d.srv = now.get(`${ctx.serverRoots.get(v.d.server)!}\0${v.d.path}`) ?? v.d.srv;
    v.d.ref = now.get(`${ctx.refRoot}\0${v.d.refPath}`) ?? v.d.ref;
  }
}

async function verifyGroup(
  g: Group, ctx: ApplyContext, outcomes: Map<Decision, Outcome>, learned: Array<[string, RelPath, FileRecord]>, bytes: Counter,
): Promise<GroupState | null> {
  const refRoot = ctx.roots.get(ctx.refRoot)!;
  const first = g[0];
  const r = first.ref;
  const links = g.filter((d): d is LinkDecision => d.kind === 'link');
  const { dir: refDir, name: refName } = splitRel(first.refPath);
  return refRoot.withDir(refDir, async (refDirFd) => {
    let ref: OpenedFile;
    try {
      ref = openFileAtSync(refDirFd, refName);
    } catch (err) {
      for (const d of links) outcomes.set(d, skip('changed', `reference: ${oneLine(err)}`));
      return null;
    }
    let refBytes: Buffer | undefined;
    try {
      if (String(ref.stat.ino) !== r.ino || String(ref.stat.dev) !== r.dev || String(ref.stat.mtimeNs) !== r.mtimeNs || Number(ref.stat.size) !== r.size) {
        for (const d of links) outcomes.set(d, skip('changed', 'reference changed since scanned'));
        return null;
      }
      const ours = ctx.index.getInode(r.dev, r.ino) !== undefined;
      const refFlags = flagsOf(ref.fd);
      const wasImmutable = (refFlags & FS_IMMUTABLE_FL) !== 0;
      if (refFlags & FS_APPEND_FL) {
        for (const d of links) outcomes.set(d, skip('appendOnly', 'the reference file is append-only (not set by vunify)'));
        return null;
      }
      if (wasImmutable && !ours) {
        for (const d of links) outcomes.set(d, skip('immutable', 'the reference file was immutable before vunify'));
        return null;
      }
      const refXattrs = readXattrs(ref.fd);
      const state: GroupState = { ours, wasImmutable, refHash: r.hash, verified: [], refStat: ref.stat, refXattrs };
      // A small reference file is read once and held: each server copy is compared with it
      // in memory, instead of reading the reference again for every server.
      if (links.length > 1 && r.size <= HOLD_BYTES) {
        refBytes = await readWhole(ref.fd, r.size);
        ctx.read?.(ctx.refRoot, first.refPath, r.size);
        if (state.refHash === '' && refBytes.length === r.size) {
          const h = new Blake3Hasher();
          h.update(refBytes);
          state.refHash = h.digest('hex');
        }
      }
      for (const d of links) {
        const hasher = state.refHash === '' ? new Blake3Hasher() : undefined;
        const v = await verifyOne(d, ref, refXattrs, refFlags & KEPT_FLAGS, hasher, ctx, learned, refBytes, state).catch((err) => skip('error', oneLine(err)));
        bytes.add(d.srv.size);
        if ('kind' in v) { outcomes.set(d, v); continue; }
        if (hasher) state.refHash = hasher.digest('hex');
        v.rec.refPath = first.refPath;
        if (state.refHash) v.rec.hash = state.refHash;
        state.verified.push(v);
      }
      keepInodesWhole(links, state, outcomes, ctx.linkNames);
      return state;
    } finally {
      if (refBytes) releaseWhole(refBytes);
      await ref.close();
    }
  });
}

/**
 * The names of one server inode go together: when one of them is left private, so are the
 * others (relinking some would only split the inode, and save nothing).
 */
function keepInodesWhole(links: LinkDecision[], state: GroupState, outcomes: Map<Decision, Outcome>, runNames?: Map<string, number>): void {
  const left = new Map<string, Outcome>();
  for (const d of links) {
    const o = outcomes.get(d);
    if (o?.kind === 'skip') left.set(`${d.server}\0${d.srv.ino}`, o);
  }
  // Names not among this run's links (not candidates, or in no package): the inode stays whole.
  for (const v of state.verified) {
    const k = `${v.d.server}\0${v.st1.ino}`;
    const n = runNames?.get(k) ?? 1;
    if (v.st1.nlink > 1n && !left.has(k) && BigInt(n) < v.st1.nlink) {
      left.set(k, skip('otherNames', `the inode has ${v.st1.nlink} names here, ${n} of them linked in this run`));
    }
  }
  if (left.size === 0) return;
  state.verified = state.verified.filter((v) => {
    const o = left.get(`${v.d.server}\0${v.st1.ino}`);
    if (!o || o.kind !== 'skip') return true;
    outcomes.set(v.d, skip(o.reason, `another name of this inode was left private: ${o.detail ?? o.reason}`));
    return false;
  });
}

async function verifyOne(
  d: LinkDecision, ref: OpenedFile, refXattrs: Xattrs, refFlags: number, hasher: Blake3Hasher | undefined, ctx: ApplyContext,
  learned: Array<[string, RelPath, FileRecord]>, refBytes?: Buffer, group?: GroupState,
): Promise<Verified | Outcome> {
  const srvRootPath = ctx.serverRoots.get(d.server)!;
  const { dir, name } = splitRel(d.path);
  return ctx.roots.get(srvRootPath)!.withDir(dir, async (dfd) => {
    const st1 = lstatIn(dfd, name);
    const s = d.srv;
    if (!st1 || !st1.isFile() || String(st1.ino) !== s.ino || String(st1.mtimeNs) !== s.mtimeNs ||
        String(st1.ctimeNs) !== s.ctimeNs || Number(st1.size) !== s.size) {
      return skip('changed', 'changed since scanned');
    }
    const srv = openFileAtSync(dfd, name);
    try {
      if (srv.stat.ino !== st1.ino) return skip('changed', 'replaced while opened');
      const rs = ref.stat;
      const ss = srv.stat;
      if (rs.mode !== ss.mode || rs.uid !== ss.uid || rs.gid !== ss.gid || rs.mtimeNs !== ss.mtimeNs) {
        return skip('metadataDiffers', 'changed since scanned');
      }
      const srvFlags = flagsOf(srv.fd);
      if (srvFlags & FS_IMMUTABLE_FL) return skip('immutable', 'the server\'s file is immutable (not set by vunify)');
      if (srvFlags & FS_APPEND_FL) return skip('appendOnly', 'the server\'s file is append-only');
      // A temporary name could be made in such a folder but never renamed nor removed.
      if (flagsOf(dfd) & (FS_APPEND_FL | FS_IMMUTABLE_FL)) return skip('appendOnly', 'its folder is append-only or immutable');
      if ((srvFlags & KEPT_FLAGS) !== refFlags) return skip('metadataDiffers', `inode flags (lsattr) differ: ${(srvFlags & KEPT_FLAGS).toString(16)} here, ${refFlags.toString(16)} in the reference`);
      const srvXattrs = readXattrs(srv.fd);
      if (!sameXattrs(refXattrs, srvXattrs)) return skip('metadataDiffers', 'xattrs');
      const cmp = refBytes && refBytes.length === Number(rs.size)
        ? { same: await sameAsBuffer(srv.fd, refBytes) }
        : await sameBytes(ref.fd, srv.fd, hasher, Number(ss.size));
      ctx.read?.(ctx.refRoot, d.refPath, Number(rs.size));
      ctx.read?.(srvRootPath, d.path, Number(ss.size));
      if (!cmp.same) {
        // Record both hashes, so that the next run knows without reading again.
        if (d.srv.hash === '') learned.push([srvRootPath, d.path, { ...d.srv, hash: (await hashFd(srv.fd)).hash }]);
        // The reference's hash once per group: held bytes or an earlier mismatch may know it.
        if (d.ref.hash === '' && !group?.refLearned) {
          const refHash = group?.refHash || (await hashFd(ref.fd)).hash;
          if (group) Object.assign(group, { refHash, refLearned: true });
          learned.push([ctx.refRoot, d.refPath, { ...d.ref, hash: refHash }]);
        }
        return skip('contentDiffers', 'the bytes differ');
      }
      return {
        d, st1, tmp: tmpName(),
        rec: {
          refRoot: ctx.refRoot, refPath: d.refPath, dev: String(rs.dev), ino: String(rs.ino),
          size: Number(ss.size), pkg: d.pkg,
          mode: Number(ss.mode), uid: Number(ss.uid), gid: Number(ss.gid),
          atimeNs: String(ss.atimeNs), mtimeNs: String(ss.mtimeNs),
          xattrs: Object.fromEntries(Object.entries(srvXattrs).map(([k, v]) => [k, v.toString('base64')])),
          ...(srvFlags & KEPT_FLAGS ? { flags: srvFlags & KEPT_FLAGS } : {}),
          linkedAt: new Date().toISOString(),
        },
      };
    } finally {
      await srv.close();
    }
  });
}

async function linkGroup(
  g: Group,
  state: GroupState,
  ctx: ApplyContext,
  outcomes: Map<Decision, Outcome>,
  updates: Array<[string, RelPath, FileRecord | null]>,
  touched: Map<string, [string, RelPath]>,
): Promise<void> {
  const refRoot = ctx.roots.get(ctx.refRoot)!;
  const first = g[0];
  const r = { ...first.ref, hash: state.refHash };
  const { dir: refDir, name: refName } = splitRel(first.refPath);
  await refRoot.withDir(refDir, async (refDirFd) => {
    const ref = openFileAtSync(refDirFd, refName);
    try {
      if (String(ref.stat.ino) !== r.ino) {
        for (const v of state.verified) outcomes.set(v.d, skip('changed', 'reference replaced while linking'));
        return;
      }
      if (state.verified.length > 0) {
        const refused = holdOff(ref.fd, state);
        if (refused) {
          for (const v of state.verified) outcomes.set(v.d, refused);
          return;
        }
      }
      let cleared = false;
      let attempted = false;
      let failure: unknown;
      const extra: SecondCopy[] = [];
      try {
        if (state.verified.length > 0 && state.wasImmutable) {
          cleared = setImmutable(ref.fd, false);
          faultPoint();
        }
        let canon = { fd: ref.fd, ino: ref.stat.ino };
        const known = ctx.secondCopies?.get(`${r.dev}:${r.ino}`);
        if (known && state.verified.length > 0) {
          canon = await useSecondCopy(known.root, known.path, known.ino, known.sig, state.verified, ctx, extra);
        }
        for (let i = 0; i < state.verified.length; i++) {
          const v = state.verified[i];
          const out = await linkVerified(v, canon.fd, ctx, touched).catch((err) => skip('error', oneLine(err)));
          outcomes.set(v.d, out);
          const rest = state.verified.slice(i + 1);
          if (out.kind === 'unified' && v.st1.nlink > 1n) {
            try { rebaseline(v, rest, ctx); } catch { /* the other names keep their signature: the re-check decides */ }
          }
          if (out.kind === 'skip' && out.reason === 'linkLimit') {
            // This copy is shared instead: by the rest of this inode's links now, and by
            // servers handled later in this run.
            const copy = { root: ctx.serverRoots.get(v.d.server)!, path: v.d.path, ino: v.st1.ino, sig: sigOf(v.st1) };
            (ctx.secondCopies ??= new Map()).set(`${r.dev}:${r.ino}`, copy);
            if (rest.length > 0) canon = await useSecondCopy(copy.root, copy.path, copy.ino, copy.sig, rest, ctx, extra);
          }
        }
      } catch (err) {
        failure = err; // second copies and a broken lease are settled first, then it is reported
      } finally {
        const now = await fstat(ref.fd, { bigint: true }).catch(() => null);
        const shared = now !== null && now.nlink > 1n;
        if ((ctx.immutable && shared && !state.wasImmutable) || cleared) {
          try {
            setImmutable(ref.fd, true);
            faultPoint();
          } catch (err) {
            // The links stand (the files are identical); the missing attribute is reported.
            ctx.problems.push({ root: ctx.refRoot, path: first.refPath, reason: `cannot set the immutable attribute: ${oneLine(err)}` });
          }
        }
        if (state.verified.length > 0) {
          const servers = state.verified.filter((v) => outcomes.get(v.d)?.kind === 'unified').map((v) => v.d.server);
          attempted = heldOffCheck(ref.fd, state, ctx, first.refPath, servers);
        }
      }
      for (const c of extra) {
        await finishSecondCopy(c, ctx);
        if (writeAttempted(c.file.fd)) {
          // As for the reference: a held-off opener gets a descriptor on this inode.
          const names: Array<{ root: string; path: RelPath; d?: Decision }> = [{ root: c.rootPath, path: c.path }, ...c.rest.filter((v) => outcomes.get(v.d)?.kind === 'unified').map((v) => ({ root: ctx.serverRoots.get(v.d.server)!, path: v.d.path, d: v.d }))];
          ctx.problems.push({ root: c.rootPath, path: c.path, reason: 'opened for writing while being shared (second copy); every name of it given a private copy again' });
          await evictNames(c.file.fd, names, '', ctx, outcomes, updates);
          ctx.secondCopies?.delete(`${r.dev}:${r.ino}`);
          await c.file.close();
          c.held.release();
          continue;
        }
        const known = ctx.secondCopies?.get(`${r.dev}:${r.ino}`);
        if (known && known.ino === c.ino) known.sig = sigOf(fs.fstatSync(c.file.fd, { bigint: true }));
        await refreshInode(ctx, { ...r, hash: state.refHash || r.hash, ino: String(c.ino) }, [[c.rootPath, c.path], ...c.linked()], updates, fs.fstatSync(c.file.fd, { bigint: true }));
        await c.file.close();
        c.held.release();
      }
      if (attempted) {
        await evictGroup(g, ref, state, ctx, outcomes, updates);
        if (failure) throw failure;
        return;
      }
      if (failure) throw failure;
      // Linking and the attribute moved the inode's ctime and nlink: record the new
      // signatures (and the hash learnt while comparing) so the next scan reads nothing.
      // Every name of the reference's inode that this group knows (a package may ship it twice).
      const paths: Array<[string, RelPath]> = [[ctx.refRoot, first.refPath], ...g.map((d): [string, RelPath] => [ctx.refRoot, d.refPath]), ...g
        .filter((d) => d.kind === 'already' || outcomes.get(d)?.kind === 'unified')
        .map((d): [string, RelPath] => [ctx.serverRoots.get(d.server)!, d.path])];
      // Also when the content was never read (a group visited only to put the attribute
      // on): its ctime moved all the same.
      await refreshInode(ctx, { ...r, hash: state.refHash || r.hash }, paths, updates, fs.fstatSync(ref.fd, { bigint: true }));
    } finally {
      await ref.close();
    }
  });
}

interface SecondCopy {
  rootPath: string;
  path: RelPath;
  ino: bigint;
  held: { fd: number; release: () => void };
  file: OpenedFile;
  linked: () => Array<[string, RelPath]>;
  rest: Verified[];
}

/**
 * When the shared inode is full (EMLINK), the server copy that could not be linked stays
 * private and becomes the shared copy for the remaining servers.
 * Points the remaining links of an inode at a second shared copy: it is opened (and must
 * still be the inode it was), its attribute lifted while links are added (journaled), and
 * the link records and journal entries are rewritten to it, durably, before any link.
 */
async function useSecondCopy(
  rootPath: string, rel: RelPath, ino: bigint, sig: Sig, rest: Verified[], ctx: ApplyContext, extra: SecondCopy[],
): Promise<{ fd: number; ino: bigint }> {
  const { dir, name } = splitRel(rel);
  const held = ctx.roots.get(rootPath)!.holdDir(dir);
  let file: OpenedFile;
  try {
    file = openFileAtSync(held.fd, name);
  } catch (err) {
    held.release();
    throw err;
  }
  try {
    if (file.stat.ino !== ino) throw new Error('the copy to share instead changed meanwhile');
    takeReadLease(file.fd);
    // Held now: it must still be exactly what was compared (or what the last chunk left).
    if (!sameSig(sigOf(fs.fstatSync(file.fd, { bigint: true })), sig)) throw new Error('the copy to share instead was changed after it was compared');
  } catch (err) {
    await file.close();
    held.release();
    throw err;
  }
  const dev = String(file.stat.dev);
  for (const r of rest) r.rec = { ...r.rec, refRoot: rootPath, refPath: rel, ino: String(ino) };
  for (const r of rest) void ctx.index.putLink(ctx.serverRoots.get(r.d.server)!, r.d.path, r.rec);
  if (ctx.immutable) void ctx.index.putInode(dev, String(ino), { root: rootPath, path: rel, setAt: new Date().toISOString() });
  const journal: JournalEntry[] = rest.map((r) => ({ op: 'link', root: ctx.serverRoots.get(r.d.server)!, path: r.d.path, tmp: r.tmp, dev: r.rec.dev, ino: r.rec.ino }));
  const lifted = isImmutable(file.fd);
  if (lifted) journal.push({ op: 'flag', root: rootPath, path: rel, dev, ino: String(ino) });
  await ctx.index.journalAdd(journal);
  if (lifted) setImmutable(file.fd, false);
  extra.push({
    rootPath, path: rel, ino, held, file,
    linked: () => rest.filter((r) => r.rec.ino === String(ino)).map((r) => [ctx.serverRoots.get(r.d.server)!, r.d.path]),
    rest: rest.filter((r) => r.rec.ino === String(ino)),
  });
  return { fd: file.fd, ino };
}

async function finishSecondCopy(c: SecondCopy, ctx: ApplyContext): Promise<void> {
  if (!ctx.immutable && !ctx.index.getInode(String(c.file.stat.dev), String(c.ino))) return;
  try {
    if (fs.fstatSync(c.file.fd, { bigint: true }).nlink > 1n) setImmutable(c.file.fd, true);
  } catch (err) {
    ctx.problems.push({ root: c.rootPath, path: c.path, reason: `cannot set the immutable attribute: ${oneLine(err)}` });
  }
}

/**
 * Names of one server inode (a package that ships one inode under two names) are linked in
 * turn: relinking one moves the inode's ctime and link count, so each other name's expected
 * signature follows, as long as nothing else about the inode moved.
 */
function rebaseline(done: Verified, rest: Verified[], ctx: ApplyContext): void {
  for (const w of rest) {
    if (w.d.server !== done.d.server || w.st1.ino !== done.st1.ino) continue;
    const { dir, name } = splitRel(w.d.path);
    const now = ctx.roots.get(ctx.serverRoots.get(w.d.server)!)!.withDirSync(dir, (dfd) => lstatIn(dfd, name));
    if (now && now.ino === w.st1.ino && now.size === w.st1.size && now.mtimeNs === w.st1.mtimeNs && now.nlink === w.st1.nlink - 1n &&
        now.mode === w.st1.mode && now.uid === w.st1.uid && now.gid === w.st1.gid) {
      w.st1 = now;
    }
  }
}

/**
 * Takes a read lease on the reference before its first link: from then on no process can
 * open the inode for writing, under any name, until the attribute is on and the fd closed.
 * Refused while someone holds it open for writing (its tenant, say). The reference must be
 * as compared: its ctime moves with any change since.
 */
function holdOff(fd: number, state: GroupState): Outcome | null {
  try {
    takeReadLease(fd);
  } catch (err) {
    if (isErrno(err, 'EAGAIN')) return skip('inUse', 'the reference file is open for writing: left private until it is closed');
    return skip('error', `cannot lease the reference file: ${oneLine(err)}`);
  }
  const now = fs.fstatSync(fd, { bigint: true });
  const was = state.refStat;
  if (now.ctimeNs !== was.ctimeNs || now.size !== was.size || now.mtimeNs !== was.mtimeNs) {
    return skip('changed', 'the reference changed after it was compared');
  }
  return null;
}

/**
 * After the attribute: a broken lease means someone tried to open the shared inode for
 * writing while its links were made (held off until now, when the attribute refuses it).
 * Metadata calls (chmod, chown, setxattr, utimes) are not held off by a lease: any change
 * to the shared inode since the comparison is put back and reported.
 */
function heldOffCheck(fd: number, state: GroupState, ctx: ApplyContext, refPath: RelPath, servers: string[]): boolean {
  const where = servers.length ? `while it was being shared with ${servers.join(', ')}` : 'while it was being shared';
  const was = state.refStat;
  for (let attempt = 0; attempt < 3; attempt++) {
    const now = fs.fstatSync(fd, { bigint: true });
    const xattrs = readXattrs(fd);
    const same = now.mode === was.mode && now.uid === was.uid && now.gid === was.gid && now.size === was.size &&
      now.mtimeNs === was.mtimeNs && sameXattrs(xattrs, state.refXattrs);
    if (same) break;
    if (now.size !== was.size) {
      ctx.problems.push({ root: ctx.refRoot, path: refPath, reason: `its size changed ${where}` });
      break;
    }
    const lifted = setImmutable(fd, false);
    try {
      setMetadata(fd, { uid: Number(was.uid), gid: Number(was.gid), mode: Number(was.mode), xattrs: state.refXattrs, atimeNs: now.atimeNs, mtimeNs: was.mtimeNs });
    } finally {
      if (lifted) setImmutable(fd, true);
    }
    if (attempt === 0) ctx.problems.push({ root: ctx.refRoot, path: refPath, reason: `its metadata was changed ${where}; put back` });
  }
  // Read last: an open may also come while the attribute was lifted to put metadata back.
  const attempted = writeAttempted(fd);
  if (attempted) ctx.problems.push({ root: ctx.refRoot, path: refPath, reason: `opened for writing ${where}; held off, and every name of it given a private copy again` });
  return attempted;
}

/**
 * True when someone tried to open the leased inode for writing (the lease is breaking or
 * gone), or already holds it open for writing: a second read lease on a fresh descriptor
 * is refused (EAGAIN) while any writer has it open.
 */
function writeAttempted(fd: number): boolean {
  try {
    if (!leaseIntact(fd)) return true;
    const probe = fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_RDONLY | fs.constants.O_NOATIME);
    try {
      takeReadLease(probe);
    } catch (err) {
      return true;
    } finally {
      fs.closeSync(probe);
    }
    return false;
  } catch {
    return true;
  }
}

/**
 * Gives each name (that still names fd's inode) a private copy of the inode's content and
 * metadata: journaled as undo copies are, through a temporary name and rename. The inode's
 * attribute is lifted for the renames and put back while any name is left. Returns which
 * names got their copy.
 */
async function privateCopies(fd: number, given: Array<{ root: string; path: RelPath; atimeNs?: bigint }>, ctx: ApplyContext, hash = ''): Promise<boolean[]> {
  const st = fs.fstatSync(fd, { bigint: true });
  // Every name the index knows for the inode, in any root: a root outside this run shares
  // the inode the held-off opener will write to just as much.
  const names = [...given];
  const seen = new Set(names.map((n) => `${n.root}\0${n.path}`));
  for (const h of hash ? ctx.index.holders(hash) : []) {
    const rec = ctx.index.getFile(h.root, h.path);
    if (rec && rec.dev === String(st.dev) && rec.ino === String(st.ino) && !seen.has(`${h.root}\0${h.path}`)) {
      seen.add(`${h.root}\0${h.path}`);
      names.push(h);
    }
  }
  const opened = new Map<string, RootDir>();
  const rootOf = async (root: string) => ctx.roots.get(root) ?? opened.get(root) ?? opened.set(root, await RootDir.open(root)).get(root)!;
  const flags = flagsOf(fd);
  const want: Metadata = {
    uid: Number(st.uid), gid: Number(st.gid), mode: Number(st.mode), xattrs: readXattrs(fd), flags: flags & KEPT_FLAGS, atimeNs: st.atimeNs, mtimeNs: st.mtimeNs,
  };
  const journal: Array<Extract<JournalEntry, { op: 'undo' }>> = names.map((n) => ({ op: 'undo', root: n.root, path: n.path, tmp: tmpName(), dev: String(st.dev), ino: String(st.ino) }));
  await ctx.index.journalAdd(journal);
  const made = names.map(() => false);
  const ready = names.map(() => false);
  const stuck = new Set<string>();
  // 1. every copy, while the attribute is still on: a lease the kernel times out (after
  // lease-break-time) lets an opener write; a copy whose bytes are not the known content is not used.
  for (let i = 0; i < names.length; i++) {
    const n = names[i];
    const tmp = journal[i].tmp;
    const { dir, name } = splitRel(n.path);
    try {
      await (await rootOf(n.root)).withDir(dir, async (dfd) => {
        const cur = lstatIn(dfd, name);
        if (!cur || cur.ino !== st.ino) return; // no longer this inode's name
        const out = await fsp.open(at(dfd, tmp), fs.constants.O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600); // read back for the hash
        try {
          await copyFd(fd, out.fd);
          setMetadata(out.fd, { ...want, atimeNs: n.atimeNs ?? st.atimeNs });
          await out.sync();
          if (hash && (await hashFd(out.fd)).hash !== hash) throw new Error('the shared content changed before it could be copied');
          ready[i] = true;
        } finally {
          await out.close();
        }
      });
    } catch (err) {
      ctx.problems.push({ root: n.root, path: n.path, reason: `cannot give it a private copy again: ${oneLine(err)}` });
    }
  }
  // 2. the renames, back to back, with the attribute lifted only for them
  if (flags & FS_IMMUTABLE_FL) setImmutable(fd, false);
  try {
    for (let i = 0; i < names.length; i++) {
      const n = names[i];
      const tmp = journal[i].tmp;
      const { dir, name } = splitRel(n.path);
      await (await rootOf(n.root)).withDir(dir, async (dfd) => {
        try {
          if (ready[i]) {
            fs.renameSync(at(dfd, tmp), at(dfd, name));
            made[i] = true;
          }
        } catch (err) {
          ctx.problems.push({ root: n.root, path: n.path, reason: `cannot give it a private copy again: ${oneLine(err)}` });
        } finally {
          if (!made[i] && !(await dropTmp(dfd, tmp))) stuck.add(tmp);
        }
      }).catch((err) => ctx.problems.push({ root: n.root, path: n.path, reason: oneLine(err) }));
    }
  } finally {
    const left = fs.fstatSync(fd, { bigint: true }).nlink;
    if (left > 0n && (flags & FS_IMMUTABLE_FL)) setImmutable(fd, true);
    if (left > 0n) ctx.problems.push({ root: names[0].root, path: names[0].path, reason: `${left} name(s) outside this run still share the inode` });
  }
  for (const d of opened.values()) await d.close();
  syncFilesystem(ctx.roots.get(ctx.refRoot)!.rootFd);
  for (const t of stuck) ctx.stuckTmps?.add(t);
  await ctx.index.journalDone(journal.filter((e) => !stuck.has(e.tmp)));
  return made;
}

/**
 * An open for writing that the lease held off goes on once the lease is dropped, with a
 * descriptor on the shared inode: ext4 refuses its writes once the attribute is on, XFS and
 * btrfs do not. So every name of the inode in this run's roots gets a private copy (the
 * compared content and metadata, journaled as undo copies are) while the lease still holds,
 * and that descriptor is left on an inode no root names.
 */
async function evictGroup(
  g: Group, ref: OpenedFile, state: GroupState, ctx: ApplyContext, outcomes: Map<Decision, Outcome>,
  updates: Array<[string, RelPath, FileRecord | null]>,
): Promise<void> {
  const was = state.refStat;
  const names: Array<{ root: string; path: RelPath; atimeNs: bigint; d?: Decision }> = [{ root: ctx.refRoot, path: g[0].refPath, atimeNs: was.atimeNs }];
  for (const d of g) {
    if (d.kind === 'already' || outcomes.get(d)?.kind === 'unified') {
      const v = state.verified.find((x) => x.d === d);
      names.push({ root: ctx.serverRoots.get(d.server)!, path: d.path, atimeNs: v ? BigInt(v.rec.atimeNs) : was.atimeNs, d });
    }
  }
  await evictNames(ref.fd, names, state.refHash, ctx, outcomes, updates);
}

/** privateCopies for an inode's names, and what it means for their decisions and records. */
async function evictNames(
  fd: number, names: Array<{ root: string; path: RelPath; atimeNs?: bigint; d?: Decision }>, hash: string, ctx: ApplyContext,
  outcomes: Map<Decision, Outcome>, updates: Array<[string, RelPath, FileRecord | null]>,
): Promise<void> {
  const made = await privateCopies(fd, names, ctx, hash);
  for (let i = 0; i < names.length; i++) {
    const n = names[i];
    if (n.d && made[i]) {
      if (n.d.kind === 'link') outcomes.set(n.d, skip('inUse', 'opened for writing while being linked; left private'));
      await ctx.index.removeLink(n.root, n.path);
    }
    updates.push([n.root, n.path, null]); // the next scan reads it again
  }
  const st = fs.fstatSync(fd, { bigint: true });
  if (st.nlink === 0n) await ctx.index.removeInode(String(st.dev), String(st.ino));
}

async function linkVerified(v: Verified, canonFd: number, ctx: ApplyContext, touched: Map<string, [string, RelPath]>): Promise<Outcome> {
  const srvRootPath = ctx.serverRoots.get(v.d.server)!;
  const { dir, name } = splitRel(v.d.path);
  return ctx.roots.get(srvRootPath)!.withDir(dir, async (dfd) => {
    await rememberDirTimes(ctx, srvRootPath, dir, dfd);
    touched.set(`${srvRootPath}\0${dir}`, [srvRootPath, dir]);
    let tmp: string | null = null;
    try {
      // Linked from the open shared file itself: no name can be swapped under it. The
      // temporary name is ours only once this succeeds (EEXIST: someone else's file).
      linkFd(canonFd, dfd, v.tmp);
      tmp = v.tmp;
      afterTmpLink();
      faultPoint();
      const st2 = lstatIn(dfd, name);
      if (!st2 || !sameSignatureStats(v.st1, st2)) return skip('changed', 'written after it was compared');
      // Renaming over a file frees its inode: ~0.1 ms of filesystem work here. In libuv's
      // pool, several inodes' renames run at once (measured: 16,200 renames 2.0 s in
      // sequence, 1.1 s eight at a time).
      await fsp.rename(at(dfd, tmp), at(dfd, name));
      tmp = null;
      faultPoint();
      // The server's inode is freed with its last name: counted once, apparent and on disk.
      const last = v.st1.nlink === 1n;
      return { kind: 'unified', bytesSaved: last ? Number(v.st1.size) : 0, diskSaved: last ? Number(v.st1.blocks) * 512 : 0 };
    } catch (err) {
      if (isErrno(err, 'EXDEV')) return skip('otherFilesystem', oneLine(err));
      if (isErrno(err, 'EMLINK')) return skip('linkLimit', 'the shared copy has the most links the filesystem allows; this copy is shared from now on');
      return skip('error', oneLine(err));
    } finally {
      // A name that cannot go now (a read-only remount) stays journaled: recover removes it.
      if (tmp !== null && !(await dropTmp(dfd, tmp))) ctx.stuckTmps?.add(v.tmp);
    }
  });
}

/**
 * Re-records every indexed path of an inode whose ctime or nlink this run changed (the
 * given paths, and any holder of its content in the roots open now), keeping the hash.
 */
async function refreshInode(
  ctx: ApplyContext,
  r: { dev: string; ino: string; hash: string; xattrs: string },
  extra: Array<[string, RelPath]>,
  updates: Array<[string, RelPath, FileRecord | null]>,
  inode?: fs.BigIntStats,
): Promise<void> {
  const seen = new Set<string>();
  let last: FileRecord | undefined;
  const todo: Array<[string, RelPath]> = [...extra];
  for (const h of r.hash ? ctx.index.holders(r.hash) : []) {
    const rec = ctx.index.getFile(h.root, h.path);
    if (rec && rec.dev === r.dev && rec.ino === r.ino) todo.push([h.root, h.path]);
  }
  for (const [root, rel] of todo) {
    const key = `${root}\0${rel}`;
    const dir = ctx.roots.get(root);
    if (seen.has(key) || !dir) continue;
    seen.add(key);
    // With the inode's own stat, every name of it has that signature: no lstat per name.
    // A name that moved on meanwhile is caught by the next scan (its inode differs).
    const st = inode ?? (await dir.lstat(rel).catch(() => null));
    if (st && String(st.ino) === r.ino && String(st.dev) === r.dev) {
      const old = ctx.index.getFile(root, rel);
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

/** A server file to make private again: it shares the reference's inode, or vunify linked it. */
export interface UndoItem {
  server: string; path: RelPath; pkg: string; dev: string; ino: string; refPath?: RelPath; tmp?: string;
  /** Reflinked (its own inode): the copy takes the file's current metadata, and no attribute is involved. */
  reflink?: boolean;
}

/** Puts private copies back, one shared inode at a time. */
export async function applyUndo(items: UndoItem[], ctx: ApplyContext): Promise<Map<UndoItem, Outcome>> {
  const outcomes = new Map<UndoItem, Outcome>();
  ctx.stuckTmps ??= new Set();
  const groups = new Map<string, UndoItem[]>();
  for (const it of items) {
    const key = `${it.dev}:${it.ino}`;
    const g = groups.get(key) ?? [];
    g.push(it);
    groups.set(key, g);
  }
  const limit = pLimit(ctx.concurrency ?? 4);
  const updates: Array<[string, RelPath, FileRecord | null]> = [];
  // Journal every copy about to be made, and every attribute about to be lifted.
  const journal: JournalEntry[] = [];
  for (const it of items) {
    it.tmp = tmpName();
    journal.push({ op: 'undo', root: ctx.serverRoots.get(it.server)!, path: it.path, tmp: it.tmp, dev: it.dev, ino: it.ino });
  }
  for (const g of groups.values()) {
    if (g.every((it) => it.reflink)) continue;
    const withRef = g.find((it) => it.refPath !== undefined);
    journal.push(withRef
      ? { op: 'flag', root: ctx.refRoot, path: withRef.refPath!, dev: g[0].dev, ino: g[0].ino }
      : { op: 'flag', root: ctx.serverRoots.get(g[0].server)!, path: g[0].path, dev: g[0].dev, ino: g[0].ino });
  }
  await ctx.index.journalAdd(journal);
  const counter = phaseCounter(ctx.progress, 'undo', items.length, 'files');
  await Promise.all(
    [...groups.values()].map((group) =>
      limit(async () => {
        // Undo lifts the attribute of a shared inode for its renames: the same lease as
        // linking holds every write-open of it off meanwhile.
        // Reflinked files share no inode: no attribute is lifted, nothing to hold off.
        const held = group.every((it) => it.reflink) ? null : holdUndoGroup(group, ctx);
        if (held === 'inUse' || held === 'none') {
          const why = held === 'inUse' ? skip('inUse', 'the shared file is open for writing: left as it is') : skip('changed', 'no name of the shared inode could be held: left as it is');
          for (const it of group) { counter.add(1); outcomes.set(it, why); }
          return;
        }
        try {
          for (const it of group) {
            counter.add(1);
            // An opener held off already: stop lifting the attribute; the names go private below.
            if (held && writeAttempted(held.fd)) { outcomes.set(it, skip('inUse', 'opened for writing while undone: given a private copy')); continue; }
            const srvRoot = ctx.serverRoots.get(it.server)!;
            const old = ctx.index.getFile(srvRoot, it.path);
            const out = await undoOne(it, ctx).catch((err) => skip('error', oneLine(err)));
            outcomes.set(it, out);
            if (out.kind === 'restored') {
              // The private copy has the shared content: record it so a rescan need not read it.
              const st = await ctx.roots.get(srvRoot)!.lstat(it.path).catch(() => null);
              updates.push([srvRoot, it.path, st && old && old.ino === it.ino ? recordOf(st, old.hash, old.xattrs, old.pkg) : null]);
            }
          }
          if (held && writeAttempted(held.fd)) {
            // A held-off opener gets a descriptor on the inode: every name left on it goes private too.
            const refPath = group.find((it) => it.refPath !== undefined)?.refPath;
            const names: Array<{ root: string; path: RelPath }> = [
              ...(refPath !== undefined ? [{ root: ctx.refRoot, path: refPath }] : []),
              ...group.filter((it) => outcomes.get(it)?.kind !== 'restored').map((it) => ({ root: ctx.serverRoots.get(it.server)!, path: it.path })),
            ];
            ctx.problems.push({ root: names[0]?.root ?? ctx.refRoot, path: names[0]?.path ?? group[0].path, reason: 'opened for writing while its links were undone; held off, and every name of it given a private copy' });
            const rec = ctx.index.getFile(ctx.serverRoots.get(group[0].server)!, group[0].path) ?? (refPath !== undefined ? ctx.index.getFile(ctx.refRoot, refPath) : undefined);
            await privateCopies(held.fd, names, ctx, rec && rec.ino === group[0].ino ? rec.hash : '');
            for (const n of names) updates.push([n.root, n.path, null]);
          }
        } catch (err) {
          for (const it of group) if (!outcomes.has(it)) outcomes.set(it, skip('error', oneLine(err)));
        } finally {
          if (held) await held.close();
        }
        // The shared inode lost links (its ctime moved): refresh the records that remain on it.
        const known = ctx.index.getFile(ctx.serverRoots.get(group[0].server)!, group[0].path);
        const refPath = group.find((it) => it.refPath !== undefined)?.refPath;
        const onInode = (f?: FileRecord) => (f && f.dev === group[0].dev && f.ino === group[0].ino ? f : undefined);
        const base = onInode(known) ?? onInode(refPath !== undefined ? ctx.index.getFile(ctx.refRoot, refPath) : undefined);
        if (base) {
          await refreshInode(ctx, { dev: group[0].dev, ino: group[0].ino, hash: base.hash, xattrs: base.xattrs },
            refPath !== undefined ? [[ctx.refRoot, refPath]] : [], updates);
        }
      }),
    ),
  );
  counter.end();
  await ctx.index.putFiles(updates);
  // A temporary copy that could not be removed (a read-only remount) stays journaled for recover.
  const stuck = ctx.stuckTmps ?? new Set<string>();
  for (const e of journal) if (e.op === 'undo' && stuck.has(e.tmp)) ctx.problems.push({ root: e.root, path: e.path, reason: `its temporary name ${e.tmp} could not be removed; the next run (or vunify recover) removes it` });
  await ctx.index.journalDone(journal.filter((e) => e.op !== 'undo' || !stuck.has(e.tmp)));
  return outcomes;
}

/**
 * A read lease on a group's shared inode, through any of its names (the reference's, then
 * the servers'): 'inUse' when a writer holds it open, 'none' when no name of it can be
 * opened as that inode (nothing is then lifted).
 */
function holdUndoGroup(group: UndoItem[], ctx: ApplyContext): OpenedFile | 'inUse' | 'none' {
  const refPath = group.find((it) => it.refPath !== undefined)?.refPath;
  const names: Array<[string, RelPath]> = [
    ...(refPath !== undefined ? [[ctx.refRoot, refPath] as [string, RelPath]] : []),
    ...group.map((it): [string, RelPath] => [ctx.serverRoots.get(it.server)!, it.path]),
  ];
  for (const [root, rel] of names) {
    const { dir, name } = splitRel(rel);
    let f: OpenedFile;
    try {
      f = ctx.roots.get(root)!.withDirSync(dir, (dfd) => openFileAtSync(dfd, name));
    } catch {
      continue;
    }
    if (String(f.stat.ino) !== group[0].ino || String(f.stat.dev) !== group[0].dev) {
      void f.close();
      continue;
    }
    try {
      takeReadLease(f.fd);
    } catch (err) {
      void f.close();
      if (isErrno(err, 'EAGAIN')) return 'inUse';
      continue;
    }
    return f;
  }
  return 'none';
}

async function undoOne(it: UndoItem, ctx: ApplyContext): Promise<Outcome> {
  const srvRootPath = ctx.serverRoots.get(it.server)!;
  const srvRoot = ctx.roots.get(srvRootPath)!;
  const { dir, name } = splitRel(it.path);
  return srvRoot.withDir(dir, async (dfd) => {
    const cur = openFileAtSync(dfd, name);
    let tmp: string | null = null;
    let restoreDir = () => {};
    try {
      if (String(cur.stat.ino) !== it.ino || String(cur.stat.dev) !== it.dev) return skip('changed', 'changed since checked');
      const rec = ctx.index.getLink(srvRootPath, it.path);
      const useRec = rec && rec.ino === it.ino && rec.dev === it.dev && !it.reflink ? rec : undefined;
      if (it.reflink && isImmutable(cur.fd)) return skip('immutable', 'made immutable since it was reflinked; left as it is');
      const want = useRec
        ? {
            mode: useRec.mode, uid: useRec.uid, gid: useRec.gid,
            atimeNs: BigInt(useRec.atimeNs), mtimeNs: BigInt(useRec.mtimeNs),
            xattrs: Object.fromEntries(Object.entries(useRec.xattrs).map(([k, v]) => [k, Buffer.from(v, 'base64')])) as Xattrs,
            flags: useRec.flags ?? 0,
          }
        : {
            mode: Number(cur.stat.mode), uid: Number(cur.stat.uid), gid: Number(cur.stat.gid),
            atimeNs: cur.stat.atimeNs, mtimeNs: cur.stat.mtimeNs, xattrs: readXattrs(cur.fd), flags: flagsOf(cur.fd) & KEPT_FLAGS,
          };
      restoreDir = await rememberDirTimes(ctx, srvRootPath, dir, dfd);
      const name2 = it.tmp ?? tmpName();
      const out = await fsp.open(at(dfd, name2), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
      tmp = name2; // ours only once created (EEXIST: someone else's file, left alone)
      try {
        await copyFd(cur.fd, out.fd);
        setMetadata(out.fd, want);
        await out.sync();
      } finally {
        await out.close();
      }
      faultPoint();
      const wasImmutable = isImmutable(cur.fd);
      if (wasImmutable) setImmutable(cur.fd, false);
      try {
        faultPoint();
        fs.renameSync(at(dfd, tmp), at(dfd, name));
        tmp = null;
        restoreDir();
        await fsyncFd(dfd);
        faultPoint();
      } finally {
        if (wasImmutable) {
          const now = await fstat(cur.fd, { bigint: true });
          // Still shared: the attribute goes back on. Alone now, it stays off, whichever
          // index (or tool) set it: an inode shared across roots got it to protect the
          // sharing, and a lone immutable file would stop its own package manager.
          if (now.nlink > 1n) setImmutable(cur.fd, true);
          else if (ctx.index.getInode(it.dev, it.ino) !== undefined) await ctx.index.removeInode(it.dev, it.ino);
        }
      }
      if (rec) await ctx.index.removeLink(srvRootPath, it.path);
      return { kind: 'restored' };
    } catch (err) {
      if (isErrno(err, 'ENOSPC', 'EROFS', 'EPERM', 'EDQUOT')) return skip('error', oneLine(err));
      throw err;
    } finally {
      if (tmp !== null) {
        if (!(await dropTmp(dfd, tmp))) ctx.stuckTmps?.add(tmp);
        restoreDir();
      }
      await cur.close();
    }
  });
}
