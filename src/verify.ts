// `vunify verify`: are the links the index says vunify made still what it made? Reads the
// index and the farm (lstat, open O_NOFOLLOW|O_NOATIME, the inode-flags ioctl, the bytes
// of each shared inode) and never changes either; it holds the run lock meanwhile, so no
// unify or undo changes the farm under it.
//
// Per link record (server root, path): the path is still a regular file reached without a
// symlink, on the recorded inode (dev and ino). Per shared inode: the reference path still
// holds it; the immutable attribute is still set when the index's inodes table says vunify
// set it; mode and owner are still those recorded; the size and (for every inode, or a
// random sample) the BLAKE3 of the content still match the files table.
import { randomInt } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pLimit from 'p-limit';
import { withExistingIndex } from './store/existing.js';
import { VunifyError, isErrno, oneLine } from './errors.js';
import { hashFd } from './fsx/content.js';
import { RootDir, UnsafePathError, type OpenedFile, type RelPath } from './fsx/rootdir.js';
import { isImmutable } from './fsx/sys.js';
import { reflinkDiverged } from './reflink.js';
import { pathForReport } from './report.js';
import { Index, type LinkRecord } from './store/index-db.js';
import { formatTable } from './table.js';
import { openPool, poolEntries } from './pool/store.js';

export type DriftReason =
  | 'root missing' //         the server's (or reference's) root folder is gone
  | 'missing' //              the linked path is gone
  | 'symlink in path' //      a folder on the way is now a symlink (never followed)
  | 'not a regular file' //   the path is now a symlink, a folder, a device...
  | 'not linked any more' //  a regular file, but another inode than the one recorded
  | 'reference changed' //    the reference path no longer holds the shared inode
  | 'attribute cleared' //    vunify set the immutable attribute; it is not set any more
  | 'metadata changed' //     mode or owner of the shared inode differ from the recorded ones
  | 'content changed' //      size or BLAKE3 of the shared inode differ from the files table
  | 'pool links differ' //    a pool entry's link count is not 1 + the links the index records to it
  | 'unused pool entry' //    a pool entry no server links to (gc or the next undo removes it)
  | 'not a pool entry' //     a name in the pool folder that vunify did not write
  | 'error'; //               could not be checked (detail says why)

export interface Drift {
  /** Absolute path of the server's (or the reference's) root. */
  root: string;
  /** Its name in the index. */
  server: string;
  /** '/usr/bin/x', shown as UTF-8 (as in every report); '' for a whole root. */
  path: string;
  reason: DriftReason;
  detail?: string;
}

export interface VerifyReport {
  command: 'verify';
  index: string;
  checked: {
    /** Link records checked. */
    links: number;
    /** Distinct shared inodes those records name. */
    inodes: number;
    /** Shared inodes whose content was hashed and compared. */
    contentChecked: number;
    /**
     * Shared inodes (of the sample) whose content could not be compared: the index holds no
     * hash for them (a scan after the link re-recorded the paths without reading them).
     */
    contentUnknown: number;
  };
  drifts: Drift[];
  /** Changes a killed run left under way (`vunify recover` finishes them); drifts may come from them. */
  unfinished: number;
  /**
   * Files given the reference's extents (--method reflink), when there are any. Each keeps its
   * own inode, so a write or an upgrade in its vserver is normal: "diverged", never a drift.
   */
  reflinked?: { checked: number; diverged: Array<{ server: string; path: string; detail: string }> };
  durationMs: number;
}

export interface VerifyOptions {
  db?: string;
  /** Hash the content of only this many randomly chosen shared inodes (0: none). */
  sample?: number;
  /** Hash every shared inode (the default; overrides sample). */
  full?: boolean;
  /** How many inodes are hashed at once (4). */
  concurrency?: number;
}

interface Place { root: string; path: RelPath }

interface SharedInode {
  dev: string;
  ino: string;
  /** The first link record of the inode: what it was (size, mode, owner) when linked. */
  rec: LinkRecord;
  /** Reference paths named by its link records (normally one). */
  refs: Map<string, Place>;
  /** Server paths verified to still be this inode. */
  live: Place[];
}

const key = (root: string, rel: RelPath) => `${root}\0${rel}`;

/**
 * A pool: every name is an entry (HH/HASH-META); its content hashes to its name; an entry
 * in use carries the attribute and has one name more than the index's links to it.
 * Returns how many entries were hashed.
 */
