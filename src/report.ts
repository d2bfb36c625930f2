// Reports: counters per server and in total, as a text table or one JSON document.
import { display, type RelPath } from './fsx/rootdir.js';
import { SKIP_REASONS, type SkipReason } from './plan.js';
import { toCsv, visible } from './table.js';

export interface Counters {
  unified: number;
  alreadyUnified: number;
  /** --pool: files linked to the pool's copy (the reference lacks their content), and those that were. */
  pooled: number;
  alreadyPooled: number;
  restored: number;
  /** Apparent bytes (st_size) of the copies freed. */
  bytesSaved: number;
  /** What the disk gives back (st_blocks of each copy freed, counted once per inode): what du and df see. */
  diskSaved: number;
  filesHashed: number;
  bytesHashed: number;
  skipped: Record<SkipReason, number>;
}

/** --pool: what the pool holds, and what this run wrote to it or removed from it. */
export interface PoolReport {
  dir: string;
  /** Entries this run wrote (dry: would write), their bytes and blocks: the pool's cost, to weigh against diskSaved. */
  entriesCreated: number;
  bytesWritten: number;
  diskWritten: number;
  /** Entries no server uses any more, removed (undo). */
  entriesRemoved: number;
  diskFreed: number;
  /** The pool after the run. */
  entries: number;
  bytes: number;
  disk: number;
}

export interface FileLine { server: string; path: string; action: string; detail?: string }

export interface Report {
  command: 'unify' | 'plan' | 'undo' | 'scan' | 'apply';
  dryRun: boolean;
  immutable: boolean;
  /** Tree mode (--all-files): every file, no package list. */
  tree: boolean;
  reference: { name: string; root: string; filesHashed: number; bytesHashed: number };
  packages: string[];
  servers: Record<string, Counters & { root: string; notes: string[] }>;
  totals: Counters;
  /** Files that failed (skip reason 'error') and problems beyond single files. */
  errors: Array<{ server: string; path: string; reason: string }>;
  /** Every decision, when asked for (-v). */
  files?: FileLine[];
  /**
   * Set by a quick rescan: nothing this run depends on changed since the unify of this time
   * (every folder listing and candidate inode checked), so its outcome is that run's.
   */
  unchangedSince?: string;
  /** Set with --method reflink: extents shared, inodes private (diskSaved: the extents freed). */
  method?: 'reflink';
  /** unify and plan: each root's filesystem and the methods it supports (the text shows them for plan). */
  filesystems?: Array<{ name: string; root: string; fs: string; methods: Array<'link' | 'reflink'> }>;
  /** --pool: the pool's part (its savings are in each server's diskSaved; its copies in diskWritten). */
  pool?: PoolReport;
  durationMs: number;
}

export function emptyCounters(): Counters {
  return {
    unified: 0, alreadyUnified: 0, pooled: 0, alreadyPooled: 0, restored: 0, bytesSaved: 0, diskSaved: 0, filesHashed: 0, bytesHashed: 0,
    skipped: Object.fromEntries(SKIP_REASONS.map((r) => [r, 0])) as Record<SkipReason, number>,
  };
}

export function addCounters(into: Counters, c: Counters): void {
  into.unified += c.unified;
  into.alreadyUnified += c.alreadyUnified;
  into.pooled += c.pooled;
  into.alreadyPooled += c.alreadyPooled;
  into.restored += c.restored;
  into.bytesSaved += c.bytesSaved;
  into.diskSaved += c.diskSaved;
  into.filesHashed += c.filesHashed;
  into.bytesHashed += c.bytesHashed;
  for (const r of SKIP_REASONS) into.skipped[r] += c.skipped[r];
}

export function pathForReport(rel: RelPath): string {
  return '/' + display(rel);
}

