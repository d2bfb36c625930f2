// The pool stage of unify and plan: after the reference's plan, the files it could not
// share go to the pool (pool/plan.ts decides), their entries are written (pool/store.ts),
// and apply links the servers to them exactly as it links to the reference.
import { applyLinks, type ApplyContext, type Outcome } from '../apply.js';
import { oneLine } from '../errors.js';
import type { RelPath } from '../fsx/rootdir.js';
import type { Decision } from '../plan.js';
import type { PoolReport } from '../report.js';
import type { Prepared } from '../prepare.js';
import { recordOf } from '../scan.js';
import type { FileRecord } from '../store/index-db.js';
import { planPool, poolDecisions, type PoolDecision } from './plan.js';
import { createEntry, entryStat, dropUnusedEntries, hashOfEntry, poolUsage } from './store.js';

export const isPooled = (d: Decision): d is PoolDecision => (d as Partial<PoolDecision>).pool === true;

/**
 * Replaces, in decisions, the skips the pool takes by pool decisions, and (unless dry) writes
 * the new entries and links them. Returns the outcomes of the pool's links.
 */
export async function poolStage(
  p: Prepared, decisions: Decision[], ctx: ApplyContext, dryRun: boolean,
): Promise<{ outcomes: Map<Decision, Outcome>; report: PoolReport } | null> {
  const { farm } = p;
  if (farm.poolPath === null) return null;
  const pool = farm.pool;
  const entries = new Map(p.serverPlans.map((sp) => [sp.name, sp.entries]));
  const dev = String(farm.ref.dir.dev);
  const existing = (name: RelPath): FileRecord | undefined => {
    const st = pool ? entryStat(pool, name) : null;
    return st?.isFile() ? recordOf(st, hashOfEntry(name) ?? '', '') : undefined;
  };
  const groups = planPool(decisions, (s) => entries.get(s), existing, dev);
  const report: PoolReport = { dir: farm.poolPath, entriesCreated: 0, bytesWritten: 0, diskWritten: 0, entriesRemoved: 0, diskFreed: 0, entries: 0, bytes: 0, disk: 0 };
  const dirs = new Map(farm.servers.map((s) => [s.name, s.dir]));
  const replaced = new Map<Decision, PoolDecision>();
  const created: RelPath[] = [];
  for (const g of groups) {
    // The name says the metadata: an entry found by it has the members' xattrs digest.
    let entry = g.existing ? { ...g.existing, xattrs: g.members[0].srv.xattrs } : undefined;
    if (!entry && dryRun) {
      const first = g.members[0];
      const st = dirs.get(first.skip.server)!.lstatSync(first.skip.path);
      report.entriesCreated++;
      report.bytesWritten += first.srv.size;
      report.diskWritten += st ? Number(st.blocks) * 512 : first.srv.size;
      entry = { ...first.srv, ino: 'new' }; // no member shares it yet: every one would link
    }
    for (const m of entry ? [] : g.members) {
      try {
        const c = await createEntry(pool!, g.name, { dir: dirs.get(m.skip.server)!, path: m.skip.path, rec: m.srv });
        if (c.kind === 'changed') continue; // apply would find this member changed too
        entry = c.rec;
        if (c.kind === 'created') {
          created.push(g.name);
          report.entriesCreated++;
          report.bytesWritten += c.rec.size;
          report.diskWritten += c.disk;
        }
      } catch (err) {
        ctx.problems.push({ root: farm.poolPath, path: g.name, reason: `cannot write the pool entry: ${oneLine(err)}` });
      }
      break;
    }
    if (!entry) continue;
    const ds = poolDecisions(g, entry);
    g.members.forEach((m, i) => replaced.set(m.skip, ds[i]));
  }
  for (let i = 0; i < decisions.length; i++) {
    const r = replaced.get(decisions[i]);
    if (r) decisions[i] = r;
  }
  const outcomes = new Map<Decision, Outcome>();
  if (!dryRun && pool && replaced.size > 0) {
    const poolCtx: ApplyContext = {
      ...ctx,
      refRoot: pool.path,
      roots: new Map([...ctx.roots, [pool.path, pool]]),
      secondCopies: undefined,
      // Reads of the pool's own entries are not a server's.
      read: (root, rel, bytes) => { if (root !== pool.path) ctx.read?.(root, rel, bytes); },
    };
    for (const [d, o] of await applyLinks([...replaced.values()], poolCtx)) outcomes.set(d, o);
    if (poolCtx.secondCopies?.size) (ctx.secondCopies ??= new Map()).set('pool', [...poolCtx.secondCopies.values()][0]);
    const dropped = dropUnusedEntries(pool, created);
    report.entriesCreated -= dropped.entries;
    report.bytesWritten -= dropped.bytes;
    report.diskWritten -= dropped.disk;
  }
  if (pool) Object.assign(report, poolUsage(pool));
  return { outcomes, report };
}

/** After undo: entries no server uses any more go, and the pool's size is reported. */
export function sweepAfterUndo(p: Prepared): PoolReport | null {
  const pool = p.farm.pool;
  if (!pool || p.farm.poolPath === null) return null;
  const { entries, disk, left } = dropUnusedEntries(pool);
  return { dir: p.farm.poolPath, entriesCreated: 0, bytesWritten: 0, diskWritten: 0, entriesRemoved: entries, diskFreed: disk, ...left! };
}
