// The report stage: a run's decisions and outcomes become each server's counters, the
// listed files, and the dry run's predicted savings.
import type { ApplyContext, Outcome } from './apply.js';
import type { Decision } from './model.js';
import { isPooled } from './pool/stage.js';
import type { Prepared } from './prepare.js';
import type { RelPath } from './fsx/rootdir.js';
import { addCounters, emptyCounters, pathForReport, type Counters, type FileLine, type Report } from './report.js';

export function newReport(p: Prepared, command: Report['command'], dryRun: boolean, immutable: boolean): Report {
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

/**
 * Counts each decision (with its outcome, when applied) into its server's counters; returns
 * the files to list (by verbosity) and those the quick file must mention (skip:immutable).
 */
export function tally(
  decisions: Decision[], outcomes: Map<Decision, Outcome> | null, predicted: Map<Decision, { bytesSaved: number; diskSaved: number }> | null,
  report: Report, dryRun: boolean, verbose?: number,
): { files: FileLine[]; notable: FileLine[] } {
  const files: FileLine[] = [];
  const notable: FileLine[] = [];
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
    if (shouldList(verbose, action)) files.push({ server: d.server, path: shown, action, detail });
    if (action === 'skip:immutable') notable.push({ server: d.server, path: shown, action, detail });
  }
  return { files, notable };
}

const NOTABLE = new Set(['linked', 'would-link', 'pooled', 'would-pool', 'restored', 'skip:error', 'skip:changed', 'skip:linkLimit', 'skip:immutable']);
export const shouldList = (level: number | undefined, action: string) => (level ?? 0) >= 2 || ((level ?? 0) >= 1 && NOTABLE.has(action));

export function rootNames(p: Prepared): Map<string, string> {
  return new Map([p.farm.ref, ...p.farm.servers].map((r) => [r.dir.path, r.name]));
}

/**
 * What a dry run's links would free: a server inode once all its names are linked (a
 * package may ship one inode under two names), its size and its blocks (one lstat each).
 */
export function predictSavings(p: Prepared, decisions: Decision[]): Map<Decision, { bytesSaved: number; diskSaved: number }> {
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


/** Counts the files apply reads into the report: a server file once, a reference file once per run. */
export function readCounter(p: Prepared, report: Report): NonNullable<ApplyContext['read']> {
  const counters = new Map<string, { filesHashed: number; bytesHashed: number }>([
    [p.farm.ref.dir.path, report.reference],
    ...p.farm.servers.map((sv): [string, Counters] => [sv.dir.path, report.servers[sv.name]]),
  ]);
  // A server file is read once (it has one decision); a reference file may be read once
  // per server, and counts once.
  const refRead = new Set<RelPath>();
  return (root, rel, bytes) => {
    if (root === p.farm.ref.dir.path) {
      if (refRead.has(rel)) return;
      refRead.add(rel);
    }
    const c = counters.get(root)!;
    c.filesHashed++;
    c.bytesHashed += bytes;
  };
}