export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** A human-readable summary: one row per server, then the totals and any errors. */
export function formatText(r: Report): string {
  const lines: string[] = [];
  const verb = r.command === 'undo' ? 'restored' : r.dryRun ? 'would unify' : 'unified';
  const head = r.command === 'undo'
    ? ['server', 'restored', 'errors']
    : r.command === 'scan'
      ? ['server', 'files read', 'bytes read']
      : ['server', verb, 'already', ...(r.pool ? [r.dryRun ? 'would pool' : 'pooled', 'in pool'] : []), 'skipped', 'disk saved', 'apparent', 'hashed'];
  const rows: string[][] = [];
  const row = (name: string, c: Counters) => {
    const skipped = SKIP_REASONS.reduce((a, k) => a + c.skipped[k], 0);
    rows.push(r.command === 'undo'
      ? [name, String(c.restored), String(c.skipped.error)]
      : r.command === 'scan'
        ? [name, String(c.filesHashed), humanBytes(c.bytesHashed)]
        : [name, String(c.unified), String(c.alreadyUnified), ...(r.pool ? [String(c.pooled), String(c.alreadyPooled)] : []), String(skipped), humanBytes(c.diskSaved), humanBytes(c.bytesSaved), humanBytes(c.bytesHashed)]);
  };
  if (r.command === 'scan') row(`${r.reference.name} (reference)`, { ...emptyCounters(), ...r.reference });
  for (const [name, c] of Object.entries(r.servers)) row(name, c);
  row('total', r.totals);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  const what = r.tree ? 'every file (--all-files)' : `${r.packages.length} package(s)`;
  lines.push(`vunify ${r.command}${r.dryRun ? ' (dry run: nothing changed)' : ''}: reference ${r.reference.name}, ${what}${r.method ? `, method ${r.method}` : ''}`);
  if (r.dryRun) for (const f of r.filesystems ?? []) lines.push(`${f.name}: ${f.fs}, methods: ${f.methods.join(', ')}`);
  if (r.unchangedSince) lines.push(`farm unchanged since the run of ${r.unchangedSince} (quick rescan: every listing and file checked by stat)`);
  lines.push(fmt(head));
  for (const x of rows) lines.push(fmt(x));
  if (r.command !== 'undo' && r.command !== 'scan') {
    const reasons = SKIP_REASONS.filter((k) => r.totals.skipped[k] > 0).map((k) => `${k} ${r.totals.skipped[k]}`);
    if (reasons.length) lines.push(`skipped: ${reasons.join(', ')}`);
  }
  if (r.pool) {
    const p = r.pool;
    const run = r.command === 'undo'
      ? `${p.entriesRemoved} unused entr${p.entriesRemoved === 1 ? 'y' : 'ies'} removed (${humanBytes(p.diskFreed)})`
      : `${r.dryRun ? 'would write' : 'wrote'} ${p.entriesCreated} entr${p.entriesCreated === 1 ? 'y' : 'ies'} (${humanBytes(p.diskWritten)}; disk saved net of them: ${humanBytes(r.totals.diskSaved - p.diskWritten)})`;
    lines.push(`pool ${visible(p.dir)}: ${p.entries} entr${p.entries === 1 ? 'y' : 'ies'}, ${humanBytes(p.disk)}; this run ${run}`);
  }
  for (const [name, s] of Object.entries(r.servers)) for (const n of s.notes) lines.push(`${name}: ${n}`);
  if (!r.immutable && !r.method && r.command !== 'undo' && !r.dryRun && r.totals.unified > 0) {
    lines.push('warning: --no-immutable: a write to a unified file in one vserver changes it in all of them');
  }
  // Names come from the vservers: control characters are shown escaped, never sent raw.
  for (const e of r.errors) lines.push(`error: ${e.server}: ${visible(e.path)}: ${visible(e.reason)}`);
  if (r.files) for (const f of r.files) lines.push(`${f.server}\t${f.action}\t${visible(f.path)}${f.detail ? `\t${visible(f.detail)}` : ''}`);
  return lines.join('\n') + '\n';
}

/** CSV: one row per server and a total row; with listed files, one row per file instead. */
export function formatCsv(r: Report): string {
  if (r.files) return toCsv(['server', 'action', 'path', 'detail'], r.files.map((f) => [f.server, f.action, f.path, f.detail ?? '']));
  const head = ['server', 'unified', 'alreadyUnified', 'restored', 'diskSaved', 'bytesSaved', 'filesHashed', 'bytesHashed', ...SKIP_REASONS.map((k) => `skipped.${k}`), 'pooled', 'alreadyPooled'];
  const row = (name: string, c: Counters) => [name, c.unified, c.alreadyUnified, c.restored, c.diskSaved, c.bytesSaved, c.filesHashed, c.bytesHashed, ...SKIP_REASONS.map((k) => c.skipped[k]), c.pooled, c.alreadyPooled];
  return toCsv(head, [...Object.entries(r.servers).map(([n, c]) => row(n, c)), row('total', r.totals)]);
}
