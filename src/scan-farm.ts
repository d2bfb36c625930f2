// The scan and hash stages over a prepared farm: every candidate of every root is stat'ed
// into the index (scan.ts does one root), then only what the plan needs is read (hash).
import type { RelPath } from './fsx/rootdir.js';
import type { CommonOptions, FileRecord, PlanRoot } from './model.js';
import { sameMetadata } from './plan.js';
import { pairedSizes } from './pool/plan.js';
import { candidatePaths, linkable, rootsOf, type Prepared, type Root } from './prepare.js';
import { phaseCounter } from './progress.js';
import { surveyVoucher } from './quick/survey.js';
import type { Report } from './report.js';
import { hashFiles, scanRoot, type InodeCache, type ScanStats } from './scan.js';

/** What the scans of one run share: hard-link twins met so far, and writes to await. */
interface ScanRun {
  inodes: InodeCache;
  writes: Array<Promise<unknown>>;
  counter: ReturnType<typeof phaseCounter>;
}

function scanRun(p: Prepared, opts: CommonOptions, files: number): ScanRun {
  return { inodes: new Map(), writes: [], counter: phaseCounter(opts.progress, 'scan', files, 'files') };
}

/**
 * Scans the reference, then every server; fills the entries of each plan root.
 * complete: also hash the pairs apply would compare (a dry run and scan must know, since
 * no comparison follows them).
 */
export async function scanAll(p: Prepared, opts: CommonOptions, report: Report, complete: boolean): Promise<void> {
  const all = rootsOf(p);
  const run = scanRun(p, opts, all.reduce((a, [, pr]) => a + candidatePaths(pr).length, 0));
  for (const [root, pr, role] of all) pr.entries = await scanWhole(p, opts, run, root, pr, role);
  // Each root's last writes commit while the next root is scanned; hashing reads them.
  await Promise.all(run.writes);
  run.counter.end();
  const t = performance.now();
  await hashForPlan(p, p.serverPlans, opts, report, complete);
  opts.trace?.('hash', performance.now() - t);
}

/** Which of a root's records this run's scan covers (the others stay, and so do settled ones). */
function coverOf(p: Prepared, opts: CommonOptions, settled?: Map<RelPath, number>) {
  const named = new Set(p.packages);
  const coversAll = opts.packages === 'all' || opts.allFiles;
  return (rec: FileRecord, rel: RelPath) => !settled?.has(rel) && (coversAll || (rec.pkg !== undefined && named.has(rec.pkg)));
}

/** Scans every candidate of one root; records of vanished files are dropped. */
async function scanWhole(p: Prepared, opts: CommonOptions, run: ScanRun, root: Root, pr: PlanRoot, role: 'reference' | 'server'): Promise<PlanRoot['entries']> {
  const { farm } = p;
  const started = Date.now();
  const stats: ScanStats = { filesHashed: 0, bytesHashed: 0, filesStatted: 0 };
  const paths = candidatePaths(pr);
  const settled = role === 'server' ? p.settled.get(pr.name) : undefined;
  const survey = farm.survey; // null with --full (see quickDisabled)
  const captured = capturedRecords(p, root);
  const entries = await scanRoot(root.dir, paths, farm.index, stats, {
    inodes: run.inodes, covers: coverOf(p, opts, settled), pkgOf: (k) => pr.owned.get(k)?.pkg, onFile: () => run.counter.add(1),
    sparse: (settled?.size ?? 0) > paths.length, keep: settled ? (k) => settled.has(k) : undefined,
    current: survey ? surveyVoucher(survey, root.dir.path) : undefined,
    recordsIfNoneVanished: captured === undefined ? undefined : captured - (settled?.size ?? 0), writes: run.writes,
  });
  opts.trace?.(`scan ${root.name}: ${paths.length} paths, ${stats.filesStatted} stat'ed${stats.vanishedSearch ? ', no search for vanished files needed' : ''}`, Date.now() - started);
  putRootScanned(p, run, root, pr.name, role, Date.now() - started);
  return entries;
}

/**
 * Tree mode, and no run wrote to the index since the capture: its records of this root are
 * the capture's candidates, so if the scanned paths' records and the settled files add up to
 * the capture's count (returned here), none of its files vanished (a name the survey vouches
 * for had that inode at the capture: a new name moves the inode's ctime).
 */
function capturedRecords(p: Prepared, root: Root): number | undefined {
  const { survey, txnAtOpen } = p.farm;
  return p.tree && survey?.txn !== undefined && survey.txn === txnAtOpen ? survey.rootRecords.get(root.dir.path) : undefined;
}

function putRootScanned(p: Prepared, run: ScanRun, root: Root, name: string, role: 'reference' | 'server', ms: number): void {
  const put = p.farm.index.putRoot(root.dir.path, { name, lastScanAt: new Date().toISOString(), lastScanMs: ms, lastRole: role });
  put.catch(() => undefined); // awaited with the run's writes
  run.writes.push(put);
}

