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
// This module (and the rest of src/quick/) loads no LMDB and none of the pipeline: the CLI
// tries it before importing them. survey.ts and capture.ts share its matching of the quick
// file to the options, roots, index and mounts.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { readDirents, statRawAt } from '../fsx/sys.js';
import { takeLock } from '../lock.js';
import type { UnifyFlags } from '../model.js';
import { DEFAULT_VSERVERS_DIR, poolDirOf, serverPath } from '../paths.js';
import { DEFAULT_DB } from '../store/names.js';
import type { FileLine, Report } from '../report.js';
import { INODE_WORDS, quickPath, readQuick, type QuickRoot, type QuickState } from '../store/quick-file.js';
import { L, ROOT_FLAGS, fileSignature, sameWords, walkFolders } from './inodes.js';

/** What the quick check needs of a run's options. */
export type QuickOptions = Pick<UnifyFlags,
  'reference' | 'servers' | 'packages' | 'vserversDir' | 'db' | 'rpm' | 'verbose' | 'packageManager' | 'allFiles' |
  'exclude' | 'excludeFrom' | 'defaultExcludes' | 'rebuildIndex' | 'immutable' | 'dryRun' | 'full' | 'pool' | 'poolDir'>;

const VERSION = (() => {
  try {
    return (JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
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
    pool: poolDirOf(opts),
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

export function indexId(dbPath: string): string | null {
  try {
    const st = fs.statSync(dbPath);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/** --full, -vv (every decision listed), --rebuild-index, or a machine without the stat layout. */
export const quickDisabled = (opts: QuickOptions) =>
  opts.full || (opts.verbose ?? 0) >= 2 || opts.rebuildIndex || !L || Boolean(process.env.VUNIFY_NO_QUICK);

/** The inode table's slot of each inode number. */
export function inodeSlots(words: Uint32Array): Map<number, number> {
  const slot = new Map<number, number>();
  for (let i = 0; i < words.length / INODE_WORDS; i++) slot.set(words[i * INODE_WORDS] + words[i * INODE_WORDS + 1] * 2 ** 32, i);
  return slot;
}

/** A recorded root, opened without following a symlink: its fd, or why it is not the recorded folder. */
export function openRecordedRoot(qr: QuickRoot, dev: string): number | string {
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
export function matchingQuick(opts: QuickOptions, dbPath: string, rootPaths: string[]): QuickState | string {
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
