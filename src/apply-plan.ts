// `vunify plan --save FILE` and `vunify apply FILE`: a reviewed plan, applied as reviewed.
// apply opens the farm as unify does (root locks, index lock, recovery: prepare.ts), checks
// that the roots and the index are the plan's, and hands exactly the plan's link decisions
// to apply.ts, which checks each file again (stat signature against the plan, then the
// bytes) before linking it. Nothing is scanned or planned anew.
import fs from 'node:fs';
import path from 'node:path';
import { applyLinks, type ApplyContext } from './apply.js';
import { finish, shouldList, unify, type UnifyOptions } from './engine.js';
import { VunifyError } from './errors.js';
import type { RootDir } from './fsx/rootdir.js';
import { DEFAULT_VSERVERS_DIR } from './paths.js';
import { DEFAULT_DB } from './store/names.js';
import type { CommonOptions, Decision } from './model.js';
import {
  PLAN_FORMAT, PLAN_VERSION, indexIdentity, linkDecisions, planEntry, readPlan, writePlan, type PlanDocument, type PlanRootId,
} from './plan-file.js';
import { closeFarm, openFarm, type Farm, type Prepared } from './prepare.js';
import { emptyCounters, pathForReport, type Counters, type FileLine, type Report } from './report.js';
import { sameSignature } from './scan.js';

const rootId = (role: PlanRootId['role'], name: string, dir: RootDir): PlanRootId => {
  const st = fs.fstatSync(dir.rootFd, { bigint: true });
  return { role, name, path: dir.path, dev: String(st.dev), ino: String(st.ino) };
};

/** A dry run that scans every file (no quick rescan: it has no decisions) and saves its decisions to file. */
export async function savePlan(opts: UnifyOptions, file: string): Promise<Report> {
  // apply makes hard links: a plan of another method would be carried out as something else.
  const method = (opts as { method?: string }).method;
  if (method && method !== 'link') throw new VunifyError('USAGE', `plan --save: plans of --method ${method} cannot be saved (apply makes hard links)`);
  let doc: PlanDocument | null = null;
  const onPlan = (decisions: Decision[], p: Prepared) => {
    const index = indexIdentity(p.farm.index.path);
    if (!index) throw new VunifyError('INDEX', 'the index has no data file to identify it by', p.farm.index.path);
    doc = {
      format: PLAN_FORMAT, version: PLAN_VERSION, createdAt: new Date().toISOString(), vunify: version(),
      index: { path: p.farm.index.path, ...index },
      options: {
        reference: opts.reference, servers: opts.servers, packages: opts.packages,
        vserversDir: path.resolve(opts.vserversDir ?? DEFAULT_VSERVERS_DIR), rpm: opts.rpm ?? 'rpm', packageManager: opts.packageManager ?? 'auto',
        allFiles: opts.allFiles ?? false, exclude: opts.exclude ?? [], excludeFrom: (opts.excludeFrom ?? []).map((f) => path.resolve(f)),
        defaultExcludes: opts.defaultExcludes ?? true, immutable: opts.immutable ?? true,
      },
      tree: p.tree, packages: p.packages,
      roots: [rootId('reference', p.farm.ref.name, p.farm.ref.dir), ...p.farm.servers.map((s) => rootId('server', s.name, s.dir))],
      decisions: decisions.map(planEntry),
    };
  };
  const report = await unify({ ...opts, dryRun: true, full: true, quickTried: true, onPlan });
  if (!doc) throw new Error('the plan run made no decisions');
  writePlan(file, doc);
  return report;
}

