// The library API: unify, plan, undo and scan, each a list of the pipeline's stages:
// prepare.ts (the farm and its candidates) -> scan-farm.ts (scan, then hash what the plan
// needs) -> plan.ts (pure) -> apply.ts (and pool/stage.ts) -> tally.ts (the report), with
// rescan.ts taking over from and leaving state for the quick rescan (quick/).
import type { RelPath, RootDir } from './fsx/rootdir.js';
import { applyLinks, applyUndo, type ApplyContext, type UndoItem } from './apply.js';
import { plan, type Decision } from './plan.js';
import { candidatePaths, closeFarm, prepare, rootsOf, type Prepared } from './prepare.js';
import { pathForReport, type Counters, type FileLine, type Report } from './report.js';
import { quickReport } from './quick/check.js';
import { applyReflinks } from './reflink.js';
import { filesystemsOf } from './fsx/reflink.js';
import { poolStage, sweepAfterUndo } from './pool/stage.js';
import { poolEntries } from './pool/store.js';
import type { CommonOptions, PlanRoot, ScanEntry, SkipReason, UnifyFlags } from './model.js';
import { dropVanished, refByHash, scanAll, scanReference, scanSlice } from './scan-farm.js';
import { cutSlices, sliceFiles } from './slices.js';
import { captureAfter, settleFromSurvey, settleSkips, trackWrites } from './rescan.js';
import { finish, newReport, predictSavings, readCounter, rootNames, shouldList, tally } from './tally.js';

export { dropVanishedRoots, TREE_PKG } from './prepare.js';
export { takeLock } from './lock.js';
export { DEFAULT_DB, DEFAULT_VSERVERS_DIR, serverPath } from './paths.js';
export type { CommonOptions } from './model.js';

/** The options of unify and plan; CommonOptions and UnifyFlags are in model.ts. */
export interface UnifyOptions extends UnifyFlags {
  /** Told of every decision before any is applied, with the open farm (plan --save). */
  onPlan?: (decisions: Decision[], p: Prepared) => void;
}

