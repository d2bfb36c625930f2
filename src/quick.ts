// The quick rescan: when nothing the last complete unify depended on has changed, its
// outcome cannot have changed either, and a rescan can say so without the index.
//
// "Nothing changed" is checked, not assumed: every folder listing the run read (or that
// holds a candidate) gives the same getdents bytes (names and inode numbers: a file added,
// removed, renamed or replaced shows there, with no trust in folder times), every candidate
// inode keeps its size, mtime and ctime (content, mode, owner, xattrs, link count and the
// immutable attribute all move ctime), the mounts below the roots are the same, and so are
// the options, the index file and vunify's version. Each inode is stat'ed once however many
// servers share it. Anything else runs the full rescan, which is always right.
//
// This module loads no LMDB and none of the pipeline: the CLI tries it before importing them.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { UnifyFlags } from './model.js';
import { lastKeyMemo, splitRel, type RelPath } from './fsx/rootdir.js';
import { DT_DIR, DT_REG, DT_UNKNOWN, closeFd, forEachDirent, nsText, openDirAt, rawStat, readDirents, statRawAt } from './fsx/sys.js';
import { takeLock } from './lock.js';
import { DEFAULT_DB, DEFAULT_VSERVERS_DIR, serverPath } from './paths.js';
import type { FileLine, Report } from './report.js';
import { INODE_WORDS, quickPath, readQuick, writeQuick, type QuickFolder, type QuickHeader, type QuickRoot, type QuickState } from './store/quick-file.js';

/** What the quick check needs of a run's options. */
export type QuickOptions = Pick<UnifyFlags,
  'reference' | 'servers' | 'packages' | 'vserversDir' | 'db' | 'rpm' | 'verbose' | 'packageManager' | 'allFiles' |
  'exclude' | 'excludeFrom' | 'defaultExcludes' | 'rebuildIndex' | 'immutable' | 'dryRun' | 'full'>;