function version(): string {
  return (JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
}

export interface ApplyPlanOptions extends Pick<CommonOptions, 'db' | 'verbose' | 'log' | 'progress' | 'trace' | 'concurrency'> {
  file: string;
  /** Where server names are looked up; the plan's folder when not given. */
  vserversDir?: string;
  /** Say which link decisions still apply (their files as planned); change nothing. */
  dryRun?: boolean;
}

/** The plan must be of this index: its path, and the same data file (not rebuilt, upgraded or compacted since). */
function checkIndex(doc: PlanDocument, dbPath: string, file: string): void {
  const now = indexIdentity(dbPath);
  if (doc.index.path !== dbPath || !now || now.dev !== doc.index.dev || now.ino !== doc.index.ino) {
    const why = doc.index.path !== dbPath ? `it was made with the index ${doc.index.path}, not ${dbPath}`
      : 'its index was replaced since (rebuilt, upgraded or compacted by gc)';
    throw new VunifyError('BAD_PLAN', `${why}; make a new plan`, file);
  }
}

/** Every root must be the plan's: the same path, and the same folder there (device and inode). */
function checkRoots(doc: PlanDocument, farm: Farm, file: string): void {
  const now = [rootId('reference', farm.ref.name, farm.ref.dir), ...farm.servers.map((s) => rootId('server', s.name, s.dir))];
  if (now.length !== doc.roots.length) throw new VunifyError('BAD_PLAN', 'the plan\'s roots are not the servers it names', file);
  now.forEach((r, i) => {
    const was = doc.roots[i];
    if (r.name !== was.name || r.role !== was.role) throw new VunifyError('BAD_PLAN', `the plan's ${was.role} ${was.name} is not ${r.name}`, file);
    if (r.path !== was.path) throw new VunifyError('BAD_PLAN', `the plan was made for ${was.path}, not this farm's ${r.path}`, `${file}: ${r.name}`);
    if (r.dev !== was.dev || r.ino !== was.ino) {
      throw new VunifyError('BAD_PLAN', `is another folder than when the plan was made (device and inode ${r.dev}:${r.ino}, was ${was.dev}:${was.ino})`, `${file}: ${r.path}`);
    }
  });
}

type LinkDecision = Extract<Decision, { kind: 'link' }>;

/** Carries out the plan's link decisions, each checked again; with dryRun, says which still apply. */
export async function applyPlan(o: ApplyPlanOptions): Promise<Report> {
  const started = Date.now();
  const doc = readPlan(o.file);
  const dbPath = path.resolve(o.db ?? DEFAULT_DB);
  // Before the index is opened: a plan of another index must not create one here.
  checkIndex(doc, dbPath, o.file);
  const dryRun = o.dryRun ?? false;
  const { immutable, ...run } = doc.options;
  const opts: CommonOptions = { ...run, vserversDir: o.vserversDir ?? run.vserversDir, db: dbPath, verbose: o.verbose, log: o.log, progress: o.progress, trace: o.trace };
  const farm = await openFarm(opts, immutable && !dryRun, !dryRun, false);
  try {
    checkRoots(doc, farm, o.file);
    checkIndex(doc, dbPath, o.file); // again, under the index's lock
    const report: Report = {
      command: 'apply', dryRun, immutable, tree: doc.tree,
      reference: { name: farm.ref.name, root: farm.ref.dir.path, filesHashed: 0, bytesHashed: 0 },
      packages: doc.packages, servers: {}, totals: emptyCounters(), errors: [], durationMs: 0,
    };
    for (const s of farm.servers) report.servers[s.name] = { ...emptyCounters(), root: s.dir.path, notes: [] };
    const dirs = new Map(farm.servers.map((s) => [s.name, s.dir]));
    const ctx: ApplyContext = {
      index: farm.index, roots: new Map([farm.ref, ...farm.servers].map((r) => [r.dir.path, r.dir])),
      serverRoots: new Map(farm.servers.map((s) => [s.name, s.dir.path])), refRoot: farm.ref.dir.path,
      immutable, concurrency: o.concurrency, problems: [], progress: o.progress, trace: o.trace, touchedDirs: new Set(),
    };
    const counters = new Map<string, { filesHashed: number; bytesHashed: number }>([
      [farm.ref.dir.path, report.reference], ...farm.servers.map((s): [string, Counters] => [s.dir.path, report.servers[s.name]]),
    ]);
    const refRead = new Set<string>();
    ctx.read = (root, rel, bytes) => {
      if (root === farm.ref.dir.path) { // once however many servers it is compared for
        if (refRead.has(rel)) return;
        refRead.add(rel);
      }
      const c = counters.get(root)!;
      c.filesHashed++;
      c.bytesHashed += bytes;
    };
    // A server file that has the reference's inode already was linked since the plan (by
    // an earlier apply): counted as already unified, not as changed.
    const already = new Set<LinkDecision>();
    const todo: LinkDecision[] = [];
    const planned = linkDecisions(doc);
    const still = new Map<LinkDecision, { bytesSaved: number; diskSaved: number } | null>();
    for (const d of planned) {
      const srv = lstatOrNull(dirs.get(d.server)!, d.path);
      const ref = lstatOrNull(farm.ref.dir, d.refPath);
      if (srv && ref && srv.isFile() && srv.ino === ref.ino && srv.dev === ref.dev) already.add(d);
      else if (!dryRun) todo.push(d);
      else {
        // What apply would find first: both files as planned (it then compares the bytes).
        const asPlanned = srv?.isFile() && sameSignature(srv, d.srv) && ref?.isFile() && String(ref.ino) === d.ref.ino &&
          String(ref.dev) === d.ref.dev && String(ref.mtimeNs) === d.ref.mtimeNs && Number(ref.size) === d.ref.size;
        still.set(d, asPlanned ? (srv!.nlink === 1n ? { bytesSaved: d.srv.size, diskSaved: Number(srv!.blocks) * 512 } : { bytesSaved: 0, diskSaved: 0 }) : null);
        todo.push(d);
      }
    }
    const outcomes = dryRun ? null : await applyLinks(todo, ctx);
    const files: FileLine[] = [];
    for (const d of planned) {
      const c = report.servers[d.server];
      let action: string;
      let detail: string | undefined;
      const o1 = outcomes?.get(d);
      const dry = still.get(d);
      if (already.has(d)) { c.alreadyUnified++; action = 'already'; }
      else if (dry || o1?.kind === 'unified') {
        const saved = (dry ?? o1) as { bytesSaved: number; diskSaved: number };
        c.unified++;
        c.bytesSaved += saved.bytesSaved;
        c.diskSaved += saved.diskSaved;
        action = dryRun ? 'would-link' : 'linked';
        if (d.refPath !== d.path) detail = `to ${pathForReport(d.refPath)}`;
      } else {
        const s = o1?.kind === 'skip' ? o1 : { reason: 'changed' as const, detail: 'not as planned' };
        c.skipped[s.reason]++;
        action = `skip:${s.reason}`;
        detail = s.detail;
        if (s.reason === 'error') report.errors.push({ server: d.server, path: pathForReport(d.path), reason: s.detail ?? 'error' });
      }
      if (shouldList(o.verbose, action)) files.push({ server: d.server, path: pathForReport(d.path), action, detail });
    }
    if (o.verbose) report.files = files;
    return finish(report, started, ctx, new Map([farm.ref, ...farm.servers].map((r) => [r.dir.path, r.name])));
  } finally {
    await closeFarm(farm);
  }
}

/** null for a file that cannot be looked at (a symlink on the way, EACCES): not as planned; apply says why. */
function lstatOrNull(dir: RootDir, rel: string): fs.BigIntStats | null {
  try {
    return dir.lstatSync(rel);
  } catch {
    return null;
  }
}
