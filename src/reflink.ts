// Reflink mode (--method reflink): a server file equal to the reference's gets the
// reference's extents through FIDEDUPERANGE and keeps its own inode, mode, owner, times and
// xattrs. The kernel compares the bytes under both inodes' locks, so nothing is shared that
// differs, and a later write in one vserver copies on write. No name is created or renamed
// and no attribute is set: the only change is where the file's data lives.
import fs from 'node:fs';
import pLimit from 'p-limit';
import { flagsOf, type ApplyContext, type Outcome } from './apply.js';
import { VunifyError, isErrno, oneLine } from './errors.js';
import { beforeDedupe, faultPoint } from './fault.js';
import { hashFd } from './fsx/content.js';
import { dedupeWhole, extentsOf, fsMethods, privateBytes, sameExtents, type Extent } from './fsx/reflink.js';
import { openFileAtSync, splitRel, type OpenedFile, type RelPath, type RootDir } from './fsx/rootdir.js';
import { FS_APPEND_FL, FS_IMMUTABLE_FL, setTimesNs } from './fsx/sys.js';
import { phaseCounter } from './progress.js';
import type { Decision, FileRecord, LinkRecord, Method, SkipReason } from './model.js';

export type { Method };

type Shareable = Extract<Decision, { kind: 'link' }>;

const skip = (reason: SkipReason, detail?: string): Outcome => ({ kind: 'skip', reason, detail });

/** Records to write: files whose hash was learnt, and link records (awaited together at the end). */
interface Sink { updates: Array<[string, RelPath, FileRecord | null]>; writes: Array<Promise<unknown>> }

/** Refuses, before anything changes, roots whose filesystem cannot share extents. */
export function refuseWithoutReflink(roots: Array<{ path: string; rootFd: number }>): void {
  for (const r of roots) {
    const m = fsMethods(r.rootFd);
    if (!m.reflink) {
      throw new VunifyError('NO_REFLINK', `is on ${m.fs}, which cannot share extents between files; --method reflink needs btrfs or XFS with reflink=1 (use --method link)`, r.path);
    }
  }
}

