// `--metrics FILE`: the run's outcome in Prometheus's text exposition format (0.0.4), for
// node_exporter's textfile collector. Every sample carries the command as a label, so the
// files of several commands can sit in one collector folder without clashing. A total has
// its own name and the per-server series their `vunify_server_` names, so that sum() over
// the servers equals the total and never counts it twice.
import { writeFileAtomic } from './fsx/atomic-file.js';
import { oneLine, VunifyError } from './errors.js';
import { SKIP_REASONS } from './model.js';
import type { Counters, Report } from './report.js';
import type { IndexReport, Savings } from './summary.js';
import type { VerifyReport } from './verify.js';

export interface RunMetrics {
  /** The CLI's command (unify, plan, scan, apply, verify, report). */
  command: string;
  /** Unix time in ms. */
  startedMs: number;
  durationMs: number;
  exitCode: number;
  /** What the run reported; none when it stopped with an error. */
  result?: Report | VerifyReport | IndexReport;
}

type Labels = Record<string, string>;
interface Family { name: string; help: string; samples: Array<[Labels, number]> }

const escapeLabel = (v: string) => v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const escapeHelp = (v: string) => v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (!Number.isFinite(v)) return v > 0 ? '+Inf' : '-Inf';
  return Number.isInteger(v) ? String(v) : v.toFixed(3);
}

/** The exposition text: per family a HELP and a TYPE line (all gauges: each is the last run's value), then its samples. */
export function formatMetrics(run: RunMetrics): string {
  const families: Family[] = [];
  const base: Labels = { command: run.command };
  const family = (name: string, help: string, samples: Array<[Labels, number]>) => families.push({ name: `vunify_${name}`, help, samples });
  const one = (name: string, help: string, v: number) => family(name, help, [[base, v]]);
  one('last_run_start_timestamp_seconds', 'When the last run of this command started (Unix time).', run.startedMs / 1000);
  one('last_run_duration_seconds', 'How long the last run of this command took.', run.durationMs / 1000);
  one('last_run_exit_code', 'Exit code of the last run of this command: 0 done, 1 some files failed or drift found, 2 bad input, 3 locked, 4 internal error.', run.exitCode);
  const r = run.result;
  if (r?.command === 'verify') verifyFamilies(r, base, one);
  else if (r?.command === 'report') indexFamilies(r, base, family);
  else if (r) runFamilies(r, base, family);
  return families.map((f) => [
    `# HELP ${f.name} ${escapeHelp(f.help)}`,
    `# TYPE ${f.name} gauge`,
    ...f.samples.map(([labels, v]) => `${f.name}{${Object.entries(labels).map(([k, x]) => `${k}="${escapeLabel(x)}"`).join(',')}} ${formatValue(v)}`),
  ].join('\n')).join('\n') + '\n';
}

type Add = (name: string, help: string, samples: Array<[Labels, number]>) => void;

/** unify, plan, scan, apply (and undo): the report's counters, in total and per server. */
function runFamilies(r: Report, base: Labels, family: Add): void {
  const servers = Object.entries(r.servers);
  const both = (name: string, help: string, get: (c: Counters) => number) => {
    family(name, `${help}, all servers.`, [[base, get(r.totals)]]);
    family(`server_${name}`, `${help}, per server.`, servers.map(([s, c]) => [{ ...base, server: s }, get(c)]));
  };
  both('files_unified', 'Files the last run linked to the reference (plan and dry runs: would link)', (c) => c.unified);
  both('files_already_unified', 'Files that already shared the reference\'s inode', (c) => c.alreadyUnified);
  both('files_pooled', 'Files the last run linked to a pool entry (--pool; plan: would link)', (c) => c.pooled);
  both('files_already_pooled', 'Files that already shared a pool entry\'s inode (--pool)', (c) => c.alreadyPooled);
  both('files_restored', 'Files undo gave a private copy again', (c) => c.restored);
  family('files_skipped', 'Files left private by the last run, by reason, all servers.', SKIP_REASONS.map((k) => [{ ...base, reason: k }, r.totals.skipped[k]]));
  family('server_files_skipped', 'Files left private by the last run, by reason, per server.',
    servers.flatMap(([s, c]) => SKIP_REASONS.map((k): [Labels, number] => [{ ...base, server: s, reason: k }, c.skipped[k]])));
  both('saved_apparent_bytes', 'Apparent size (st_size) of the copies the last run freed (bytesSaved)', (c) => c.bytesSaved);
  both('saved_disk_bytes', 'Disk space (st_blocks) the last run gave back (diskSaved)', (c) => c.diskSaved);
  family('files_read', 'Files the last run read (hashed or compared), the reference included.', [[base, r.totals.filesHashed]]);
  family('read_bytes', 'Bytes the last run read (hashed or compared), the reference included.', [[base, r.totals.bytesHashed]]);
  family('errors', 'Files that failed and problems the last run reported.', [[base, r.errors.length]]);
}

function verifyFamilies(r: VerifyReport, base: Labels, one: (name: string, help: string, v: number) => void): void {
  one('verify_drifts', 'Drifts verify found: links, shared inodes or roots no longer as vunify left them.', r.drifts.length);
  one('verify_checked_links', 'Link records verify checked.', r.checked.links);
  one('verify_checked_inodes', 'Shared inodes verify checked.', r.checked.inodes);
  one('verify_unfinished', 'Changes a killed run left under way (vunify recover finishes them).', r.unfinished);
}

/** `vunify report`: the index's view, so far, not one run's. */
function indexFamilies(r: IndexReport, base: Labels, family: Add): void {
  const servers = Object.entries(r.servers);
  const both = (name: string, help: string, get: (s: Savings) => number) => {
    family(`index_${name}`, `${help}, all servers.`, [[base, get(r.totals)]]);
    family(`index_server_${name}`, `${help}, per server.`, servers.map(([s, v]) => [{ ...base, server: s }, get(v)]));
  };
  both('linked_files', 'Server files linked to the reference, as the index records them', (s) => s.linkedFiles);
  both('saved_apparent_bytes', 'Apparent size of the server copies those links replaced', (s) => s.bytesSaved);
  both('possible_files', 'Server files with a twin in the reference that are not linked yet', (s) => s.possibleFiles);
  both('possible_apparent_bytes', 'Apparent size of those files', (s) => s.possibleBytes);
}

export function writeMetrics(file: string, run: RunMetrics): void {
  try {
    writeFileAtomic(file, formatMetrics(run));
  } catch (err) {
    throw new VunifyError('IO', `cannot write the metrics: ${oneLine(err)}`, file);
  }
}

// The CLI's run, from the action that starts it to the exit code main() returns.
let pending: { file: string; command: string; result?: RunMetrics['result'] } | null = null;

/** Called first by a command's action: metrics will be written for this run (whatever its end). */
export function measure(file: string | undefined, command: string): void {
  if (file) pending = { file, command };
}

/** The run's result, kept for the metrics; returned unchanged. */
export function measured<T extends NonNullable<RunMetrics['result']>>(result: T): T {
  if (pending) pending.result = result;
  return result;
}

/** Writes the pending metrics with the run's exit code; a file that cannot be written is one line and at least exit 1. */
export function writePending(exitCode: number): number {
  if (!pending) return exitCode;
  const started = performance.timeOrigin;
  try {
    writeMetrics(pending.file, { command: pending.command, startedMs: started, durationMs: Date.now() - started, exitCode, result: pending.result });
    return exitCode;
  } catch (err) {
    process.stderr.write(`vunify: error: ${oneLine(err)}\n`);
    return Math.max(exitCode, 1);
  } finally {
    pending = null;
  }
}
