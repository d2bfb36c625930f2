// `vunify status`: what the index holds, from the index alone (the farm is not touched, no
// lock is taken: LMDB readers never block nor see a half-written transaction).
import path from 'node:path';
import { TREE_PKG } from './prepare.js';
import { NO_INDEX_YET, withExistingIndex } from './store/existing.js';
import { humanBytes } from './report.js';
import { Index, SCHEMA_VERSION } from './store/index-db.js';
import { formatTable } from './table.js';
import { INODE_WORDS, readQuick } from './store/quick-file.js';
import { poolSummary, type PoolSummary } from './pool/store.js';

export interface StatusReport {
  command: 'status';
  index: string;
  /** Schema version of the index (an index of another version is refused). */
  schema: number;
  /** Size of the index's data file (data.mdb) on disk. */
  indexBytes: number;
  /** Every root the index has seen, in path order. */
  roots: Array<{ name: string; root: string; role?: 'reference' | 'server' | 'pool'; lastScanAt?: string; lastScanMs?: number; files: number }>;
  /** Every root that has links vunify made, in path order (an array: two roots may share a name). */
  servers: Array<{ name: string; root: string; linkedFiles: number; bytesSaved: number }>;
  totals: {
    linkedFiles: number;
    /** Sum of the sizes of the copies vunify replaced with links. */
    bytesSaved: number;
    /** Distinct inodes the links share. */
    sharedInodes: number;
    /** Inodes vunify made immutable (its inodes table). */
    immutableInodes: number;
    /** Distinct packages of the linked files (tree mode's `-` and unknown ones not counted). */
    packages: number;
  };
  packages: string[];
  /** Changes a killed run left under way (`vunify recover` finishes them). */
  unfinished: number;
  /**
   * The quick-rescan file (INDEX.quick), if any: when the complete unify that wrote it ran,
   * its roots, and how many folders and inodes a quick rescan checks.
   */
  quick: { since: string; roots: string[]; folders: number; inodes: number } | null;
  /** --pool runs: each pool's entries and size (read from the pool folder), and the server files linked to it. */
  pools: PoolSummary[];
}

export async function status(opts: { db?: string } = {}): Promise<StatusReport> {
  return withExistingIndex(opts.db, { lock: false, missing: NO_INDEX_YET }, async (index, dbPath) => {
    const roots = index.allRoots();
    const nameOf = new Map(roots.map((r) => [r.root, r.rec.name]));
    const report: StatusReport = {
      command: 'status', index: dbPath, schema: SCHEMA_VERSION, indexBytes: Index.fileSize(dbPath),
      roots: [], servers: [],
      totals: { linkedFiles: 0, bytesSaved: 0, sharedInodes: 0, immutableInodes: 0, packages: 0 },
      packages: [], unfinished: index.journalEntries().length, quick: null, pools: [],
    };
    const q = readQuick(dbPath);
    if (q) {
      report.quick = {
        since: q.header.createdAt, roots: q.header.roots.map((r) => r.path),
        folders: q.header.roots.reduce((a, r) => a + r.folders.length, 0), inodes: q.inodes.length / INODE_WORDS,
      };
    }
    for (const { root, rec } of roots) {
      let files = 0;
      for (const _ of index.filesOf(root)) files++;
      report.roots.push({ name: rec.name, root, role: rec.lastRole, lastScanAt: rec.lastScanAt, lastScanMs: rec.lastScanMs, files });
    }
    const servers = new Map<string, StatusReport['servers'][number]>();
    const inodes = new Set<string>();
    const packages = new Set<string>();
    for (const l of index.allLinks()) {
      let s = servers.get(l.root);
      if (!s) servers.set(l.root, s = { name: nameOf.get(l.root) ?? path.basename(l.root), root: l.root, linkedFiles: 0, bytesSaved: 0 });
      s.linkedFiles++;
      s.bytesSaved += l.rec.size ?? 0;
      inodes.add(`${l.rec.dev}:${l.rec.ino}`);
      if (l.rec.pkg && l.rec.pkg !== TREE_PKG) packages.add(l.rec.pkg);
    }
    report.servers = [...servers.values()];
    for (const { root, rec } of roots) if (rec.lastRole === 'pool') report.pools.push(await poolSummary(root, index));
    for (const s of report.servers) {
      report.totals.linkedFiles += s.linkedFiles;
      report.totals.bytesSaved += s.bytesSaved;
    }
    report.totals.sharedInodes = inodes.size;
    for (const _ of index.allInodes()) report.totals.immutableInodes++;
    report.packages = [...packages].sort();
    report.totals.packages = packages.size;
    return report;
  });
}

/** Aligned text tables: the roots, then the links per server, then one line of totals. */
export function formatStatus(r: StatusReport): string {
  const out: string[] = [`vunify status of ${r.index} (schema ${r.schema}, ${humanBytes(r.indexBytes)} on disk)`, ''];
  if (r.roots.length === 0) out.push('no root scanned yet\n');
  else {
    out.push(formatTable(['root', 'path', 'role', 'files', 'last scan', 'took'],
      r.roots.map((x) => [x.name, x.root, x.role ?? '', String(x.files), x.lastScanAt ?? 'never', x.lastScanMs !== undefined ? `${x.lastScanMs} ms` : ''])));
  }
  const t = r.totals;
  if (r.servers.length > 0) {
    out.push(formatTable(['server', 'linked', 'saved'], [
      ...r.servers.map((s) => [s.name, String(s.linkedFiles), humanBytes(s.bytesSaved)]),
      ['total', String(t.linkedFiles), humanBytes(t.bytesSaved)],
    ]));
  }
  out.push(`${t.linkedFiles} linked file(s) in ${r.servers.length} server(s), sharing ${t.sharedInodes} inode(s) (${t.immutableInodes} made immutable), ` +
    `${humanBytes(t.bytesSaved)} saved, from ${t.packages} package(s)`);
  for (const p of r.pools) {
    out.push(`pool ${p.dir}: ${p.entries} entr${p.entries === 1 ? 'y' : 'ies'}, ${humanBytes(p.disk)} on disk, ${p.linkedFiles} server file(s) linked to it${p.missing ? ' (the folder is gone)' : ''}`);
  }
  out.push(r.quick
    ? `quick rescan: ready for the ${r.quick.roots.length} roots of the complete unify of ${r.quick.since} (${r.quick.folders} folders, ${r.quick.inodes} inodes to check)`
    : 'quick rescan: none (the next unify scans in full)');
  if (r.unfinished > 0) out.push(`note: ${r.unfinished} change(s) a killed run left under way; run vunify recover`);
  return out.join('\n') + '\n';
}