const signatureOf = (st: fs.BigIntStats) => `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
const signatureRec = (r: FileRecord) => `${r.dev}:${r.ino}:${r.size}:${r.mtimeNs}:${r.ctimeNs}`;

/**
 * Carries out the link decisions of a reflink plan, one reference inode at a time. A server
 * file whose extents are already the reference's becomes 'already' (its decision changes
 * kind; nothing is read). With dryRun nothing is shared: the outcomes say what would be,
 * and what the disk would get back (the server file's extents that nothing else shares).
 */
export async function applyReflinks(decisions: Decision[], ctx: ApplyContext, dryRun: boolean): Promise<Map<Decision, Outcome>> {
  const outcomes = new Map<Decision, Outcome>();
  const groups = new Map<string, Shareable[]>();
  for (const d of decisions) {
    if (d.kind !== 'link') continue;
    const k = `${d.ref.dev}:${d.ref.ino}`;
    (groups.get(k) ?? groups.set(k, []).get(k)!).push(d);
  }
  const limit = pLimit(ctx.concurrency ?? 4);
  const counter = phaseCounter(ctx.progress, dryRun ? 'compare' : 'link', [...groups.values()].reduce((a, g) => a + g.length, 0), 'files');
  const sink: Sink = { updates: [], writes: [] };
  await Promise.all([...groups.values()].map((g) => limit(async () => {
    try {
      await shareGroup(g, ctx, outcomes, sink, dryRun);
    } catch (err) {
      for (const d of g) if (!outcomes.has(d)) outcomes.set(d, skip('error', oneLine(err)));
    }
    counter.add(g.length);
  })));
  counter.end();
  // One commit for all, not one per file.
  if (!dryRun) await Promise.all([...sink.writes, ctx.index.putFiles(sink.updates)]);
  return outcomes;
}

async function shareGroup(
  g: Shareable[], ctx: ApplyContext, outcomes: Map<Decision, Outcome>, sink: Sink, dryRun: boolean,
): Promise<void> {
  const r = g[0].ref;
  const refPath = g[0].refPath;
  const { dir, name } = splitRel(refPath);
  await ctx.roots.get(ctx.refRoot)!.withDir(dir, async (rdfd) => {
    let ref: OpenedFile;
    try {
      ref = openFileAtSync(rdfd, name);
    } catch (err) {
      for (const d of g) outcomes.set(d, skip('changed', `reference: ${oneLine(err)}`));
      return;
    }
    try {
      if (signatureOf(ref.stat) !== signatureRec(r)) {
        for (const d of g) outcomes.set(d, skip('changed', 'reference changed since scanned'));
        return;
      }
      const refExt = extentsOf(ref.fd);
      let hash = r.hash || g.find((d) => d.srv.hash)?.srv.hash || '';
      for (const d of g) {
        const out = await shareOne(d, ref.fd, refExt, ctx, dryRun, async () => {
          // Kept in the link record, so verify can tell a later write in the vserver.
          if (!hash) {
            hash = (await hashFd(ref.fd)).hash;
            ctx.read?.(ctx.refRoot, refPath, r.size);
            sink.updates.push([ctx.refRoot, refPath, { ...r, hash }]);
          }
          return hash;
        }, sink);
        if (out) outcomes.set(d, out);
      }
    } finally {
      await ref.close();
    }
  });
}

/** Shares one server file with the open reference; undefined when it was already shared. */
async function shareOne(
  d: Shareable, refFd: number, refExt: Extent[], ctx: ApplyContext, dryRun: boolean, hashOf: () => Promise<string>,
  sink: Sink,
): Promise<Outcome | undefined> {
  const srvRoot = ctx.serverRoots.get(d.server)!;
  const { dir, name } = splitRel(d.path);
  if (!dryRun) beforeDedupe('swap');
  return ctx.roots.get(srvRoot)!.withDir(dir, async (dfd) => {
    let f: OpenedFile;
    try {
      f = openFileAtSync(dfd, name); // O_NOFOLLOW, O_NOATIME, read-only: enough for root
    } catch (err) {
      return skip('changed', oneLine(err));
    }
    try {
      const st = f.stat;
      if (signatureOf(st) !== signatureRec(d.srv)) return skip('changed', 'changed since scanned');
      const flags = flagsOf(f.fd);
      if (flags & FS_IMMUTABLE_FL) return skip('immutable', 'the server file is immutable');
      if (flags & FS_APPEND_FL) return skip('appendOnly', 'the server file is append-only');
      const srvExt = extentsOf(f.fd);
      if (sameExtents(refExt, srvExt, d.srv.size)) {
        Object.assign(d, { kind: 'already' }); // counted as already unified, never read
        if (!dryRun && ctx.index.getLink(srvRoot, d.path)?.ino !== d.srv.ino) sink.writes.push(record(d, st, await hashOf(), ctx));
        return undefined;
      }
      const freed = privateBytes(srvExt);
      if (dryRun) return { kind: 'unified', bytesSaved: d.srv.size, diskSaved: freed };
      const hash = await hashOf();
      beforeDedupe('write', f.fd);
      // The kernel reads both files to compare them.
      ctx.read?.(srvRoot, d.path, d.srv.size);
      ctx.read?.(ctx.refRoot, d.refPath, d.srv.size);
      let res: 'shared' | 'differs';
      try {
        res = dedupeWhole(refFd, f.fd, d.srv.size);
      } catch (err) {
        if (isErrno(err, 'EXDEV')) return skip('otherFilesystem', oneLine(err));
        return skip('error', oneLine(err));
      }
      if (res === 'differs') {
        // Its hash, so the next plan tells without reading (when unchanged since the scan).
        const own = (await hashFd(f.fd)).hash;
        if (signatureOf(fs.fstatSync(f.fd, { bigint: true })) === signatureRec(d.srv)) sink.updates.push([srvRoot, d.path, { ...d.srv, hash: own }]);
        return skip('contentDiffers', 'the kernel found the bytes unequal');
      }
      faultPoint(); // shared, not yet recorded: the next run finds it shared (FIEMAP) and records it
      // Dedupe moves no time on XFS or btrfs (measured); should a kernel do so, put them back.
      const now = fs.fstatSync(f.fd, { bigint: true });
      if (now.atimeNs !== st.atimeNs || now.mtimeNs !== st.mtimeNs) setTimesNs(f.fd, st.atimeNs, st.mtimeNs);
      sink.writes.push(record(d, st, hash, ctx));
      if (!d.srv.hash) sink.updates.push([srvRoot, d.path, { ...d.srv, hash }]);
      return { kind: 'unified', bytesSaved: d.srv.size, diskSaved: freed };
    } finally {
      await f.close();
    }
  });
}

function record(d: Shareable, st: fs.BigIntStats, hash: string, ctx: ApplyContext): Promise<boolean> {
  return ctx.index.putLink(ctx.serverRoots.get(d.server)!, d.path, {
    refRoot: ctx.refRoot, refPath: d.refPath, dev: String(st.dev), ino: String(st.ino), mode: Number(st.mode),
    uid: Number(st.uid), gid: Number(st.gid), atimeNs: String(st.atimeNs), mtimeNs: String(st.mtimeNs), xattrs: {},
    size: Number(st.size), pkg: d.pkg, hash, method: 'reflink', linkedAt: new Date().toISOString(),
  });
}

/**
 * verify: how a reflinked file differs from what was shared (null: it does not). A write or
 * an upgrade inside the vserver is normal here, so this is "diverged", not a drift.
 */
export async function reflinkDiverged(dir: RootDir, rel: RelPath, rec: LinkRecord): Promise<string | null> {
  let f: OpenedFile;
  try {
    f = await dir.openFile(rel);
  } catch (err) {
    return `cannot open it: ${oneLine(err)}`;
  }
  try {
    if (String(f.stat.ino) !== rec.ino || String(f.stat.dev) !== rec.dev) return `replaced (inode ${f.stat.ino}, was ${rec.ino})`;
    if (Number(f.stat.size) !== rec.size) return `size ${rec.size} -> ${f.stat.size}`;
    if (rec.hash && (await hashFd(f.fd)).hash !== rec.hash) return 'content written since it was shared';
    return null;
  } finally {
    await f.close();
  }
}
