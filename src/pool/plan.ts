// Pool planning (pure): which server files that the reference cannot share go to the pool.
// A file goes when at least two servers hold its content with the same metadata, or when
// the pool holds an entry for it already. It reads no file: apply compares the bytes.
import type { RelPath } from '../fsx/rootdir.js';
import type { Decision, FileRecord, ScanEntry, SkipReason } from '../model.js';
import { entryName } from './names.js';

/** Skips that mean the reference has no copy to share: the pool may share one instead. */
export const POOLABLE: ReadonlySet<SkipReason> = new Set<SkipReason>(['notInReference', 'contentDiffers', 'metadataDiffers', 'missing']);

export interface PoolMember { skip: Extract<Decision, { kind: 'skip' }>; srv: FileRecord }
export interface PoolGroup {
  /** The entry's name in the pool (entryName). */
  name: RelPath;
  members: PoolMember[];
  /** The pool's entry as it is now, when it exists. */
  existing?: FileRecord;
}

export type PoolDecision = Extract<Decision, { kind: 'link' | 'already' }> & { pool: true };

/**
 * Groups the poolable skips by content and metadata. entriesOf gives a server's scanned
 * files; existing says what the pool holds under a name (an lstat, done by the caller).
 */
export function planPool(
  decisions: Decision[],
  entriesOf: (server: string) => Map<RelPath, ScanEntry> | undefined,
  existing: (name: RelPath) => FileRecord | undefined,
  dev: string,
): PoolGroup[] {
  const groups = new Map<RelPath, PoolMember[]>();
  for (const d of decisions) {
    if (d.kind !== 'skip' || !POOLABLE.has(d.reason)) continue;
    const e = entriesOf(d.server)?.get(d.path);
    if (e?.kind !== 'file' || e.rec.size === 0 || e.rec.hash === '' || e.rec.dev !== dev) continue;
    const name = entryName(e.rec.hash, e.rec);
    const l = groups.get(name);
    if (l) l.push({ skip: d, srv: e.rec });
    else groups.set(name, [{ skip: d, srv: e.rec }]);
  }
  const out: PoolGroup[] = [];
  for (const [name, members] of groups) {
    const have = existing(name);
    if (!have && new Set(members.map((m) => m.skip.server)).size < 2) continue;
    out.push(have ? { name, members, existing: have } : { name, members });
  }
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The decisions for a group once its entry exists: members on its inode are already pooled. */
export function poolDecisions(g: PoolGroup, entry: FileRecord): PoolDecision[] {
  return g.members.map(({ skip: s, srv }) => ({
    server: s.server, path: s.path, pkg: s.pkg,
    kind: srv.dev === entry.dev && srv.ino === entry.ino ? 'already' as const : 'link' as const,
    refPath: g.name, ref: entry, srv, pool: true as const,
  }));
}

/** Sizes of server files a pool could pair: held by two servers or more (their hashes are needed). */
export function pairedSizes(perServer: Iterable<Iterable<number>>): Set<number> {
  const once = new Set<number>();
  const twice = new Set<number>();
  for (const sizes of perServer) {
    for (const s of new Set(sizes)) (once.has(s) ? twice : once).add(s);
  }
  return twice;
}
