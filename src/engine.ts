// The library API: unify, plan, undo and scan over a farm. prepare.ts opens the farm and
// says which files take part (every check that can fail on bad input runs there); this
// module scans them into the index, plans, applies and reports.
import { lastKeyMemo, splitRel, type RelPath, type RootDir } from './fsx/rootdir.js';
import { applyLinks, applyUndo, type ApplyContext, type UndoItem } from './apply.js';
import { metadataDiff, plan, type Decision, type PlanRoot } from './plan.js';
import {
  candidatePaths, closeFarm, linkable, prepare, rootsOf, type Prepared, type Root,
} from './prepare.js';
import { addCounters, emptyCounters, pathForReport, type Counters, type FileLine, type Report } from './report.js';
import { phaseCounter } from './progress.js';
import { hashFiles, scanRoot, type InodeCache, type ScanStats } from './scan.js';
import type { FileRecord } from './store/index-db.js';
import { captureQuick, type CaptureRoot } from './quick/capture.js';
import { quickReport } from './quick/check.js';
import { inputsDigest } from './quick/inodes.js';
import { surveyRecord, surveyVoucher } from './quick/survey.js';
import { applyReflinks } from './reflink.js';
import { filesystemsOf } from './fsx/reflink.js';
import { pairedSizes } from './pool/plan.js';
import { isPooled, poolStage, sweepAfterUndo } from './pool/stage.js';
import type { CommonOptions, UnifyFlags } from './model.js';

export { dropVanishedRoots, TREE_PKG } from './prepare.js';
export { takeLock } from './lock.js';
export { DEFAULT_DB, DEFAULT_VSERVERS_DIR, serverPath } from './paths.js';
export type { CommonOptions } from './model.js';

/** The options of unify and plan; CommonOptions and UnifyFlags are in model.ts. */
export interface UnifyOptions extends UnifyFlags {
  /** Told of every decision before any is applied, with the open farm (plan --save). */
  onPlan?: (decisions: Decision[], p: Prepared) => void;
}


/** Scans the reference, then every server; fills the entries of each plan root. */
/**
 * complete: also hash the pairs apply would compare (a dry run and scan must know, since
 * no comparison follows them).
 */
