// What a run takes over from the quick rescan's survey, and what it leaves for the next
// quick rescan: the pipeline's side of src/quick/ (which never imports the pipeline).
import type { ApplyContext } from './apply.js';
import { lastKeyMemo, splitRel, type RelPath } from './fsx/rootdir.js';
import type { FileRecord, PlanRoot, ScanEntry, SkipReason, UnifyFlags } from './model.js';
import { sameMetadata } from './plan.js';
import { linkable, rootsOf, type Prepared } from './prepare.js';
import { captureQuick, type CaptureRoot, type RecordView } from './quick/capture.js';
import { refPathsBySize } from './scan-farm.js';
import { inputsDigest } from './quick/inodes.js';
import { surveyRecord, surveyVoucher } from './quick/survey.js';
import type { FileLine, Report } from './report.js';

/**
 * A server file that has the reference's inode at the same path, both unchanged since the
 * last complete unify (the survey), both candidates and not config, non-empty: plan would
 * say 'already', and apply has nothing to do for it (its inode carries vunify's attribute,
 * when it should). It is counted and left out of the scan and the plan, which then cost in
 * proportion to what changed.
 */
export function settleFromSurvey(p: Prepared, needAttribute: boolean): void {
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
 * After the reference's scan: a server file the survey vouches for (so its record is
 * current) whose plan is a skip that no hash and no link could change is counted and left
 * out of the slices, as settleFromSurvey does for files already unified. That is: its twin at
 * the same path is a reference candidate, a file on its filesystem, of another size or
 * content, or with other metadata, and every reference candidate with its size and metadata
 * has a known hash other than its own (no twin the plan could link it to, nothing to hash).
 * Its record stays as it is: its package is this run's and it has one link (so no other name
 * to plan with). At 1% changed, these were 90% of the files the slices planned again.
 * Returns how many were settled.
 */
export function settleSkips(p: Prepared): number {
  const sv = p.farm.survey;
  if (!sv) return 0;
  let total = 0;
  const ref = p.refPlan;
  const refRec = (k: RelPath) => { const e = ref.entries.get(k); return e?.kind === 'file' ? e.rec : undefined; };
  const bySize = refPathsBySize(p);
  for (const sp of p.serverPlans) {
    const settled = p.settled.get(sp.name);
    if (!settled || !sv.roots.get(sp.root)) continue;
    const vouch = surveyVoucher(sv, sp.root);
    const counts: Partial<Record<SkipReason, number>> = {};
    const taken: RelPath[] = [];
    for (const [k, own] of sp.owned) {
      if (own.config || !linkable(ref.owned.get(k))) continue;
      const r = refRec(k);
      if (!r) continue;
      const s = p.farm.index.getFile(sp.root, k);
      if (!s || s.size === 0 || s.nlink !== 1 || s.pkg !== own.pkg || s.dev !== r.dev || s.ino === r.ino) continue;
      const { dir, name } = splitRel(k);
      if (!vouch(dir, name, s)) continue;
      const reason: SkipReason | null = r.size !== s.size || (r.hash !== '' && s.hash !== '' && r.hash !== s.hash)
        ? 'contentDiffers' : sameMetadata(r, s) ? null : 'metadataDiffers';
      // A candidate with its size and metadata is one the plan would try (or hash first):
      // only if both hashes are known and differ is its verdict already made.
      if (!reason || bySize.get(s.size)?.some((k2) => { const o = refRec(k2)!; return sameMetadata(o, s) && (o.hash === '' || s.hash === '' || o.hash === s.hash); })) continue;
      settled.set(k, Number(s.ino));
      taken.push(k);
      counts[reason] = (counts[reason] ?? 0) + 1;
      total++;
    }
    for (const k of taken) sp.owned.delete(k);
    p.settledSkips.set(sp.name, counts);
  }
  return total;
}

/**
 * Keeps the records in memory as apply writes them: into the file's entry when it has one
 * (the scanned record then goes with the decisions, which also hold it), else into p.written.
 */