async function verifyPool(root: string, index: Index, sample: number | undefined, drift: (p: Place, reason: DriftReason, detail?: string) => void): Promise<number> {
  const pool = await openPool(root, false).catch((err: unknown) => { drift({ root, path: '' }, 'error', oneLine(err)); return null; });
  if (!pool) {
    drift({ root, path: '' }, 'root missing', 'the pool folder is gone');
    return 0;
  }
  const links = new Map<RelPath, number>();
  for (const l of index.allLinks()) if (l.rec.refRoot === root) links.set(l.rec.refPath, (links.get(l.rec.refPath) ?? 0) + 1);
  let hashed = 0;
  try {
    const strays: RelPath[] = [];
    const entries = [...poolEntries(pool, strays)];
    for (const rel of strays) drift({ root, path: rel }, 'not a pool entry');
    const sampled = chooseSample(entries.length, sample);
    for (const [i, e] of entries.entries()) {
      const at = { root, path: e.rel };
      const names = Number(e.st.nlink) - 1;
      const known = links.get(e.rel) ?? 0;
      if (names === 0) drift(at, 'unused pool entry');
      else if (names !== known) drift(at, 'pool links differ', `${names} server name(s), ${known} link record(s)`);
      if (!sampled(i)) continue;
      try {
        const f = await pool.openFile(e.rel);
        try {
          if (names > 0 && !isImmutable(f.fd)) drift(at, 'attribute cleared');
          const h = await hashFd(f.fd);
          hashed++;
          if (h.hash !== e.hash) drift(at, 'content changed', `BLAKE3 ${h.hash.slice(0, 16)}…, its name says ${e.hash.slice(0, 16)}…`);
        } finally {
          await f.close();
        }
      } catch (err) {
        drift(at, 'error', oneLine(err));
      }
    }
  } finally {
    await pool.close();
  }
  return hashed;
}

/** Verifies every link in the index against the farm; changes nothing. */
export async function verifyIndex(opts: VerifyOptions = {}): Promise<VerifyReport> {
  const started = Date.now();
  if (opts.sample !== undefined && (!Number.isInteger(opts.sample) || opts.sample < 0)) {
    throw new VunifyError('USAGE', `--sample takes a whole number of inodes, not ${opts.sample}`);
  }
  return withExistingIndex(opts.db, { lock: true, missing: 'no index here: nothing to verify (give --db?)' },
    (index, dbPath) => verifyWith(index, dbPath, opts, started));
}