async function scanAll(p: Prepared, opts: CommonOptions, report: Report, complete: boolean): Promise<void> {
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
function refByHash(p: Prepared): Map<string, RelPath[]> {
  const out = new Map<string, RelPath[]>();
  for (const [k, e] of p.refPlan.entries) {
    if (e.kind !== 'file' || !e.rec.hash || !linkable(p.refPlan.owned.get(k))) continue;
    const l = out.get(e.rec.hash);
    if (l) l.push(k);
    else out.set(e.rec.hash, [k]);
  }
  return out;
}

function applyContext(p: Prepared, immutable: boolean, concurrency?: number): ApplyContext {
  const roots = new Map<string, RootDir>();
  const serverRoots = new Map<string, string>();
  for (const r of [p.farm.ref, ...p.farm.servers]) roots.set(r.dir.path, r.dir);
  for (const s of p.farm.servers) serverRoots.set(s.name, s.dir.path);
  return { index: p.farm.index, roots, serverRoots, refRoot: p.farm.ref.dir.path, immutable, concurrency, problems: [] };
}

function newReport(p: Prepared, command: Report['command'], dryRun: boolean, immutable: boolean): Report {
  const servers: Report['servers'] = {};
  for (const s of p.farm.servers) servers[s.name] = { ...emptyCounters(), root: s.dir.path, notes: p.notes.get(s.name) ?? [] };
  return {
    command, dryRun, immutable, tree: p.tree,
    reference: { name: p.farm.ref.name, root: p.farm.ref.dir.path, filesHashed: 0, bytesHashed: 0 },
    packages: p.packages, servers, totals: emptyCounters(), errors: [], durationMs: 0,
  };
}

export function finish(report: Report, started: number, ctx: ApplyContext, names: Map<string, string>): Report {
  const totals = emptyCounters();
  for (const s of Object.values(report.servers)) addCounters(totals, s);
  totals.filesHashed += report.reference.filesHashed;
  totals.bytesHashed += report.reference.bytesHashed;
  report.totals = totals;
  for (const pr of ctx.problems) report.errors.push({ server: names.get(pr.root) ?? pr.root, path: pathForReport(pr.path), reason: pr.reason });
  report.durationMs = Date.now() - started;
  return report;
}

/** Links identical package files of the servers to the reference (or, dry, says what it would do). */
export async function unify(opts: UnifyOptions): Promise<Report> {
  const started = Date.now();
  const dryRun = opts.dryRun ?? false;
  // Reflink: no quick rescan (its file describes hard links) and no attribute.
  const reflink = opts.method === 'reflink';
  const immutable = !reflink && (opts.immutable ?? true);
  const quick = opts.full || opts.quickTried || reflink ? null : quickReport(opts, started);
  if (quick) return quick;
  let t = performance.now();
  const p = await prepare(opts, immutable && !dryRun, !dryRun, true);
  try {
    const report = newReport(p, dryRun ? 'plan' : 'unify', dryRun, immutable);
    if (reflink) report.method = 'reflink';
    report.filesystems = filesystemsOf(rootsOf(p).map(([r]) => ({ name: r.name, root: r.dir.path, fd: r.dir.rootFd })));
    const lap = (phase: string) => { const now = performance.now(); opts.trace?.(phase, now - t); t = now; };
    if ((opts.verbose ?? 0) < 2 && !reflink) {
      lap('prepare');
      settleFromSurvey(p, immutable && !dryRun);
      lap(`settled: ${[...p.settled.values()].reduce((a, m) => a + m.size, 0)} files unchanged and unified since the last complete run`);
    } else lap('prepare');
    await scanAll(p, opts, report, dryRun);
    lap('scan+hash');
    const decisions = plan({ reference: p.refPlan, servers: p.serverPlans, refByHash: refByHash(p), tree: p.tree, method: opts.method });
    lap('plan');
    opts.onPlan?.(decisions, p);
    const ctx = applyContext(p, immutable, opts.concurrency);
    ctx.trace = opts.trace;
    ctx.progress = opts.progress;
    const counters = new Map<string, { filesHashed: number; bytesHashed: number }>([
      [p.farm.ref.dir.path, report.reference],
      ...p.farm.servers.map((sv): [string, Counters] => [sv.dir.path, report.servers[sv.name]]),
    ]);
    // A server file is read once (it has one decision); a reference file may be read once
    // per server, and counts once.
    const refRead = new Set<RelPath>();
    ctx.read = (root, rel, bytes) => {
      if (root === p.farm.ref.dir.path) {
        if (refRead.has(rel)) return;
        refRead.add(rel);
      }
      const c = counters.get(root)!;
      c.filesHashed++;
      c.bytesHashed += bytes;
    };
    ctx.touchedDirs = new Set();
    // What apply re-records; before it, the entries in memory are the records.
    if (!dryRun) trackWrites(p);
    const shared = reflink ? await applyReflinks(decisions, ctx, dryRun) : null;
    const refOutcomes = shared ?? (dryRun ? null : await applyLinks(decisions, ctx));
    // The pool takes what the reference could not (it replaces those skips in decisions).
    const pooled = await poolStage(p, decisions, ctx, dryRun);
    lap('pool');
    if (pooled) report.pool = pooled.report;
    const outcomes = refOutcomes && pooled ? new Map([...refOutcomes, ...pooled.outcomes]) : refOutcomes;
    const files: FileLine[] = [];
    const notable: FileLine[] = [];
    const predicted = dryRun && !shared ? predictSavings(p, decisions) : null;
    for (const d of decisions) {
      const c = report.servers[d.server];
      const shown = pathForReport(d.path);
      const o = outcomes?.get(d);
      let action: string;
      let detail: string | undefined;
      const viaPool = isPooled(d);
      if (d.kind === 'already') {
        if (viaPool) c.alreadyPooled++;
        else c.alreadyUnified++;
        action = viaPool ? 'already-pooled' : 'already';
      } else if (d.kind === 'link' && (!o || o.kind === 'unified')) {
        if (viaPool) c.pooled++;
        else c.unified++;
        const saved = o && o.kind === 'unified' ? o : predicted?.get(d);
        c.bytesSaved += saved?.bytesSaved ?? 0;
        c.diskSaved += saved?.diskSaved ?? 0;
        action = viaPool ? (dryRun ? 'would-pool' : 'pooled') : dryRun ? 'would-link' : 'linked';
        if (viaPool) detail = `to pool ${d.refPath}`;
        else if (d.refPath !== d.path) detail = `to ${pathForReport(d.refPath)}`;
      } else {
        const s = d.kind === 'skip' ? d : (o as Extract<typeof o, { kind: 'skip' }>)!;
        c.skipped[s.reason]++;
        action = `skip:${s.reason}`;
        detail = s.detail;
        if (s.reason === 'error') report.errors.push({ server: d.server, path: shown, reason: s.detail ?? 'error' });
      }
      if (shouldList(opts.verbose, action)) files.push({ server: d.server, path: shown, action, detail });
      if (action === 'skip:immutable') notable.push({ server: d.server, path: shown, action, detail });
    }
    for (const [server, settled] of p.settled) report.servers[server].alreadyUnified += settled.size;
    if (opts.verbose) report.files = files;
    const done = finish(report, started, ctx, rootNames(p));
    if (!dryRun && !reflink) {
      const t0 = performance.now();
      await p.farm.index.committed();
      const why = captureAfter(p, opts, done, notable, ctx, p.farm.index.lastTxnId());
      opts.trace?.(why ? `quick file not written: ${why}` : 'quick file written', performance.now() - t0);
    }
    return done;
  } finally {
    const t0 = performance.now();
    await closeFarm(p.farm);
    opts.trace?.('index closed', performance.now() - t0);
  }
}

/** Refreshes the index for the packages' files of every root; links nothing. */
export async function scan(opts: CommonOptions): Promise<Report> {
  const started = Date.now();
  const p = await prepare(opts, false);
  try {
    const report = newReport(p, 'scan', true, false);
    await scanAll(p, opts, report, true);
    return finish(report, started, applyContext(p, false), rootNames(p));
  } finally {
    await closeFarm(p.farm);
  }
}

const NOTABLE = new Set(['linked', 'would-link', 'pooled', 'would-pool', 'restored', 'skip:error', 'skip:changed', 'skip:linkLimit', 'skip:immutable']);
export const shouldList = (level: number | undefined, action: string) => (level ?? 0) >= 2 || ((level ?? 0) >= 1 && NOTABLE.has(action));

function rootNames(p: Prepared): Map<string, string> {
  return new Map([p.farm.ref, ...p.farm.servers].map((r) => [r.dir.path, r.name]));
}

/** A dry run of unify. */
export function planRun(opts: CommonOptions): Promise<Report> {
  return unify({ ...opts, dryRun: true });
}

/** Gives each server a private copy of every shared file of the packages, with its original metadata. */
export async function undo(opts: CommonOptions): Promise<Report> {
  const started = Date.now();
  const p = await prepare(opts, false, true);
  try {
    const { farm } = p;
    const report = newReport(p, 'undo', false, false);
    const items: UndoItem[] = [];
    // Reference inodes of the packages' files: a server file that shares one is a link,
    // whether or not the index remembers making it.
    const refInodes = new Map<string, RelPath>();
    for (const k of candidatePaths(p.refPlan)) {
      const st = await farm.ref.dir.lstat(k).catch(() => null);
      if (st?.isFile()) refInodes.set(`${st.dev}:${st.ino}`, k);
    }
    for (const s of farm.servers) {
      const sp = p.serverPlans.find((x) => x.name === s.name)!;
      for (const k of candidatePaths(sp)) {
        const st = await s.dir.lstat(k).catch(() => null);
        if (!st || !st.isFile()) continue;
        const rec = farm.index.getLink(s.dir.path, k);
        const sharesRef = refInodes.has(`${st.dev}:${st.ino}`);
        const mine = rec && rec.ino === String(st.ino) && rec.dev === String(st.dev);
        const linkedByUs = mine && !rec.method && st.nlink > 1n;
        // Reflinked: its own inode, found by the index alone; given private extents again.
        const reflinked = mine && rec.method === 'reflink' && !sharesRef;
        if (sharesRef || linkedByUs || reflinked) {
          const refPath = refInodes.get(`${st.dev}:${st.ino}`);
          items.push({ server: s.name, path: k, pkg: sp.owned.get(k)!.pkg, dev: String(st.dev), ino: String(st.ino), refPath, reflink: reflinked || undefined });
        }
      }
    }
    const ctx = applyContext(p, false, opts.concurrency);
    ctx.progress = opts.progress;
    const outcomes = await applyUndo(items, ctx);
    const swept = sweepAfterUndo(p);
    if (swept) report.pool = swept;
    const files: FileLine[] = [];
    for (const it of items) {
      const o = outcomes.get(it)!;
      const c = report.servers[it.server];
      const shown = pathForReport(it.path);
      if (o.kind === 'restored') c.restored++;
      else if (o.kind === 'skip') {
        c.skipped[o.reason]++;
        if (o.reason === 'error') report.errors.push({ server: it.server, path: shown, reason: o.detail ?? 'error' });
      }
      const action = o.kind === 'skip' ? `skip:${o.reason}` : o.kind;
      if (shouldList(opts.verbose, action)) files.push({ server: it.server, path: shown, action, detail: o.kind === 'skip' ? o.detail : undefined });
    }
    if (opts.verbose) report.files = files;
    return finish(report, started, ctx, rootNames(p));
  } finally {
    await closeFarm(p.farm);
  }
}

/**
 * What a dry run's links would free: a server inode once all its names are linked (a
 * package may ship one inode under two names), its size and its blocks (one lstat each).
 */
function predictSavings(p: Prepared, decisions: Decision[]): Map<Decision, { bytesSaved: number; diskSaved: number }> {
  const names = new Map<string, Decision[]>();
  for (const d of decisions) {
    if (d.kind !== 'link') continue;
    const k = `${d.server}\0${d.srv.dev}:${d.srv.ino}`;
    (names.get(k) ?? names.set(k, []).get(k)!).push(d);
  }
  const out = new Map<Decision, { bytesSaved: number; diskSaved: number }>();
  const dirs = new Map(p.farm.servers.map((s) => [s.name, s.dir]));
  for (const group of names.values()) {
    const d = group[0] as Extract<Decision, { kind: 'link' }>;
    if (group.length !== d.srv.nlink) continue; // another name keeps the inode
    const st = dirs.get(d.server)!.lstatSync(d.path);
    if (st && String(st.ino) === d.srv.ino) out.set(d, { bytesSaved: d.srv.size, diskSaved: Number(st.blocks) * 512 });
  }
  return out;
}

/**
 * A server file that has the reference's inode at the same path, both unchanged since the
 * last complete unify (the survey), both candidates and not config, non-empty: plan would
 * say 'already', and apply has nothing to do for it (its inode carries vunify's attribute,
 * when it should). It is counted and left out of the scan and the plan, which then cost in
 * proportion to what changed.
 */
function settleFromSurvey(p: Prepared, needAttribute: boolean): void {
  const sv = p.farm.survey;
  const refDirs = sv?.roots.get(p.refPlan.root);
  if (!sv || !refDirs) return;
  const ours = needAttribute ? p.farm.index.inodeNumbersOn(sv.dev) : null; // inodes that carry vunify's attribute
  for (const sp of p.serverPlans) {
    const dirs = sv.roots.get(sp.root);
    if (!dirs) continue;
    const settled = new Map<RelPath, number>();
    // In tree mode candidates come in the walk's order, folder by folder (package listings
    // come in their own order: still correct).
    const here = lastKeyMemo((dir) => dirs.get(dir));
    const there = lastKeyMemo((dir) => refDirs.get(dir));
    for (const [k, own] of sp.owned) {
      if (own.config) continue;
      const refOwn = p.refPlan.owned.get(k);
      if (!refOwn || refOwn.config) continue;
      const { dir, name } = splitRel(k);
      const ino = here(dir)?.get(name);
      if (ino === undefined || there(dir)?.get(name) !== ino) continue;
      if (ours && !ours.has(ino)) continue;
      settled.set(k, ino);
    }
    for (const k of settled.keys()) sp.owned.delete(k);
    p.settled.set(sp.name, settled);
  }
}

/**
 * Keeps the records in memory as apply writes them: into the file's entry when it has one
 * (the scanned record then goes with the decisions, which also hold it), else into p.written.
 */
function trackWrites(p: Prepared): void {
  const entriesOf = new Map(rootsOf(p).map(([root, pr]) => [root.dir.path, pr.entries]));
  p.farm.index.trackFiles((root, rel, rec) => {
    const e = entriesOf.get(root)?.get(rel);
    const aside = p.written.get(root);
    if (rec && e?.kind === 'file') {
      e.rec = rec;
      aside?.delete(rel); // a removal before it no longer holds
    } else (aside ?? p.written.set(root, new Map()).get(root)!).set(rel, rec);
  });
}

/**
 * After a complete run, records the farm for the quick rescan, with the report a rescan of
 * the unchanged farm gives: what this run linked is then already unified, and nothing is
 * read. A run that left work (a failure, a file changed under way, a link limit) records
 * nothing. Returns why not, or null.
 */
function captureAfter(p: Prepared, opts: UnifyOptions, report: Report, notable: FileLine[], ctx: ApplyContext, txn: number): string | null {
  const t = report.totals;
  if (report.errors.length || t.skipped.changed || t.skipped.error || t.skipped.linkLimit || ctx.secondCopies?.size) {
    return 'the run left work for the next one';
  }
  const roots: CaptureRoot[] = [];
  for (const [root, pr] of rootsOf(p)) {
    const s = p.seen.get(root.dir.path)!;
    if (inputsDigest(root.dir.rootFd, s.inputs) !== s.inputsDigest) return `the package database of ${root.name} changed during the run`;
    // The records as the run left them: as scanned, or as written since (into the entries,
    // see trackWrites). A view, not a copy: the capture is this run's peak of memory.
    const writtenHere = p.written.get(root.dir.path);
    const settled = p.settled.get(pr.name);
    let count = settled?.size ?? 0;
    for (const [k, e] of pr.entries) {
      if (e.kind !== 'file') continue;
      if (writtenHere?.get(k) === null) return `the record of /${k} was dropped`;
      count++;
    }
    const settledRecord = (k: RelPath, ino: number) => writtenHere?.get(k) ?? surveyRecord(p.farm.survey!, ino) as FileRecord;
    const records: CaptureRoot['files'] = {
      size: count,
      get: (k) => {
        const e = pr.entries.get(k);
        if (e) return e.kind === 'file' ? e.rec : undefined;
        const ino = settled?.get(k);
        return ino === undefined ? undefined : settledRecord(k, ino);
      },
      *[Symbol.iterator]() {
        for (const [k, e] of pr.entries) if (e.kind === 'file') yield [k, e.rec];
        for (const [k, ino] of settled ?? []) yield [k, settledRecord(k, ino)];
      },
    };
    const folders = s.walk ? s.walk.folders : new Set([...pr.owned.keys(), ...(settled?.keys() ?? [])].map((k) => splitRel(k).dir));
    const touched = new Set<RelPath>();
    for (const k of ctx.touchedDirs ?? []) if (k.startsWith(`${root.dir.path}\0`)) touched.add(k.slice(root.dir.path.length + 1));
    roots.push({
      path: root.dir.path, rootFd: root.dir.rootFd, folders, files: records, inputs: s.inputs.folders, inputFiles: s.inputFiles,
      // The walk's listings, for folders this run did not change: what its decisions saw.
      listings: s.walk?.listings, touched,
      tree: s.walk && p.excluded ? { seen: (k) => pr.owned.has(k) || (settled?.has(k) ?? false), folders: s.walk.folders, skipped: s.walk.skipped, excluded: p.excluded } : undefined,
      listedIn: p.farm.survey ? (dir) => p.farm.survey!.roots.get(root.dir.path)?.get(dir) : undefined,
    });
  }
  const next: Report = structuredClone({ ...report, files: undefined });
  delete next.files;
  if (next.pool) Object.assign(next.pool, { entriesCreated: 0, bytesWritten: 0, diskWritten: 0 });
  next.reference.filesHashed = 0;
  next.reference.bytesHashed = 0;
  for (const c of [...Object.values(next.servers), next.totals]) {
    c.alreadyUnified += c.unified;
    c.unified = 0;
    c.alreadyPooled += c.pooled;
    c.pooled = 0;
    c.bytesSaved = 0;
    c.diskSaved = 0;
    c.filesHashed = 0;
    c.bytesHashed = 0;
  }
  return captureQuick(opts, p.farm.index.path, txn, String(p.farm.ref.dir.dev), roots, next, notable);
}

export type { Decision, Counters, Report };