type SlicedScan = ScanRun & { serverMs: number[]; recordsFound: number[] };

/**
 * A sliced run (see slices.ts): the reference is scanned whole first and stays; the servers
 * are scanned a slice at a time (scanSlice), and their vanished records dropped at the end
 * (dropVanished). The returned state goes to each call.
 */
export async function scanReference(p: Prepared, opts: CommonOptions, serverFiles: number): Promise<SlicedScan> {
  const run = scanRun(p, opts, candidatePaths(p.refPlan).length + serverFiles);
  p.refPlan.entries = await scanWhole(p, opts, run, p.farm.ref, p.refPlan, 'reference');
  return { ...run, serverMs: p.serverPlans.map(() => 0), recordsFound: p.serverPlans.map(() => 0) };
}

/**
 * Scans one slice of each server into views (PlanRoots holding the slice's candidates), then
 * hashes what the slice's plan needs. A server file with other names (a hard link that is
 * not the reference's inode at its path) is taken out and added to `deferred`: all its names
 * must be planned together (apply's otherNames), and they may lie in other slices.
 */
export async function scanSlice(
  p: Prepared, opts: CommonOptions, report: Report, complete: boolean, run: SlicedScan,
  views: PlanRoot[], deferred: RelPath[][] | null,
): Promise<void> {
  const { farm } = p;
  for (let i = 0; i < views.length; i++) {
    const started = Date.now();
    const v = views[i];
    const root = farm.servers[i];
    const stats: ScanStats = { filesHashed: 0, bytesHashed: 0, filesStatted: 0 };
    v.entries = await scanRoot(root.dir, candidatePaths(v), farm.index, stats, {
      inodes: run.inodes, pkgOf: (k) => v.owned.get(k)?.pkg, onFile: () => run.counter.add(1), sparse: true,
      current: farm.survey ? surveyVoucher(farm.survey, root.dir.path) : undefined, writes: run.writes,
    });
    if (deferred) {
      for (const [k, e] of v.entries) {
        if (e.kind !== 'file' || e.rec.nlink < 2) continue;
        const same = p.refPlan.entries.get(k);
        if (same?.kind === 'file' && same.rec.ino === e.rec.ino && same.rec.dev === e.rec.dev) continue;
        deferred[i].push(k);
        v.entries.delete(k);
        v.owned.delete(k);
      }
      // Deferred paths are scanned again in the last slice: their records are counted once.
      run.recordsFound[i] += stats.recordsFound ?? 0;
    }
    run.serverMs[i] += Date.now() - started;
  }
  await Promise.all(run.writes);
  run.writes.length = 0;
  await hashForPlan(p, views, opts, report, complete);
}

/** After the last slice: each server's records of files no longer candidates are dropped. */
export async function dropVanished(p: Prepared, opts: CommonOptions, run: SlicedScan): Promise<void> {
  const { farm } = p;
  p.farm.servers.forEach((root, i) => {
    const started = Date.now();
    const sp = p.serverPlans[i];
    const settled = p.settled.get(sp.name);
    const covers = coverOf(p, opts, settled);
    const gone: Array<[string, RelPath, null]> = [];
    const captured = capturedRecords(p, root);
    const noneGone = captured !== undefined && run.recordsFound[i] === captured - (settled?.size ?? 0);
    for (const rel of noneGone ? [] : farm.index.filePathsOf(root.dir.path)) {
      if (sp.owned.has(rel) || settled?.has(rel)) continue;
      const rec = farm.index.getFile(root.dir.path, rel);
      if (rec && covers(rec, rel)) gone.push([root.dir.path, rel, null]);
    }
    const put = farm.index.putFiles(gone);
    put.catch(() => undefined);
    run.writes.push(put);
    const ms = run.serverMs[i] + Date.now() - started;
    opts.trace?.(`scan ${root.name}: ${sp.owned.size} paths in slices, ${noneGone ? 'no search for vanished files needed' : `${gone.length} vanished record(s) dropped`}`, ms);
    putRootScanned(p, run, root, sp.name, 'server', ms);
  });
  await Promise.all(run.writes);
  run.writes.length = 0;
  run.counter.end();
}

/**
 * Reads only what the plan needs, cheapest test first (as fclones does): a server file that
 * already shares the reference's inode, or whose twin at the same path has its size and
 * metadata, needs no hash now (apply compares the bytes, and hashes in the same pass).
 * Other server files are hashed only when some reference file has their size and their
 * metadata (mode, owner, mtime, xattrs: what a link would share), and so are those reference
 * files: the content index then finds twins at other paths. With --pool, server files whose
 * size another server's candidate has are hashed too, to pair them.
 */
