// The capture: after a complete unify that left nothing to do, the quick file that lets
// the next run check the farm instead of rescanning it.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { lastKeyMemo, splitRel, type RelPath } from '../fsx/rootdir.js';
import { DT_DIR, DT_REG, DT_UNKNOWN, forEachDirent, listingDigest, rawStat, readDirents, statRawAt } from '../fsx/sys.js';
import type { FileLine, Report } from '../report.js';
import { INODE_WORDS, writeQuick, type QuickFolder, type QuickHeader, type QuickRoot } from '../store/quick-file.js';
import { fingerprint, indexId, mountsDigest, type QuickOptions } from './check.js';
import {
  folderOrder, permuteSlots, recordWords, sameSlot, statWords, walkFolders, type CaptureRecord,
} from './inodes.js';

/** Records by path: a Map, or a view over the run's own maps. */
export interface RecordView {
  get(rel: RelPath): CaptureRecord | undefined;
  readonly size: number;
  /** The records whose path want says yes to, grouped by folder: no other record is read. */
  entries(want: (rel: RelPath) => boolean): Iterable<[RelPath, CaptureRecord]>;
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
  /** Digests of the listings the tree walk read (listingDigest), for folders not in `touched`. */
  digests?: Map<RelPath, string>;
  touched?: Set<RelPath>;
  /** The survey's listings, which the walk took as they were (their digests are the walk's). */
  listings?: Map<RelPath, Buffer>;
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
  // Typed tables, grown by doubling: a slot costs 56 bytes here, not an object and 12 boxed
  // numbers (the capture is a whole-farm pass, at the end of the run's peak).
  let words = new Uint32Array(INODE_WORDS * 1024);
  let slotR = new Uint32Array(1024); // per slot: its root,
  let slotFi = new Uint32Array(1024); // its folder (index in the root's folders),
  const slotName: string[] = []; // and a name there to stat it by
  let n = 0;
  const slot = new Map<number, number>();
  const perRoot: number[][] = []; // per root, per folder: its inodes (filled below)
  const devN = BigInt(dev);
  const w = new Uint32Array(INODE_WORDS);
  const qroots: QuickRoot[] = [];
  const grown = (t: Uint32Array) => { const g = new Uint32Array(t.length * 2); g.set(t); return g; };
  /** A new slot for an inode whose words are in w; returns its offset in words. */
  const addSlot = (ino: number, r: number, fi: number, name: string): number => {
    if (n === slotR.length) { slotR = grown(slotR); slotFi = grown(slotFi); words = grown(words); }
    const at = n * INODE_WORDS;
    slotR[n] = r;
    slotFi[n] = fi;
    slotName.push(name);
    words.set(w, at);
    n++;
    slot.set(ino, at);
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
    // on: if the disk differs by now, the next check sees it); other names must agree. No
    // record object is kept per slot: at 1,000,000 files they held ~60 MB at the run's end.
    const take = (rec: CaptureRecord, ino: number, p: RelPath, fi: number, name: string): boolean => {
      recordWords(rec, ino, w);
      const at = slot.get(ino);
      if (at === undefined) {
        addSlot(ino, r, fi, name);
        return true;
      }
      return sameSlot(words, at, w) || fail(`/${p} changed`);
    };
    // Every folder is read again, but those the walk took from the survey and this run did
    // not change: their listing is what the run's decisions saw, and a change since then
    // shows in the next check (their digest). One the walk read, this run did not change,
    // and that is as the walk saw it (its digest) is taken whole: its records are matched to
    // it below (one that changed since the walk leaves no quick file). Folders this run
    // changed, and package database folders, are checked entry by entry.
    const walked = new Map<RelPath, Buffer>();
    const reread = new Set<RelPath>();
    walkFolders(root.rootFd, order, (f, fd) => {
      const dir = f.rel;
      const earlier = root.touched?.has(dir) ? undefined : root.digests?.get(dir);
      const inInputs = inputs.has(dir);
      const surveyed = earlier !== undefined && !inInputs ? root.listings?.get(dir) : undefined;
      let dents: Buffer | null | undefined = surveyed;
      if (!dents) {
        const dfd = fd();
        if (dfd < 0) return 'missing';
        dents = readDirents(dfd, f.depth === 0);
      }
      if (!dents) return fail(`cannot list /${dir}`);
      const fi = folders.length;
      folders.push({ depth: f.depth, name: f.name });
      folderIdx.set(dir, fi);
      listings.update(dents);
      if (earlier !== undefined && !inInputs) {
        if (surveyed) {
          walked.set(dir, surveyed);
          return true;
        }
        if (listingDigest(dents) !== earlier) return fail(`/${dir}/ changed during the run`);
        walked.set(dir, Buffer.from(dents)); // readDirents's buffer is reused
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
    // One folder's names per depth: records come in path order, where a folder's files and
    // its subfolders' interleave but a sibling at the same depth ends the folder for good.
    const named: Array<{ dir: RelPath; names: Map<string, number> }> = [];
    const listedIno = (dir: RelPath, depth: number, name: string): number | undefined => {
      let m = named[depth];
      if (m?.dir !== dir) {
        const dents = walked.get(dir)!;
        const names = new Map<string, number>();
        forEachDirent(dents, (ino, type, nameOff, nameEnd) => {
          if (type === DT_REG) names.set(dents.toString('latin1', nameOff, nameEnd), ino);
          return true;
        });
        named[depth] = m = { dir, names };
      }
      return m.names.get(name);
    };
    // Records come mostly grouped by folder (scanned in sorted order, settled in the walk's).
    const folderOf = lastKeyMemo((dir) => ({
      walked: !reread.has(dir) && walked.has(dir), fi: folderIdx.get(dir) ?? -1, surveyed: root.listedIn?.(dir),
    }));
    // Only records in walked folders are read: the others were checked above (most of a
    // server's folders, which the run changed), or not found (counted below).
    for (const [p, rec] of root.files.entries((k) => folderOf(splitRel(k).dir).walked)) {
      const { dir, name } = splitRel(p);
      const f = folderOf(dir);
      const ino = Number(rec.ino);
      if (rec.dev !== dev) return `/${p} was replaced`;
      if (f.surveyed?.get(name) !== ino && listedIno(dir, folders[f.fi].depth, name) !== ino) return `/${p} was replaced`;
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
  slot.clear();
  let nameBytes = 0;
  for (let i = 0; i < n; i++) {
    perRoot[slotR[i]][slotFi[i]]++;
    nameBytes += slotName[i].length + 1;
  }
  const perFolder = Uint32Array.from(perRoot.flat());
  const start = new Uint32Array(perFolder.length); // first slot of each folder in the new order
  for (let k = 1; k < start.length; k++) start[k] = start[k - 1] + perFolder[k - 1];
  const base: number[] = []; // each root's first folder in perFolder
  for (let r = 0, k = 0; r < perRoot.length; k += perRoot[r].length, r++) base.push(k);
  const at = new Uint32Array(n); // old slot -> new slot
  const next = start.slice();
  for (let i = 0; i < n; i++) at[i] = next[base[slotR[i]] + slotFi[i]]++;
  slotFi = slotR = new Uint32Array(0);
  permuteSlots(words, at, n, INODE_WORDS);
  const inodes = words.subarray(0, n * INODE_WORDS);
  // Each name's end in the new order, then the names written straight to their places.
  const len = new Uint32Array(n);
  for (let i = 0; i < n; i++) len[at[i]] = slotName[i].length + 1;
  const nameEnds = new Uint32Array(n);
  for (let j = 0, off = 0; j < n; j++) nameEnds[j] = (off += len[j]) - 1;
  const names = Buffer.alloc(nameBytes); // zeroed: each name's NUL is already there
  for (let i = 0; i < n; i++) names.write(slotName[i], nameEnds[at[i]] - slotName[i].length, 'latin1');
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