export function trackWrites(p: Prepared, live?: Map<string, Map<RelPath, ScanEntry>>): void {
  // A sliced run passes the entries it holds now (by root), and tracks each slice's apply only.
  const entriesOf = live ?? new Map(rootsOf(p).map(([root, pr]) => [root.dir.path, pr.entries]));
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
export function captureAfter(p: Prepared, opts: UnifyFlags, report: Report, notable: FileLine[], ctx: ApplyContext, txn: number): string | null {
  const t = report.totals;
  if (report.errors.length || t.skipped.changed || t.skipped.error || t.skipped.linkLimit || ctx.secondCopies?.size) {
    return 'the run left work for the next one';
  }
  const roots: CaptureRoot[] = [];
  // A sliced run reads every root's records back from the index, the reference's too: its
  // records in memory (~300 bytes a file) can go before the capture's own tables are made.
  if (p.sliced) p.refPlan.entries = new Map();
  for (const [root, pr] of rootsOf(p)) {
    const s = p.seen.get(root.dir.path)!;
    if (inputsDigest(root.dir.rootFd, s.inputs) !== s.inputsDigest) return `the package database of ${root.name} changed during the run`;
    const writtenHere = p.written.get(root.dir.path);
    const settled = p.settled.get(pr.name);
    const settledRecord = (k: RelPath, ino: number) => writtenHere?.get(k) ?? surveyRecord(p.farm.survey!, ino) as FileRecord;
    const records = p.sliced ? indexView(p, root.dir.path, pr, settled, settledRecord) : entriesView(pr, writtenHere, settled, settledRecord);
    if (typeof records === 'string') return records;
    const folders = s.walk ? s.walk.folders : new Set([...pr.owned.keys(), ...(settled?.keys() ?? [])].map((k) => splitRel(k).dir));
    const touched = new Set<RelPath>();
    for (const k of ctx.touchedDirs ?? []) if (k.startsWith(`${root.dir.path}\0`)) touched.add(k.slice(root.dir.path.length + 1));
    roots.push({
      path: root.dir.path, rootFd: root.dir.rootFd, folders, files: records, inputs: s.inputs.folders, inputFiles: s.inputFiles,
      // The walk's digests, for folders this run did not change: what its decisions saw.
      digests: s.walk?.digests, touched,
      tree: s.walk && p.excluded ? { seen: (k) => pr.owned.has(k) || (settled?.has(k) ?? false), folders: s.walk.folders, skipped: s.walk.skipped, excluded: p.excluded } : undefined,
      listedIn: p.farm.survey ? (dir) => p.farm.survey!.roots.get(root.dir.path)?.get(dir) : undefined,
      listings: s.walk ? p.farm.survey?.listings.get(root.dir.path) : undefined,
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


type SettledRecord = (k: RelPath, ino: number) => FileRecord;

/**
 * The records as the run left them: as scanned, or as written since (into the entries, see
 * trackWrites). A view, not a copy: the capture is a whole-farm run's peak of memory. A string: why there is no capture.
 */
function entriesView(
  pr: PlanRoot, writtenHere: Map<RelPath, FileRecord | null> | undefined, settled: Map<RelPath, number> | undefined, settledRecord: SettledRecord,
): RecordView | string {
  let count = settled?.size ?? 0;
  for (const [k, e] of pr.entries) {
    if (e.kind !== 'file') continue;
    if (writtenHere?.get(k) === null) return `the record of /${k} was dropped`;
    count++;
  }
  return {
    size: count,
    get: (k) => {
      const e = pr.entries.get(k);
      if (e) return e.kind === 'file' ? e.rec : undefined;
      const ino = settled?.get(k);
      return ino === undefined ? undefined : settledRecord(k, ino);
    },
    *entries(want) {
      for (const [k, e] of pr.entries) if (e.kind === 'file' && want(k)) yield [k, e.rec];
      for (const [k, ino] of settled ?? []) if (want(k)) yield [k, settledRecord(k, ino)];
    },
  };
}

/**
 * A sliced run's records: the index's, read as the capture asks (the run wrote
 * every record it scanned or changed there, and awaited the writes).
 */
function indexView(p: Prepared, rootPath: string, pr: PlanRoot, settled: Map<RelPath, number> | undefined, settledRecord: SettledRecord): RecordView | string {
  const index = p.farm.index;
  const getFile = (k: RelPath) => index.getFile(rootPath, k);
  for (const [k, rec] of p.written.get(rootPath) ?? []) if (rec === null && pr.owned.has(k)) return `the record of /${k} was dropped`;
  // Counted once asked: from one walk of the root's keys (no record decoded), or, when the
  // run took most files over from the survey, by looking up the few it scanned.
  let count = -1;
  const view: RecordView = {
    get size() {
      if (count < 0) {
        count = settled?.size ?? 0;
        if (count > pr.owned.size) {
          for (const k of pr.owned.keys()) if (getFile(k)) count++;
        } else {
          for (const k of index.filePathsOf(rootPath)) if (pr.owned.has(k)) count++;
        }
      }
      return count;
    },
    get: (k) => {
      if (pr.owned.has(k)) return getFile(k);
      const ino = settled?.get(k);
      return ino === undefined ? undefined : settledRecord(k, ino);
    },
    *entries(want) {
      for (const k of pr.owned.keys()) {
        const rec = want(k) ? getFile(k) : undefined;
        if (rec) yield [k, rec];
      }
      for (const [k, ino] of settled ?? []) if (want(k)) yield [k, settledRecord(k, ino)];
    },
  };
  return view;
}