async function verifyWith(index: Index, dbPath: string, opts: VerifyOptions, started: number): Promise<VerifyReport> {
  const names = new Map(index.allRoots().map((r) => [r.root, r.rec.name]));
  const nameOf = (root: string) => names.get(root) ?? path.basename(root);
  const drifts: Drift[] = [];
  const drift = (p: Place, reason: DriftReason, detail?: string) => {
    drifts.push({ root: p.root, server: nameOf(p.root), path: p.path === '' ? '' : pathForReport(p.path), reason, ...(detail ? { detail } : {}) });
  };

  // Roots are opened once each; a root that cannot be opened is one drift, whatever its links.
  const roots = new Map<string, RootDir | { error: unknown; links: number; refs: number }>();
  const rootOf = async (root: string): Promise<RootDir | null> => {
    let r = roots.get(root);
    if (!r) {
      try {
        r = await RootDir.open(root);
      } catch (error) {
        r = { error, links: 0, refs: 0 };
      }
      roots.set(root, r);
    }
    return r instanceof RootDir ? r : null;
  };
  const lstat = (dir: RootDir, rel: RelPath): fs.BigIntStats | null | UnsafePathError => {
    try {
      return dir.lstatSync(rel);
    } catch (err) {
      if (err instanceof UnsafePathError) return err;
      throw err;
    }
  };

  try {
    // 1. every link record: the server path is still the recorded inode
    const inodes = new Map<string, SharedInode>();
    let links = 0;
    const reflinks: Array<{ root: string; path: RelPath; rec: LinkRecord }> = [];
    for (const l of index.allLinks()) {
      if (l.rec.method === 'reflink') { reflinks.push(l); continue; }
      links++;
      const dir = await rootOf(l.root);
      if (!dir) {
        (roots.get(l.root) as { links: number }).links++;
        continue;
      }
      const here = { root: l.root, path: l.path };
      const k = `${l.rec.dev}:${l.rec.ino}`;
      let inode = inodes.get(k);
      if (!inode) inodes.set(k, inode = { dev: l.rec.dev, ino: l.rec.ino, rec: l.rec, refs: new Map(), live: [] });
      inode.refs.set(key(l.rec.refRoot, l.rec.refPath), { root: l.rec.refRoot, path: l.rec.refPath });
      let st: ReturnType<typeof lstat>;
      try {
        st = lstat(dir, l.path);
      } catch (err) {
        drift(here, 'error', oneLine(err));
        continue;
      }
      if (st === null) drift(here, 'missing');
      else if (st instanceof UnsafePathError) drift(here, 'symlink in path', st.message);
      else if (!st.isFile()) drift(here, 'not a regular file', kindOf(st));
      else if (String(st.dev) !== l.rec.dev || String(st.ino) !== l.rec.ino) {
        drift(here, 'not linked any more', `inode ${st.ino}${st.nlink === 1n ? ', a private copy' : ''}; linked to ${l.rec.ino}`);
      } else inode.live.push(here);
    }

    // 2. every shared inode: the reference path, then attribute, metadata and content
    const todo: Array<{ inode: SharedInode; places: Place[] }> = [];
    for (const inode of inodes.values()) {
      const places: Place[] = [];
      for (const ref of inode.refs.values()) {
        const dir = await rootOf(ref.root);
        if (!dir) {
          (roots.get(ref.root) as { refs: number }).refs++; // reported with the root
          continue;
        }
        let st: ReturnType<typeof lstat>;
        try {
          st = lstat(dir, ref.path);
        } catch (err) {
          drift(ref, 'error', oneLine(err));
          continue;
        }
        if (st && !(st instanceof UnsafePathError) && st.isFile() && String(st.dev) === inode.dev && String(st.ino) === inode.ino) {
          places.push(ref);
        } else {
          const what = st === null ? 'missing' : st instanceof UnsafePathError ? st.message
            : !st.isFile() ? `now ${kindOf(st)}` : `now inode ${st.ino}`;
          drift(ref, 'reference changed', `${what}; the servers share inode ${inode.ino}`);
        }
      }
      places.push(...inode.live);
      if (places.length > 0) todo.push({ inode, places });
    }
    const diverged: NonNullable<VerifyReport['reflinked']>['diverged'] = [];
    for (const l of reflinks) {
      const dir = await rootOf(l.root);
      if (!dir) { (roots.get(l.root) as { links: number }).links++; continue; }
      const why = await reflinkDiverged(dir, l.path, l.rec);
      if (why) diverged.push({ server: nameOf(l.root), path: pathForReport(l.path), detail: why });
    }
    for (const [root, r] of roots) {
      if (r instanceof RootDir) continue;
      const gone = isErrno(r.error, 'ENOENT', 'ENOTDIR');
      const lost = [r.links ? `${r.links} link(s)` : '', r.refs ? `${r.refs} reference path(s)` : ''].filter(Boolean).join(' and ');
      drift({ root, path: '' }, gone ? 'root missing' : 'error', `${gone ? '' : `${oneLine(r.error)}; `}${lost} not checked`);
    }

    const sampled = chooseSample(todo.length, opts.full ? undefined : opts.sample);
    let contentChecked = 0;
    let contentUnknown = 0;
    const limit = pLimit(opts.concurrency ?? 4);
    await Promise.all(todo.map(({ inode, places }, i) => limit(async () => {
      // Checked through the reference path when it still holds the inode, else through a server's link.
      const at = places[0];
      const sharedBy = [...new Set(places.map((p) => nameOf(p.root)))];
      const also = places.length > 1 ? `inode shared by ${places.length} paths in ${sharedBy.join(', ')}` : undefined;
      let f: OpenedFile | null = null;
      try {
        for (const p of places) {
          const dir = roots.get(p.root) as RootDir;
          const o = await dir.openFile(p.path).catch(() => null);
          if (o && String(o.stat.dev) === inode.dev && String(o.stat.ino) === inode.ino) { f = o; break; }
          await o?.close();
        }
        if (!f) {
          drift(at, 'error', 'cannot open the shared inode through any of its paths');
          return;
        }
        if (index.getInode(inode.dev, inode.ino) && !isImmutable(f.fd)) drift(at, 'attribute cleared', also);
        const r = inode.rec;
        const meta: string[] = [];
        if ((Number(f.stat.mode) & 0o7777) !== (r.mode & 0o7777)) meta.push(`mode ${octal(r.mode)} -> ${octal(Number(f.stat.mode))}`);
        if (Number(f.stat.uid) !== r.uid || Number(f.stat.gid) !== r.gid) meta.push(`owner ${r.uid}:${r.gid} -> ${f.stat.uid}:${f.stat.gid}`);
        if (meta.length) drift(at, 'metadata changed', [meta.join(', '), also].filter(Boolean).join('; '));
        const expected = expectedHash(index, inode, places);
        if (Number(f.stat.size) !== r.size) {
          drift(at, 'content changed', [`size ${r.size} -> ${f.stat.size}`, also].filter(Boolean).join('; '));
        } else if (sampled(i) && expected === '') {
          contentUnknown++;
        } else if (sampled(i)) {
          contentChecked++;
          const { hash } = await hashFd(f.fd);
          if (hash !== expected) drift(at, 'content changed', [`BLAKE3 ${hash.slice(0, 16)}…, indexed ${expected.slice(0, 16)}…`, also].filter(Boolean).join('; '));
        }
      } catch (err) {
        drift(at, 'error', oneLine(err));
      } finally {
        await f?.close();
      }
    })));

    for (const { root, rec } of index.allRoots()) {
      if (rec.lastRole !== 'pool') continue;
      const counted = await verifyPool(root, index, opts.full ? undefined : opts.sample, drift);
      contentChecked += counted;
    }
    drifts.sort((a, b) => cmp(a.server, b.server) || cmp(a.root, b.root) || cmp(a.path, b.path) || cmp(a.reason, b.reason));
    return {
      command: 'verify',
      index: dbPath,
      checked: { links, inodes: inodes.size, contentChecked, contentUnknown },
      drifts,
      unfinished: index.journalEntries().length,
      ...(reflinks.length ? { reflinked: { checked: reflinks.length, diverged } } : {}),
      durationMs: Date.now() - started,
    };
  } finally {
    for (const r of roots.values()) if (r instanceof RootDir) await r.close();
  }
}

