// `vunify report`: savings so far and still possible, from the index alone (the farm is
// not touched). "Possible" means a server file with the same content and metadata as a
// file of the reference, on its filesystem, not yet sharing its inode, as last scanned.
import { NO_INDEX_YET, withExistingIndex } from './store/existing.js';
import { display } from './fsx/rootdir.js';
import { humanBytes } from './report.js';
import { toCsv, visible } from './table.js';
import type { FileRecord } from './store/index-db.js';
import { poolSummary, type PoolSummary } from './pool/store.js';

export interface Savings { linkedFiles: number; bytesSaved: number; possibleFiles: number; possibleBytes: number }
export interface IndexReport {
  command: 'report';
  index: string;
  reference: string | null;
  roots: Array<{ name: string; root: string; role?: string; lastScanAt?: string; lastScanMs?: number; files: number; bytes: number }>;
  servers: Record<string, Savings>;
  packages: Record<string, Savings>;
  largest: Array<{ hash: string; size: number; copies: number; bytes: number; example: string; pkg?: string }>;
  totals: Savings;
  /** --pool runs: each pool's entries and size, and the server files linked to it (counted in linked/saved too). */
  pools: PoolSummary[];
}

const zero = (): Savings => ({ linkedFiles: 0, bytesSaved: 0, possibleFiles: 0, possibleBytes: 0 });
const metaKey = (r: FileRecord) => `${r.hash}|${r.size}|${r.mode}|${r.uid}|${r.gid}|${r.mtimeNs}|${r.xattrs}|${r.dev}`;

export async function indexReport(opts: { db?: string; top?: number }): Promise<IndexReport> {
  return withExistingIndex(opts.db, { lock: false, missing: NO_INDEX_YET }, async (index, dbPath) => {
    const roots = index.allRoots();
    const refs = roots.filter((r) => r.rec.lastRole === 'reference').sort((a, b) => String(b.rec.lastScanAt).localeCompare(String(a.rec.lastScanAt)));
    const ref = refs[0]?.root ?? null;
    const nameOf = new Map(roots.map((r) => [r.root, r.rec.name]));
    const refFiles = new Map<string, string>(); // metaKey -> ino
    if (ref) for (const f of index.filesOf(ref)) refFiles.set(metaKey(f.rec), f.rec.ino);
    const report: IndexReport = {
      command: 'report', index: dbPath, reference: ref ? nameOf.get(ref)! : null,
      roots: [], servers: {}, packages: {}, largest: [], totals: zero(), pools: [],
    };
    const pkgOf = (p?: string) => (report.packages[p ?? '(unknown)'] ??= zero());
    const wins = new Map<string, { size: number; copies: number; example: string; pkg?: string }>();
    for (const { root, rec } of roots) {
      let files = 0;
      let bytes = 0;
      if (rec.lastRole === 'pool') {
        report.pools.push(await poolSummary(root, index));
        continue;
      }
      const sv = root === ref ? null : (report.servers[rec.name] = zero());
      for (const f of index.filesOf(root)) {
        files++;
        bytes += f.rec.size;
        if (!sv || f.rec.size === 0) continue;
        const refIno = refFiles.get(metaKey(f.rec));
        if (refIno === undefined || refIno === f.rec.ino) continue;
        sv.possibleFiles++;
        sv.possibleBytes += f.rec.size;
        const pk = pkgOf(f.rec.pkg);
        pk.possibleFiles++;
        pk.possibleBytes += f.rec.size;
        const w = wins.get(f.rec.hash) ?? { size: f.rec.size, copies: 0, example: `${rec.name}:/${display(f.path)}`, pkg: f.rec.pkg };
        w.copies++;
        wins.set(f.rec.hash, w);
      }
      report.roots.push({ name: rec.name, root, role: rec.lastRole, lastScanAt: rec.lastScanAt, lastScanMs: rec.lastScanMs, files, bytes });
      if (sv) {
        for (const l of index.allLinks(root)) {
          sv.linkedFiles++;
          sv.bytesSaved += l.rec.size ?? 0;
          const pk = pkgOf(l.rec.pkg);
          pk.linkedFiles++;
          pk.bytesSaved += l.rec.size ?? 0;
        }
      }
    }
    for (const s of Object.values(report.servers)) {
      for (const k of Object.keys(s) as Array<keyof Savings>) report.totals[k] += s[k];
    }
    report.largest = [...wins].map(([hash, w]) => ({ hash, ...w, bytes: w.size * w.copies }))
      .sort((a, b) => b.bytes - a.bytes).slice(0, opts.top ?? 10);
    return report;
  });
}

export function formatIndexReport(r: IndexReport): string {
  const out: string[] = [];
  const table = (head: string[], rows: string[][]) => {
    const w = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i].length)));
    for (const row of [head, ...rows]) out.push(row.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  '));
  };
  out.push(`vunify report from ${r.index} (reference: ${r.reference ?? 'none yet'})`);
  const savingsRow = (name: string, s: Savings) => [name, String(s.linkedFiles), humanBytes(s.bytesSaved), String(s.possibleFiles), humanBytes(s.possibleBytes)];
  out.push('', 'per server');
  table(['server', 'linked', 'saved', 'possible', 'possible saving'],
    [...Object.entries(r.servers).map(([n, s]) => savingsRow(n, s)), savingsRow('total', r.totals)]);
  out.push('', 'per package');
  table(['package', 'linked', 'saved', 'possible', 'possible saving'],
    Object.entries(r.packages).sort((a, b) => b[1].bytesSaved + b[1].possibleBytes - a[1].bytesSaved - a[1].possibleBytes).map(([n, s]) => savingsRow(n, s)));
  if (r.largest.length) {
    out.push('', 'largest possible wins');
    table(['file', 'size', 'copies', 'saving'], r.largest.map((w) => [visible(w.example), humanBytes(w.size), String(w.copies), humanBytes(w.bytes)]));
  }
  for (const p of r.pools) {
    out.push('', `pool ${visible(p.dir)}: ${p.entries} entr${p.entries === 1 ? 'y' : 'ies'}, ${humanBytes(p.disk)} on disk, ${p.linkedFiles} server file(s) linked to it${p.missing ? ' (the folder is gone)' : ''}`);
  }
  out.push('', 'roots');
  table(['root', 'role', 'files', 'size', 'last scan', 'took'],
    r.roots.map((x) => [x.name, x.role ?? '', String(x.files), humanBytes(x.bytes), x.lastScanAt ?? 'never', x.lastScanMs !== undefined ? `${x.lastScanMs} ms` : '']));
  return out.join('\n') + '\n';
}

/** CSV of the index report: one row per server, per package and per largest win. */
export function indexReportCsv(r: IndexReport): string {
  const rows: (string | number)[][] = [];
  for (const [n, s] of Object.entries(r.servers)) rows.push(['server', n, s.linkedFiles, s.bytesSaved, s.possibleFiles, s.possibleBytes, '']);
  for (const [n, s] of Object.entries(r.packages)) rows.push(['package', n, s.linkedFiles, s.bytesSaved, s.possibleFiles, s.possibleBytes, '']);
  for (const w of r.largest) rows.push(['win', w.example, 0, 0, w.copies, w.bytes, w.size]);
  rows.push(['total', '', r.totals.linkedFiles, r.totals.bytesSaved, r.totals.possibleFiles, r.totals.possibleBytes, '']);
  return toCsv(['kind', 'name', 'linkedFiles', 'bytesSaved', 'possibleFiles', 'possibleBytes', 'size'], rows);
}