async function hashForPlan(p: Prepared, servers: PlanRoot[], opts: CommonOptions, report: Report, complete: boolean): Promise<void> {
  const refBySize = refPathsBySize(p);
  const needRef = new Set<RelPath>();
  const needSrv: RelPath[][] = [];
  const refRec = (k: RelPath) => (p.refPlan.entries.get(k) as { rec: FileRecord }).rec;
  // With a pool: server files the reference does not take, for pairing among the servers.
  const pooling = p.farm.poolPath !== null;
  const poolable: Array<Array<[RelPath, number, boolean]>> = [];
  for (const sp of servers) {
    const need: RelPath[] = [];
    const loose: Array<[RelPath, number, boolean]> = [];
    poolable.push(loose);
    for (const [k, e] of sp.entries) {
      if (e.kind !== 'file' || e.rec.size === 0 || !linkable(sp.owned.get(k))) continue;
      if (pooling) loose.push([k, e.rec.size, e.rec.hash === '']);
      const same = p.refPlan.entries.get(k);
      if (same?.kind === 'file' && linkable(p.refPlan.owned.get(k)) && same.rec.dev === e.rec.dev) {
        const r = same.rec;
        if (r.ino === e.rec.ino) { if (pooling) loose.pop(); continue; }
        const sameHash = r.hash === '' || e.rec.hash === '' || r.hash === e.rec.hash;
        if (r.size === e.rec.size && sameHash && (opts.method === 'reflink' || sameMetadata(r, e.rec))) {
          if (pooling) loose.pop(); // the reference takes it
          if (!complete) continue;
          if (e.rec.hash === '') need.push(k);
          if (r.hash === '') needRef.add(k);
          continue;
        }
      }
      // Only partners it could be linked to: a hard link shares metadata, so one that differs
      // in it is no partner, and its bytes need not be read (reflink shares extents only).
      const partners = refBySize.get(e.rec.size)?.filter((r) => opts.method === 'reflink' || sameMetadata(refRec(r), e.rec));
      if (!partners?.length) continue;
      if (e.rec.hash === '') need.push(k);
      for (const r of partners) if (refRec(r).hash === '') needRef.add(r);
    }
    needSrv.push(need);
  }
  if (pooling) {
    const paired = pairedSizes(poolable.map((l) => l.map(([, size]) => size)));
    poolable.forEach((l, i) => {
      const need = new Set(needSrv[i]);
      for (const [k, size, unread] of l) if (unread && paired.has(size) && !need.has(k)) needSrv[i].push(k);
    });
  }
  const known = new Map<string, string>();
  const sizeOf = (pr: PlanRoot, k: RelPath) => (pr.entries.get(k) as { rec: FileRecord }).rec.size;
  const totalBytes = [...needRef].reduce((a, k) => a + sizeOf(p.refPlan, k), 0) +
    needSrv.reduce((a, l, i) => a + l.reduce((b, k) => b + sizeOf(servers[i], k), 0), 0);
  const counter = phaseCounter(opts.progress, 'hash', totalBytes, 'bytes');
  const hashRoot = async (root: Root, pr: PlanRoot, paths: RelPath[], c: { filesHashed: number; bytesHashed: number }) => {
    if (paths.length === 0) return;
    const stats: ScanStats = { filesHashed: 0, bytesHashed: 0, filesStatted: 0 };
    await hashFiles(root.dir, pr.entries, paths, p.farm.index, stats, { concurrency: opts.concurrency, inodes: known, onBytes: (n) => counter.add(n) });
    c.filesHashed += stats.filesHashed;
    c.bytesHashed += stats.bytesHashed;
  };
  await hashRoot(p.farm.ref, p.refPlan, [...needRef], report.reference);
  for (let i = 0; i < servers.length; i++) {
    await hashRoot(p.farm.servers[i], servers[i], needSrv[i], report.servers[servers[i].name]);
  }
  counter.end();
}

/** The reference's scanned, non-empty candidate files by size: the partners a server file of that size may have. */
export function refPathsBySize(p: Prepared): Map<number, RelPath[]> {
  const out = new Map<number, RelPath[]>();
  for (const [k, e] of p.refPlan.entries) {
    if (e.kind !== 'file' || e.rec.size === 0 || !linkable(p.refPlan.owned.get(k))) continue;
    const l = out.get(e.rec.size);
    if (l) l.push(k);
    else out.set(e.rec.size, [k]);
  }
  return out;
}

/**
 * Reference candidates by content, for server files with no twin at their own path. Built
 * from the reference's scanned entries, whose hashes are the index's: the same answer as the
 * content index filtered to the reference, without a range read per server hash.
 */
export function refByHash(p: Prepared): Map<string, RelPath[]> {
  const out = new Map<string, RelPath[]>();
  for (const [k, e] of p.refPlan.entries) {
    if (e.kind !== 'file' || !e.rec.hash || !linkable(p.refPlan.owned.get(k))) continue;
    const l = out.get(e.rec.hash);
    if (l) l.push(k);
    else out.set(e.rec.hash, [k]);
  }
  return out;
}