function applyContext(p: Prepared, immutable: boolean, concurrency?: number): ApplyContext {
  const roots = new Map<string, RootDir>();
  const serverRoots = new Map<string, string>();
  for (const r of [p.farm.ref, ...p.farm.servers]) roots.set(r.dir.path, r.dir);
  for (const s of p.farm.servers) serverRoots.set(s.name, s.dir.path);
  return { index: p.farm.index, roots, serverRoots, refRoot: p.farm.ref.dir.path, immutable, concurrency, problems: [] };
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
    const ctx = applyContext(p, immutable, opts.concurrency);
    ctx.trace = opts.trace;
    ctx.progress = opts.progress;
    ctx.read = readCounter(p, report);
    ctx.touchedDirs = new Set();
    ctx.spreadLinks = p.farm.survey !== null; // the links are what changed since the last complete run
    // The pool pairs files across the whole farm, a saved plan holds every decision, and a
    // reflink run is rare: those take the farm at once; other runs go a slice at a time.
    const sliced = !reflink && p.farm.poolPath === null && !opts.onPlan;
    const { files, notable } = sliced
      ? await unifySlices(p, opts, report, ctx, dryRun, lap)
      : await unifyWhole(p, opts, report, ctx, dryRun, reflink, lap);
    for (const [server, settled] of p.settled) {
      const c = report.servers[server];
      let skips = 0;
      for (const [reason, n] of Object.entries(p.settledSkips.get(server) ?? {}) as Array<[SkipReason, number]>) {
        c.skipped[reason] += n;
        skips += n;
      }
      c.alreadyUnified += settled.size - skips;
    }
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

type Lap = (phase: string) => void;
type Listed = { files: FileLine[]; notable: FileLine[] };

/** The whole farm at once: every record and decision in memory (see unifySlices). */
async function unifyWhole(p: Prepared, opts: UnifyOptions, report: Report, ctx: ApplyContext, dryRun: boolean, reflink: boolean, lap: Lap): Promise<Listed> {
  await scanAll(p, opts, report, dryRun);
  lap('scan+hash');
  const decisions = plan({ reference: p.refPlan, servers: p.serverPlans, refByHash: refByHash(p), tree: p.tree, method: opts.method });
  lap('plan');
  opts.onPlan?.(decisions, p);
  // What apply re-records; before it, the entries in memory are the records.
  if (!dryRun) trackWrites(p);
  const shared = reflink ? await applyReflinks(decisions, ctx, dryRun) : null;
  const refOutcomes = shared ?? (dryRun ? null : await applyLinks(decisions, ctx));
  // The pool takes what the reference could not (it replaces those skips in decisions).
  const pooled = await poolStage(p, decisions, ctx, dryRun);
  lap('pool');
  if (pooled) report.pool = pooled.report;
  const outcomes = refOutcomes && pooled ? new Map([...refOutcomes, ...pooled.outcomes]) : refOutcomes;
  const predicted = dryRun && !shared ? predictSavings(p, decisions) : null;
  return tally(decisions, outcomes, predicted, report, dryRun, opts.verbose);
}

/**
 * A slice at a time (slices.ts): the reference is scanned whole and stays; then for each
 * slice of folders, every server's files there are scanned, hashed, planned, linked and
 * counted, and their records and decisions let go. Files with other names come last,
 * together. Server records are read back from the index for the quick file.
 */
async function unifySlices(p: Prepared, opts: UnifyOptions, report: Report, ctx: ApplyContext, dryRun: boolean, lap: Lap): Promise<Listed> {
  const run = await scanReference(p, opts, p.serverPlans.reduce((a, sp) => a + candidatePaths(sp).length, 0));
  lap('scan reference');
  if (p.farm.survey) lap(`settled: ${settleSkips(p)} skips unchanged since the last complete run`);
  // Config files too: the plan says why they stay private (the scan leaves them out).
  const serverPaths = p.serverPlans.map((sp) => [...sp.owned.keys()]);
  const slices = cutSlices([...p.refPlan.owned.keys()], serverPaths, sliceFiles());
  serverPaths.length = 0;
  const deferred: RelPath[][] = p.serverPlans.map(() => []);
  slices.push({ refPaths: [], serverPaths: deferred });
  const live = new Map<string, Map<RelPath, ScanEntry>>([[p.refPlan.root, p.refPlan.entries]]);
  p.sliced = true;
  const out: Listed = { files: [], notable: [] };
  // Index pages a slice reads or writes (the write thread's too) leave this process's memory
  // ten times a second, as well as after each slice: they come back on the next touch.
  const release = setInterval(() => p.farm.index.releaseMapped(), 100);
  try {
    for (let n = 0; n < slices.length; n++) {
      const slice = slices[n];
      slices[n] = { refPaths: [], serverPaths: [] }; // let go of the slice's lists
      const last = n === slices.length - 1;
      const views: PlanRoot[] = p.serverPlans.map((sp, i) => ({
        name: sp.name, root: sp.root, installed: sp.installed, entries: new Map(),
        owned: new Map(slice.serverPaths[i].map((k) => [k, sp.owned.get(k)!])),
      }));
      await scanSlice(p, opts, report, dryRun, run, views, last ? null : deferred);
      for (const v of views) live.set(v.root, v.entries);
      const decisions = plan({
        reference: p.refPlan, servers: views, refByHash: refByHash(p), tree: p.tree, method: opts.method, refPaths: slice.refPaths,
      });
      // What apply re-records (as unifyWhole does; the scan's own writes are not tracked).
      if (!dryRun) trackWrites(p, live);
      const outcomes = dryRun ? null : await applyLinks(decisions, ctx);
      p.farm.index.trackFiles(null);
      const predicted = dryRun ? predictSavings(p, decisions) : null;
      const listed = tally(decisions, outcomes, predicted, report, dryRun, opts.verbose);
      for (const f of listed.files) out.files.push(f);
      for (const f of listed.notable) out.notable.push(f);
      for (const v of views) live.delete(v.root);
      // Each chunk put its folders' times back; a later slice that changes one of them again
      // (the last slice's) notes its times anew. Kept, they grew with the farm.
      ctx.dirTimes?.clear();
      p.farm.index.releaseMapped();
      lap(`slice ${n + 1} of ${slices.length}${last ? ' (files with other names)' : ''}: ${views.reduce((a, v) => a + v.owned.size, 0)} server files, ${decisions.length} decisions`);
    }
    await dropVanished(p, opts, run);
  } finally {
    clearInterval(release);
  }
  lap('vanished records');
  // One server's lines together, as the whole-farm order gives them.
  const order = new Map(p.serverPlans.map((sp, i) => [sp.name, i]));
  const missingFirst = (f: FileLine) => (f.action === 'skip:packageMissing' ? 0 : 1);
  out.files.sort((a, b) => order.get(a.server)! - order.get(b.server)! || missingFirst(a) - missingFirst(b) || (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return out;
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
    const refNames = new Map<string, number>();
    for (const k of candidatePaths(p.refPlan)) {
      const st = await farm.ref.dir.lstat(k).catch(() => null);
      if (!st?.isFile()) continue;
      const key = `${st.dev}:${st.ino}`;
      refInodes.set(key, k);
      refNames.set(key, (refNames.get(key) ?? 0) + 1);
    }
    // Pool entries likewise (--pool): a server file on one is shared, even under a name
    // its link record does not have (a folder renamed in the vserver since).
    const poolInodes = new Set(farm.pool ? [...poolEntries(farm.pool)].map((e) => `${e.st.dev}:${e.st.ino}`) : []);
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
        const pooled = st.nlink > 1n && poolInodes.has(`${st.dev}:${st.ino}`);
        if (sharesRef || linkedByUs || reflinked || pooled) {
          const refPath = refInodes.get(`${st.dev}:${st.ino}`);
          items.push({
            server: s.name, path: k, pkg: sp.owned.get(k)!.pkg, dev: String(st.dev), ino: String(st.ino), refPath,
            reflink: reflinked || undefined, refNames: refNames.get(`${st.dev}:${st.ino}`),
          });
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

export { finish, shouldList } from './tally.js';
export type { Decision, Counters, Report };