const VERSION = (() => {
  try {
    return (JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
})();

/** The options that decide a run's outcome, with the contents of exclude files. */
export function fingerprint(opts: QuickOptions, rootPaths: string[]): string {
  const excludeFiles = (opts.excludeFrom ?? []).map((f) => {
    try { return fs.readFileSync(f, 'latin1'); } catch { return null; }
  });
  const relevant = {
    version: VERSION, names: [opts.reference, ...opts.servers], rootPaths, packages: opts.packages,
    allFiles: opts.allFiles ?? false, exclude: opts.exclude ?? [], excludeFiles,
    defaultExcludes: opts.defaultExcludes ?? true, packageManager: opts.packageManager ?? 'auto',
    rpm: opts.rpm ?? 'rpm', immutable: opts.immutable ?? true,
  };
  return crypto.createHash('sha256').update(JSON.stringify(relevant)).digest('base64');
}

/** Mount points at or below the roots ("\040"-style escapes kept as they are). */
export function mountsDigest(rootPaths: string[]): string {
  let text = '';
  try { text = fs.readFileSync('/proc/self/mountinfo', 'latin1'); } catch { /* none visible */ }
  const h = crypto.createHash('sha256');
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    const at = f[4];
    if (at && rootPaths.some((r) => at === r || at.startsWith(r + '/'))) h.update(`${f[2]} ${f[3]} ${at}\n`);
  }
  return h.digest('base64');
}

function indexId(dbPath: string): string | null {
  try {
    const st = fs.statSync(dbPath);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

const nameZ = (name: string) => Buffer.from(name + '\0', 'latin1');

const L = rawStat.layout;
/** The 12 words of an inode as struct stat holds them (see INODE_WORDS). */
function statWords(out: Uint32Array, at: number): void {
  const b = rawStat.buf;
  const offs = [8, 48, L!.mtime, L!.mtime + 8, L!.ctime, L!.ctime + 8];
  for (let k = 0; k < 6; k++) {
    out[at + 2 * k] = b.readUInt32LE(offs[k]);
    out[at + 2 * k + 1] = b.readUInt32LE(offs[k] + 4);
  }
}

function sameWords(a: Uint32Array, at: number): boolean {
  const b = rawStat.buf;
  return b.readUInt32LE(8) === a[at] && b.readUInt32LE(12) === a[at + 1] &&
    b.readUInt32LE(48) === a[at + 2] && b.readUInt32LE(52) === a[at + 3] &&
    b.readUInt32LE(L!.mtime) === a[at + 4] && b.readUInt32LE(L!.mtime + 4) === a[at + 5] &&
    b.readUInt32LE(L!.mtime + 8) === a[at + 6] && b.readUInt32LE(L!.mtime + 12) === a[at + 7] &&
    b.readUInt32LE(L!.ctime) === a[at + 8] && b.readUInt32LE(L!.ctime + 4) === a[at + 9] &&
    b.readUInt32LE(L!.ctime + 8) === a[at + 10] && b.readUInt32LE(L!.ctime + 12) === a[at + 11];
}

const ROOT_FLAGS = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW;

/**
 * Walks folders given in order (each after its parent), holding one fd per depth; fn gets
 * each folder and its fd. A folder that cannot be opened ends the walk, or with skipMissing is
 * left out with everything below it (its parent's listing still shows it). With lazy, folders
 * are opened only when fn asks (fd() is -1 when that fails; fn then says 'missing'): a walk
 * over listings it already holds opens nothing.
 */
function walkFolders<T extends { depth: number; name: string }>(
  rootFd: number, folders: T[], fn: (f: T, fd: () => number) => boolean | 'missing', skipMissing = false, lazy = false,
): boolean {
  const fds: Array<number | undefined> = []; // per depth: open fd, -1 failed, undefined not opened yet
  const path: T[] = [];
  let skipBelow = Infinity;
  const openAt = (d: number): number => {
    const have = fds[d];
    if (have !== undefined) return have;
    const parent = d === 0 ? rootFd : openAt(d - 1);
    const fd = d === 0 ? rootFd : parent < 0 ? -1 : openDirAt(parent, nameZ(path[d].name));
    fds[d] = fd;
    return fd;
  };
  const close = (fd: number | undefined) => { if (fd !== undefined && fd >= 0 && fd !== rootFd) closeFd(fd); };
  try {
    for (const f of folders) {
      if (f.depth > skipBelow) continue;
      skipBelow = Infinity;
      while (path.length > f.depth) {
        path.pop();
        close(fds.pop());
      }
      if (path.length !== f.depth) return false;
      path.push(f);
      fds.push(undefined);
      if (!lazy && openAt(f.depth) < 0) {
        if (!skipMissing) return false;
        skipBelow = f.depth;
        continue;
      }
      const went = fn(f, () => openAt(f.depth));
      if (went === 'missing' && skipMissing) skipBelow = f.depth;
      else if (!went) return false;
    }
    return true;
  } finally {
    for (const fd of fds) close(fd);
  }
}

/** --full, -vv (every decision listed), --rebuild-index, or a machine without the stat layout. */
const quickDisabled = (opts: QuickOptions) =>
  opts.full || (opts.verbose ?? 0) >= 2 || opts.rebuildIndex || !L || Boolean(process.env.VUNIFY_NO_QUICK);

/** The inode table's slot of each inode number. */
function inodeSlots(words: Uint32Array): Map<number, number> {
  const slot = new Map<number, number>();
  for (let i = 0; i < words.length / INODE_WORDS; i++) slot.set(words[i * INODE_WORDS] + words[i * INODE_WORDS + 1] * 2 ** 32, i);
  return slot;
}

/** A recorded root, opened without following a symlink: its fd, or why it is not the recorded folder. */
function openRecordedRoot(qr: QuickRoot, dev: string): number | string {
  let fd: number;
  try { fd = fs.openSync(qr.path, ROOT_FLAGS); } catch { return `${qr.path} cannot be opened`; }
  const st = fs.fstatSync(fd);
  if (`${st.dev}` === dev && `${st.ino}` === qr.ino) return fd;
  fs.closeSync(fd);
  return `${qr.path} is another folder`;
}

/**
 * The quick file, if it was written for these options, roots, index and mounts; else why
 * not. Call it holding the lock.
 */
function matchingQuick(opts: QuickOptions, dbPath: string, rootPaths: string[]): QuickState | string {
  const state = readQuick(dbPath);
  if (!state) return 'no quick file';
  const h = state.header;
  if (h.fingerprint !== fingerprint(opts, rootPaths) || h.roots.length !== rootPaths.length) return 'other options or servers';
  if (indexId(dbPath) !== h.index) return 'another index';
  if (mountsDigest(rootPaths) !== h.mounts) return 'the mounts changed';
  return state;
}

export interface QuickResult { report: Report; checkedInodes: number; checkedFolders: number }

/**
 * The report of the last complete unify, if the farm and options are as it left them; else
 * why not (anything differs, or --full, -vv, --rebuild-index). Takes and releases the lock.
 */
export function quickRescan(opts: QuickOptions): QuickResult | string {
  if (quickDisabled(opts)) return 'not asked for';
  const dbPath = path.resolve(opts.db ?? DEFAULT_DB);
  if (!fs.existsSync(quickPath(dbPath))) return 'no quick file';
  let rootPaths: string[];
  try {
    const vd = opts.vserversDir ?? DEFAULT_VSERVERS_DIR;
    rootPaths = [opts.reference, ...opts.servers].map((t) => fs.realpathSync(serverPath(t, vd)));
  } catch {
    return 'a server is missing'; // the full run gives the proper error
  }
  const lockFd = takeLock(dbPath);
  try {
    const state = matchingQuick(opts, dbPath, rootPaths);
    if (typeof state === 'string') return state;
    const h = state.header;
    const { inodes: words, perFolder, names, nameEnds } = state;
    const n = words.length / INODE_WORDS;
    // No work per listing entry: the listing is hashed as it is, and each folder's inodes are
    // stat'ed by the names recorded with them (the listing's digest vouches for the names).
    let checked = 0;
    let folders = 0;
    for (let r = 0; r < rootPaths.length; r++) {
      const qr = h.roots[r];
      if (qr.path !== rootPaths[r]) return 'other servers';
      const rootFd = openRecordedRoot(qr, h.dev);
      if (typeof rootFd === 'string') return rootFd;
      try {
        for (const [rel, sig] of qr.inputs ?? []) {
          if (fileSignature(rootFd, rel) !== sig) return `the package database of ${qr.path} changed (/${rel})`;
        }
        let where = '';
        const listings = crypto.createHash('sha1');
        const ok = walkFolders(rootFd, qr.folders, (f, openFd) => {
          const fd = openFd();
          where = f.name;
          const dents = readDirents(fd, f.depth === 0);
          if (!dents) return false;
          listings.update(dents);
          const end = checked + perFolder[folders++];
          for (; checked < end; checked++) {
            const name = names.subarray(checked === 0 ? 0 : nameEnds[checked - 1] + 1, nameEnds[checked] + 1);
            if (!statRawAt(fd, name) || !sameWords(words, checked * INODE_WORDS)) return false;
          }
          return true;
        });
        if (!ok) return `a file changed in ${qr.path} (near ${where})`;
        if (listings.digest('base64') !== qr.listings) return `a folder listing changed in ${qr.path}`;
      } finally {
        fs.closeSync(rootFd);
      }
    }
    if (checked !== n) return `${n - checked} file(s) not found again`;
    const report = structuredClone(h.report) as Report;
    report.unchangedSince = h.createdAt;
    if (opts.dryRun) { report.command = 'plan'; report.dryRun = true; }
    if (opts.verbose) report.files = h.notable as FileLine[];
    return { report, checkedInodes: checked, checkedFolders: folders };
  } finally {
    fs.closeSync(lockFd);
  }
}

/**
 * What a full run may take from the last complete run without looking again: per root, the
 * regular files (name -> inode, by folder) whose listing entry and inode are as that run
 * left them, non-empty, on the farm's filesystem. A server file with the reference's inode
 * at the same path is then already unified, as plan would decide.
 */
export interface QuickSurvey {
  roots: Map<string, Map<RelPath, Map<string, number>>>;
  words: Map<number, Uint32Array>;
  dev: string;
  /** surveyRecord's results, one per inode. */
  records: Map<number, CaptureRecord>;
  /** Per root, each recorded folder's listing as the survey read it: the tree walk reuses them. */
  listings: Map<string, Map<RelPath, Buffer>>;
  /** The index's last transaction id when the quick file was written, and each root's record count then (tree mode). */
  txn?: number;
  rootRecords: Map<string, number>;
}

/**
 * Reads the quick file's folders and inodes as they are now, without stopping at a change:
 * null when the file, options, index or mounts do not match (the caller holds the lock).
 */
export function quickSurvey(opts: QuickOptions, dbPath: string, rootPaths: string[]): QuickSurvey | null {
  if (quickDisabled(opts)) return null;
  const state = matchingQuick(opts, dbPath, rootPaths);
  if (typeof state === 'string') return null;
  const h = state.header;
  const words = state.inodes;
  const slot = inodeSlots(words);
  const verdict = new Map<number, boolean>(); // inode -> unchanged (and non-empty, on our filesystem)
  const out: QuickSurvey = { roots: new Map(), words: new Map(), dev: h.dev, records: new Map(), listings: new Map(), txn: h.txn, rootRecords: new Map() };
  const devN = BigInt(h.dev);
  for (const qr of h.roots) {
    if (!rootPaths.includes(qr.path)) continue;
    const rootFd = openRecordedRoot(qr, h.dev);
    if (typeof rootFd === 'string') continue;
    const byDir = new Map<RelPath, Map<string, number>>();
    out.roots.set(qr.path, byDir);
    const listings = new Map<RelPath, Buffer>();
    out.listings.set(qr.path, listings);
    if (qr.records !== undefined) out.rootRecords.set(qr.path, qr.records);
    try {
      const rels: string[] = [];
      walkFolders(rootFd, qr.folders, (f, openFd) => {
        const fd = openFd();
        rels[f.depth] = f.depth === 0 ? '' : rels[f.depth - 1] === '' ? f.name : `${rels[f.depth - 1]}/${f.name}`;
        const dir = rels[f.depth];
        const dents = readDirents(fd, f.depth === 0);
        if (!dents) return true;
        listings.set(dir, Buffer.from(dents));
        const stable = new Map<string, number>();
        forEachDirent(dents, (ino, type, nameOff, nameEnd) => {
          if (type !== DT_REG) return true;
          const i = slot.get(ino);
          if (i === undefined) return true;
          let ok = verdict.get(ino);
          if (ok === undefined) {
            ok = statRawAt(fd, dents.subarray(nameOff, nameEnd + 1)) && rawStat.buf.readBigUInt64LE(0) === devN &&
              sameWords(words, i * INODE_WORDS) && (words[i * INODE_WORDS + 2] !== 0 || words[i * INODE_WORDS + 3] !== 0);
            verdict.set(ino, ok);
            if (ok) out.words.set(ino, words.subarray(i * INODE_WORDS, (i + 1) * INODE_WORDS));
          }
          if (ok) stable.set(dents.toString('latin1', nameOff, nameEnd), ino);
          return true;
        });
        if (stable.size) byDir.set(dir, stable);
        return true;
      }, true);
    } finally {
      fs.closeSync(rootFd);
    }
  }
  return out;
}

/**
 * For one root: true when the survey found the file dir/name unchanged since the last
 * complete run, and rec (its record now) has the signature the survey checked against the
 * disk: rec is current, without another stat. Paths come sorted, so a folder's names are
 * looked up once for its run of files.
 */
export function surveyVoucher(s: QuickSurvey, root: string): (dir: RelPath, name: string, rec: CaptureRecord) => boolean {
  const dirs = s.roots.get(root);
  const namesIn = lastKeyMemo((dir) => dirs?.get(dir));
  return (dir, name, rec) => {
    const ino = namesIn(dir)?.get(name);
    if (ino === undefined || rec.dev !== s.dev || rec.ino !== String(ino)) return false;
    recordWords(rec, ino, vouchWords);
    return sameSlot(s.words.get(ino)!, 0, vouchWords);
  };
}
const vouchWords = new Uint32Array(INODE_WORDS);

/** A record for an inode the survey found unchanged: what the last run recorded of it. */
export function surveyRecord(s: QuickSurvey, ino: number): CaptureRecord {
  let rec = s.records.get(ino);
  if (!rec) {
    // A literal, not a spread: spread objects can each get a hidden class of their own.
    const sig = wordsSig(s.words.get(ino)!, 0);
    s.records.set(ino, (rec = { dev: s.dev, ino: String(ino), size: sig.size, mtimeNs: sig.mtimeNs, ctimeNs: sig.ctimeNs }));
  }
  return rec;
}

/** quickRescan as a finished report (durationMs from `started`), traced; null when it cannot tell. */
export function quickReport(opts: QuickOptions & { trace?: (phase: string, ms: number) => void }, started: number): Report | null {
  const q = quickRescan(opts);
  if (typeof q === 'string') {
    opts.trace?.(`quick: not used: ${q}`, Date.now() - started);
    return null;
  }
  opts.trace?.(`quick: ${q.checkedFolders} folders, ${q.checkedInodes} inodes unchanged`, Date.now() - started);
  return { ...q.report, durationMs: Date.now() - started };
}

/** What the capture needs to know of one root after a complete run. */
type CaptureRecordSig = { size: number; mtimeNs: string; ctimeNs: string };
type CaptureRecord = CaptureRecordSig & { dev: string; ino: string };

/** Records by path: a Map, or a view over the run's own maps. */
export interface RecordView {
  get(rel: RelPath): CaptureRecord | undefined;
  readonly size: number;
  [Symbol.iterator](): Iterator<[RelPath, CaptureRecord]>;
}

export interface CaptureRoot {
  path: string;
  rootFd: number;
  /** Folders to record (their ancestors are added). */
  folders: Iterable<RelPath>;
  /** Final records of the candidates that are files: their inodes go into the table. */
  files: RecordView;
  /** Package database folders: every regular file in them goes into the table as it is now. */
  inputs: RelPath[];
  /** Package database files and their state when the run read the database (fileSignature). */
  inputFiles: Array<[RelPath, string]>;
  /**
   * Tree mode: the walk's view. A regular file or folder that is not excluded and that the
   * run did not see means the farm changed under the run: no capture then.
   */
  tree?: { seen: (rel: RelPath) => boolean; folders: Set<RelPath>; skipped: Set<RelPath>; excluded: (rel: RelPath) => boolean };
  /** The names in a folder the survey found unchanged, with their inodes (its listing is the walk's). */
  listedIn?: (dir: RelPath) => Map<string, number> | undefined;
  /** Listings read earlier in the run (the tree walk), used for folders not in `touched`. */
  listings?: Map<RelPath, Buffer>;
  touched?: Set<RelPath>;
}

function folderOrder(folders: Iterable<RelPath>): Array<{ rel: RelPath; depth: number; name: string }> {
  const children = new Map<RelPath, Set<string>>();
  const add = (rel: RelPath) => {
    while (rel !== '') {
      const i = rel.lastIndexOf('/');
      const parent = i < 0 ? '' : rel.slice(0, i);
      const kids = children.get(parent) ?? new Set();
      if (kids.has(rel)) return;
      kids.add(rel);
      children.set(parent, kids);
      rel = parent;
    }
  };
  for (const f of folders) add(f);
  const out: Array<{ rel: RelPath; depth: number; name: string }> = [];
  const visit = (rel: RelPath, depth: number) => {
    out.push({ rel, depth, name: rel.slice(rel.lastIndexOf('/') + 1) });
    for (const k of [...(children.get(rel) ?? [])].sort()) visit(k, depth + 1);
  };
  visit('', 0);
  return out;
}

/**
 * A package database file's state: its inode's words, 'empty', or 'absent' (or 'not a file'). The
 * folders on the way are opened one by one, following no symlink.
 */
export function fileSignature(rootFd: number, rel: RelPath): string {
  const parts = rel.split('/');
  const name = parts.pop()!;
  const fds: number[] = [];
  try {
    let fd = rootFd;
    for (const p of parts) {
      fd = openDirAt(fd, nameZ(p));
      if (fd < 0) return 'absent';
      fds.push(fd);
    }
    if (!statRawAt(fd, nameZ(name))) return 'absent';
    if ((rawStat.buf.readUInt32LE(L!.mode) & 0o170000) !== 0o100000) return 'not a file';
    // An empty file by its emptiness alone: SQLite truncates its write-ahead log on every
    // close, readers' included, which moves its times and nothing else.
    if (rawStat.buf.readUInt32LE(48) === 0 && rawStat.buf.readUInt32LE(52) === 0) return 'empty';
    const w = new Uint32Array(INODE_WORDS);
    statWords(w, 0);
    return Buffer.from(w.buffer).toString('base64');
  } finally {
    for (const fd of fds) closeFd(fd);
  }
}

/** A digest of the package database's folders (listings, regular files) and files, to see them change. */
export function inputsDigest(rootFd: number, inputsOf: { folders: RelPath[]; files: RelPath[] }): string {
  const h = crypto.createHash('sha256');
  for (const rel of inputsOf.files) h.update(`${rel}\0${fileSignature(rootFd, rel)}\0`);
  const inputs = inputsOf.folders;
  const wanted = new Set(inputs);
  const words = new Uint32Array(INODE_WORDS);
  walkFolders(rootFd, folderOrder(inputs), (f, openFd) => {
    const fd = openFd();
    if (!wanted.has(f.rel)) return true;
    const dents = readDirents(fd, f.depth === 0);
    if (!dents) return false;
    h.update(f.rel + '\0');
    h.update(dents);
    forEachDirent(dents, (_ino, type, nameOff, nameEnd) => {
      if (type === DT_REG && statRawAt(fd, dents.subarray(nameOff, nameEnd + 1))) {
        statWords(words, 0);
        h.update(words);
      }
      return true;
    });
    return true;
  }, true);
  return h.digest('base64');
}

/** A record's inode as words (see INODE_WORDS), as struct stat would hold them. */
function recordWords(rec: CaptureRecordSig, ino: number, w: Uint32Array): void {
  const put = (k: number, v: bigint) => {
    const u = BigInt.asUintN(64, v);
    w[2 * k] = Number(u & 0xffffffffn);
    w[2 * k + 1] = Number(u >> 32n);
  };
  const time = (k: number, nsText: string) => {
    const ns = BigInt(nsText);
    let sec = ns / 1_000_000_000n;
    let nsec = ns % 1_000_000_000n;
    if (nsec < 0n) { sec -= 1n; nsec += 1_000_000_000n; } // struct stat: floor seconds, 0 <= nsec
    put(k, sec);
    put(k + 1, nsec);
  };
  // Plain numbers for what fits (inode numbers, sizes, times after 1970): no BigInt per file.
  const num = (k: number, v: number) => {
    w[2 * k] = v >>> 0;
    w[2 * k + 1] = Math.floor(v / 0x1_0000_0000);
  };
  const fast = (k: number, nsText: string) => {
    if (nsText.length < 10 || nsText.length > 24 || nsText[0] === '-') return false;
    num(k, Number(nsText.slice(0, -9)));
    num(k + 1, Number(nsText.slice(-9)));
    return true;
  };
  if (Number.isSafeInteger(ino)) num(0, ino);
  else put(0, BigInt(ino));
  num(1, rec.size);
  if (!fast(2, rec.mtimeNs)) time(2, rec.mtimeNs);
  if (!fast(4, rec.ctimeNs)) time(4, rec.ctimeNs);
}

/** True when the inode words at `at` are w. */
function sameSlot(words: ArrayLike<number>, at: number, w: Uint32Array): boolean {
  for (let i = 0; i < INODE_WORDS; i++) if (words[at + i] !== w[i]) return false;
  return true;
}

/** An inode's size, mtime and ctime as records hold them, from its words (see INODE_WORDS). */
function wordsSig(words: ArrayLike<number>, at: number): CaptureRecordSig {
  // Seconds are a signed 64-bit word pair; nanoseconds fit the low word.
  const ns = (k: number) => nsText(words[at + 2 * k] + (words[at + 2 * k + 1] | 0) * 0x1_0000_0000, words[at + 2 * k + 2]);
  return { size: words[at + 2] + words[at + 3] * 0x1_0000_0000, mtimeNs: ns(2), ctimeNs: ns(4) };
}

/**
 * Records the farm as a complete run left it, with the report a rescan gives. Returns why
 * nothing was recorded, or null when it was. The run's records must match the disk: a file
 * changed since the run looked at it leaves no quick file, and the next rescan runs in full.
 */
export function captureQuick(
  opts: QuickOptions,
  dbPath: string,
  txn: number,
  dev: string,
  roots: CaptureRoot[],
  report: Report,
  notable: FileLine[],
): string | null {
  const words: number[] = [];
  const slot = new Map<number, number>();
  const firstRec = new Map<number, CaptureRecordSig>(); // slot -> the record its words came from
  // Per slot: its root, folder (index in the root's folders) and a name there to stat it by.
  const slotAt: Array<{ r: number; fi: number; name: string }> = [];
  const perRoot: number[][] = []; // per root, per folder: its inodes (filled below)
  const devN = BigInt(dev);
  const w = new Uint32Array(INODE_WORDS);
  const qroots: QuickRoot[] = [];
  /** A new slot for an inode whose words are in w; returns its offset in words. */
  const addSlot = (ino: number, r: number, fi: number, name: string): number => {
    const at = words.length;
    slotAt.push({ r, fi, name });
    slot.set(ino, at);
    for (const x of w) words.push(x);
    return at;
  };
  for (const root of roots) {
    const r = qroots.length;
    const order = folderOrder([...root.folders, ...root.inputs]);
    const folders: QuickFolder[] = [];
    const folderIdx = new Map<RelPath, number>();
    const listings = crypto.createHash('sha1');
    const inputs = new Set(root.inputs);
    let why: string | null = null;
    let matched = 0;
    const fail = (reason: string) => { why ??= reason; return false; };
    // One table slot per inode: the first record of it gives the words (what the run decided
    // on: if the disk differs by now, the next check sees it); other names must agree.
    const take = (rec: CaptureRecord, ino: number, p: RelPath, fi: number, name: string): boolean => {
      const at = slot.get(ino);
      if (at === undefined) {
        recordWords(rec, ino, w);
        firstRec.set(addSlot(ino, r, fi, name), rec);
        return true;
      }
      const first = firstRec.get(at);
      if (first === rec || (first && first.size === rec.size && first.mtimeNs === rec.mtimeNs && first.ctimeNs === rec.ctimeNs)) return true;
      recordWords(rec, ino, w);
      return sameSlot(words, at, w) || fail(`/${p} changed`);
    };
    // Folders whose listing the walk read are taken as the walk saw them; their records are
    // matched to it below. Folders this run changed, and package database folders, are read
    // again and checked entry by entry.
    const walked = new Map<RelPath, Buffer>();
    const reread = new Set<RelPath>();
    walkFolders(root.rootFd, order, (f, fd) => {
      const dir = f.rel;
      const earlier = root.touched?.has(dir) ? undefined : root.listings?.get(dir);
      const dfd = earlier ? 0 : fd();
      if (dfd < 0) return 'missing';
      const dents = earlier ?? readDirents(dfd, f.depth === 0);
      if (!dents) return fail(`cannot list /${dir}`);
      const fi = folders.length;
      folders.push({ depth: f.depth, name: f.name });
      folderIdx.set(dir, fi);
      listings.update(dents);
      const inInputs = inputs.has(dir);
      if (earlier && !inInputs) {
        walked.set(dir, earlier);
        return true;
      }
      reread.add(dir);
      const prefix = dir === '' ? '' : `${dir}/`;
      return forEachDirent(dents, (ino, type, nameOff, nameEnd) => {
        const name = dents.toString('latin1', nameOff, nameEnd);
        const p = prefix + name;
        if (type === DT_UNKNOWN) return fail(`no file type in the listing of /${dir}`);
        const rec = type === DT_DIR ? undefined : root.files.get(p);
        if (rec) {
          if (rec.ino !== String(ino) || rec.dev !== dev) return fail(`/${p} was replaced`);
          matched++;
          return take(rec, ino, p, fi, name);
        }
        if (inInputs && type === DT_REG) {
          // A database file is stat'ed: its words are as it is now.
          if (slot.has(ino)) return true;
          const dfd2 = fd();
          if (dfd2 < 0 || !statRawAt(dfd2, dents.subarray(nameOff, nameEnd + 1))) return fail(`cannot stat /${p}`);
          if (rawStat.buf.readBigUInt64LE(0) !== devN) return fail(`/${p} is on another filesystem`);
          statWords(w, 0);
          addSlot(ino, r, fi, name);
        } else if (root.tree && !excludedHere(root.tree, dir, p)) {
          const t = root.tree;
          if (type === DT_REG && !t.seen(p)) return fail(`/${p} appeared`);
          if (type === DT_DIR && !t.folders.has(p) && !t.skipped.has(p)) return fail(`/${p}/ appeared`);
        }
        return true;
      });
    }, true, true);
    if (why) return why;
    // Records in walked folders: a name the survey found with this inode is as the listing
    // says; any other is looked up in its folder's listing (a file replaced after the walk
    // read it has another inode there).
    const named = new Map<RelPath, Map<string, number>>();
    const listedIno = (dir: RelPath, name: string): number | undefined => {
      let m = named.get(dir);
      if (!m) {
        const dents = walked.get(dir)!;
        const mm = new Map<string, number>();
        forEachDirent(dents, (ino, type, nameOff, nameEnd) => {
          if (type === DT_REG) mm.set(dents.toString('latin1', nameOff, nameEnd), ino);
          return true;
        });
        named.set(dir, (m = mm));
      }
      return m.get(name);
    };
    // Records come mostly grouped by folder (scanned in sorted order, settled in the walk's).
    const folderOf = lastKeyMemo((dir) => ({
      walked: !reread.has(dir) && walked.has(dir), fi: folderIdx.get(dir) ?? -1, surveyed: root.listedIn?.(dir),
    }));
    for (const [p, rec] of root.files) {
      const { dir, name } = splitRel(p);
      const f = folderOf(dir);
      if (!f.walked) continue; // checked above, or not found: counted below
      const ino = Number(rec.ino);
      if (rec.dev !== dev) return `/${p} was replaced`;
      if (f.surveyed?.get(name) !== ino && listedIno(dir, name) !== ino) return `/${p} was replaced`;
      matched++;
      if (!take(rec, ino, p, f.fi, name)) return why;
    }
    if (!why && matched !== root.files.size) why = `${root.files.size - matched} file(s) of ${root.path} were not found again`;
    if (why) return why;
    perRoot.push(new Array<number>(folders.length).fill(0));
    qroots.push({
      path: root.path, ino: String(fs.fstatSync(root.rootFd).ino), folders, listings: listings.digest('base64'),
      inputs: root.inputFiles, records: root.tree ? root.files.size : undefined,
    });
  }
  const id = indexId(dbPath);
  if (!id) return 'no index file';
  const header: QuickHeader = {
    fingerprint: fingerprint(opts, roots.map((r) => r.path)),
    index: id,
    mounts: mountsDigest(roots.map((r) => r.path)),
    dev,
    createdAt: new Date().toISOString(),
    txn,
    roots: qroots,
    report: { ...report, durationMs: 0 },
    notable,
  };
  // The check's order: root by root, folder by folder (counted, then placed: no sort).
  const n = slotAt.length;
  let nameBytes = 0;
  for (const a of slotAt) {
    perRoot[a.r][a.fi]++;
    nameBytes += a.name.length + 1;
  }
  const perFolder = Uint32Array.from(perRoot.flat());
  const start = new Uint32Array(perFolder.length); // first slot of each folder in the new order
  for (let k = 1; k < start.length; k++) start[k] = start[k - 1] + perFolder[k - 1];
  const base: number[] = []; // each root's first folder in perFolder
  for (let r = 0, k = 0; r < perRoot.length; k += perRoot[r].length, r++) base.push(k);
  const at = new Uint32Array(n); // old slot -> new slot
  const next = start.slice();
  for (let i = 0; i < n; i++) at[i] = next[base[slotAt[i].r] + slotAt[i].fi]++;
  const src = Uint32Array.from(words);
  const inodes = new Uint32Array(words.length);
  for (let i = 0; i < n; i++) inodes.set(src.subarray(i * INODE_WORDS, (i + 1) * INODE_WORDS), at[i] * INODE_WORDS);
  const byNew = new Array<string>(n);
  for (let i = 0; i < n; i++) byNew[at[i]] = slotAt[i].name;
  const names = Buffer.alloc(nameBytes); // zeroed: each name's NUL is already there
  const nameEnds = new Uint32Array(n);
  let off = 0;
  for (let j = 0; j < n; j++) {
    off += names.write(byNew[j], off, 'latin1');
    nameEnds[j] = off++;
  }
  writeQuick(dbPath, { header, inodes, perFolder, names, nameEnds });
  return null;
}

/**
 * Excluded, itself or through a folder above it: the walk never enters an excluded folder,
 * so its contents were never seen (a package database's folder, listed for its inputs, can
 * sit below one: var/lib/dpkg under /var).
 */
function excludedHere(tree: { excluded: (rel: RelPath) => boolean }, dir: RelPath, p: RelPath): boolean {
  if (tree.excluded(p)) return true;
  for (let d = dir; d !== ''; d = d.includes('/') ? d.slice(0, d.lastIndexOf('/')) : '') {
    if (tree.excluded(d)) return true;
  }
  return false;
}
