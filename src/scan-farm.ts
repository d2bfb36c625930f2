// The scan and hash stages over a prepared farm: every candidate of every root is stat'ed
// into the index (scan.ts does one root), then only what the plan needs is read (hash).
import type { RelPath } from './fsx/rootdir.js';
import type { CommonOptions, FileRecord, PlanRoot } from './model.js';
import { metadataDiff } from './plan.js';
import { pairedSizes } from './pool/plan.js';
import { candidatePaths, linkable, rootsOf, type Prepared, type Root } from './prepare.js';
import { phaseCounter } from './progress.js';
import { surveyVoucher } from './quick/survey.js';
import type { Report } from './report.js';
import { hashFiles, scanRoot, type InodeCache, type ScanStats } from './scan.js';

/** Scans the reference, then every server; fills the entries of each plan root. */
/**
 * complete: also hash the pairs apply would compare (a dry run and scan must know, since
 * no comparison follows them).
 */
export async function scanAll(p: Prepared, opts: CommonOptions, report: Report, complete: boolean): Promise<void> {
  const { farm } = p;
  const inodes: InodeCache = new Map();
  const named = new Set(p.packages);
  const coversAll = opts.packages === 'all' || opts.allFiles;
  // Records of settled files stay: they were not scanned because nothing about them changed.
  const coverOf = (settled?: Map<RelPath, number>) => (rec: FileRecord, rel: RelPath) =>
    !settled?.has(rel) && (coversAll || (rec.pkg !== undefined && named.has(rec.pkg)));
  const all = rootsOf(p);
  const survey = p.farm.survey; // null with --full (see quickDisabled)
  const writes: Array<Promise<unknown>> = [];
  const counter = phaseCounter(opts.progress, 'scan', all.reduce((a, [, pr]) => a + candidatePaths(pr).length, 0), 'files');
  for (const [root, pr, role] of all) {
    const started = Date.now();
    const stats: ScanStats = { filesHashed: 0, bytesHashed: 0, filesStatted: 0 };
    const paths = candidatePaths(pr);
    const settled = role === 'server' ? p.settled.get(pr.name) : undefined;
    // Tree mode, and no run wrote to the index since the capture: its records of this root are
    // the capture's candidates, so if the scanned paths' records and the settled files add up
    // to the capture's count, none of its files vanished (a name the survey vouches for had
    // that inode at the capture: a new name moves the inode's ctime).
    const captured = p.tree && survey?.txn !== undefined && survey.txn === farm.txnAtOpen ? survey.rootRecords.get(root.dir.path) : undefined;
    pr.entries = await scanRoot(root.dir, paths, farm.index, stats, {
      inodes, covers: coverOf(settled), pkgOf: (k) => pr.owned.get(k)?.pkg, onFile: () => counter.add(1),
      sparse: (settled?.size ?? 0) > paths.length, keep: settled ? (k) => settled.has(k) : undefined,
      current: survey ? surveyVoucher(survey, root.dir.path) : undefined,
      recordsIfNoneVanished: captured === undefined ? undefined : captured - (settled?.size ?? 0), writes,
    });
    opts.trace?.(`scan ${root.name}: ${paths.length} paths, ${stats.filesStatted} stat'ed${stats.vanishedSearch ? ', no search for vanished files needed' : ''}`, Date.now() - started);
    const put = farm.index.putRoot(root.dir.path, { name: root.name, lastScanAt: new Date().toISOString(), lastScanMs: Date.now() - started, lastRole: role });
    put.catch(() => undefined); // awaited below
    writes.push(put);
  }
  // Each root's last writes commit while the next root is scanned; hashing reads them.
  await Promise.all(writes);
  counter.end();
  const t = performance.now();
  await hashForPlan(p, opts, report, complete);
  opts.trace?.('hash', performance.now() - t);
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
async function hashForPlan(p: Prepared, opts: CommonOptions, report: Report, complete: boolean): Promise<void> {
  const refBySize = new Map<number, RelPath[]>();
  for (const [k, e] of p.refPlan.entries) {
    if (e.kind !== 'file' || e.rec.size === 0 || !linkable(p.refPlan.owned.get(k))) continue;
    const l = refBySize.get(e.rec.size) ?? [];
    l.push(k);
    refBySize.set(e.rec.size, l);
  }
  const needRef = new Set<RelPath>();
  const needSrv: RelPath[][] = [];
  const refRec = (k: RelPath) => (p.refPlan.entries.get(k) as { rec: FileRecord }).rec;
  // With a pool: server files the reference does not take, for pairing among the servers.
  const pooling = p.farm.poolPath !== null;
  const poolable: Array<Array<[RelPath, number, boolean]>> = [];
  for (const sp of p.serverPlans) {
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
        if (r.size === e.rec.size && sameHash && (opts.method === 'reflink' || metadataDiff(r, e.rec).length === 0)) {
          if (pooling) loose.pop(); // the reference takes it
          if (!complete) continue;
          if (e.rec.hash === '') need.push(k);
          if (r.hash === '') needRef.add(k);
          continue;
        }
      }
      // Only partners it could be linked to: a hard link shares metadata, so one that differs
      // in it is no partner, and its bytes need not be read (reflink shares extents only).
      const partners = refBySize.get(e.rec.size)?.filter((r) => opts.method === 'reflink' || metadataDiff(refRec(r), e.rec).length === 0);
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
    needSrv.reduce((a, l, i) => a + l.reduce((b, k) => b + sizeOf(p.serverPlans[i], k), 0), 0);
  const counter = phaseCounter(opts.progress, 'hash', totalBytes, 'bytes');
  const hashRoot = async (root: Root, pr: PlanRoot, paths: RelPath[], c: { filesHashed: number; bytesHashed: number }) => {
    if (paths.length === 0) return;
    const stats: ScanStats = { filesHashed: 0, bytesHashed: 0, filesStatted: 0 };
    await hashFiles(root.dir, pr.entries, paths, p.farm.index, stats, { concurrency: opts.concurrency, inodes: known, onBytes: (n) => counter.add(n) });
    c.filesHashed += stats.filesHashed;
    c.bytesHashed += stats.bytesHashed;
  };
  await hashRoot(p.farm.ref, p.refPlan, [...needRef], report.reference);
  for (let i = 0; i < p.serverPlans.length; i++) {
    await hashRoot(p.farm.servers[i], p.serverPlans[i], needSrv[i], report.servers[p.serverPlans[i].name]);
  }
  counter.end();
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

