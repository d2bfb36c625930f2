// The survey: when the quick check fails, what a full run may still take from the last
// complete run without looking again (prepare.ts reads it under the lock; engine.ts settles
// files and vouches for records with it).
import fs from 'node:fs';
import { lastKeyMemo, type RelPath } from '../fsx/rootdir.js';
import { DT_REG, forEachDirent, rawStat, readDirents, statRawAt } from '../fsx/sys.js';
import { INODE_WORDS } from '../store/quick-file.js';
import { inodeSlots, matchingQuick, openRecordedRoot, quickDisabled, type QuickOptions } from './check.js';
import { recordWords, sameSlot, sameWords, walkFolders, wordsSig, type CaptureRecord } from './inodes.js';

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
  if (!rec) s.records.set(ino, (rec = new SurveyRecord(s.dev, ino, s.words.get(ino)!)));
  return rec;
}

/** Its times are made from the words when asked: the capture, its one user, takes the words. */
class SurveyRecord implements CaptureRecord {
  readonly ino: string;
  readonly size: number;
  constructor(readonly dev: string, ino: number, readonly words: Uint32Array) {
    this.ino = String(ino);
    this.size = words[2] + words[3] * 0x1_0000_0000;
  }
  get mtimeNs(): string { return wordsSig(this.words, 0).mtimeNs; }
  get ctimeNs(): string { return wordsSig(this.words, 0).ctimeNs; }
}