/**
 * The content the index knows for an inode: the hash in its link record when there is
 * one (LinkRecord has none yet), else the hash of a files-table record that still
 * describes this inode (the reference path first, then the server paths), else whatever
 * the reference path's record says; '' when the index never read it.
 */
function expectedHash(index: Index, inode: SharedInode, places: Place[]): string {
  // A hash kept in the link record itself (if apply.ts records one) is what was linked.
  const linked = (inode.rec as LinkRecord & { hash?: unknown }).hash;
  if (typeof linked === 'string' && linked !== '') return linked;
  const candidates = [...inode.refs.values(), ...places];
  for (const p of candidates) {
    const f = index.getFile(p.root, p.path);
    if (f && f.hash !== '' && f.dev === inode.dev && f.ino === inode.ino) return f.hash;
  }
  for (const p of inode.refs.values()) {
    const f = index.getFile(p.root, p.path);
    if (f && f.hash !== '') return f.hash;
  }
  return '';
}

/** Which of n inodes get their content hashed: all, or `sample` of them at random. */
function chooseSample(n: number, sample?: number): (i: number) => boolean {
  if (sample === undefined || sample >= n) return () => true;
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < sample; i++) {
    const j = i + randomInt(n - i);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const chosen = new Set(order.slice(0, sample));
  return (i) => chosen.has(i);
}

function kindOf(st: fs.BigIntStats): string {
  return st.isSymbolicLink() ? 'a symlink' : st.isDirectory() ? 'a folder' : st.isFile() ? 'a file' : 'a special file';
}

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, '0');
const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** Text: one summary line, then one line per drift. */
export function formatVerify(r: VerifyReport): string {
  const c = r.checked;
  const what = `${c.links} link(s) to ${c.inodes} shared inode(s), content of ${c.contentChecked} hashed` +
    (c.contentUnknown > 0 ? ` (${c.contentUnknown} without an indexed hash to compare with)` : '');
  const out = [`vunify verify: ${what}: ${r.drifts.length === 0 ? 'no drift' : `${r.drifts.length} drift(s)`} (${r.durationMs} ms)`];
  if (r.unfinished > 0) out.push(`note: ${r.unfinished} change(s) a killed run left under way; run vunify recover (drifts may come from them)`);
  const rl = r.reflinked;
  if (rl) out.push(`${rl.checked} reflinked file(s): ${rl.diverged.length} diverged (written or replaced in their vserver since: normal, not a drift)`);
  for (const d of rl?.diverged ?? []) out.push(`diverged: ${d.server}: ${d.path}: ${d.detail}`);
  let text = out.join('\n') + '\n';
  if (r.drifts.length > 0) {
    text += formatTable(['server', 'path', 'drift', 'detail'],
      r.drifts.map((d) => [d.server, d.path || '(root)', d.reason, d.detail ?? '']), ['l', 'l', 'l', 'l']);
  }
  return text;
}
