// The planner: a pure function from scanned data to decisions. It reads no file and
// changes nothing; apply.ts carries out its 'link' decisions after checking the disk
// again, byte for byte.
import type { RelPath } from './fsx/rootdir.js';
import type { ScanEntry } from './scan.js';
import type { FileRecord } from './store/index-db.js';

export const SKIP_REASONS = [
  'config', // a %config file or dpkg conffile: private by design
  'packageMissing', // the package is not installed in the server
  'notInPackage', // the server's package does not list this file
  'missing', // no such file (in the server or the reference)
  'notRegular', // a symlink, folder, device...
  'symlinkInPath', // a folder on the way is a symlink: never followed
  'empty', // nothing to save
  'otherFilesystem', // not on the reference's filesystem (a mount inside a root)
  'contentDiffers',
  'metadataDiffers', // mode, owner, mtime or extended attributes
  'immutable', // immutable before vunify came: left as it is
  'changed', // changed between comparison and link: left untouched
  'error',
] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

export interface Owned { pkg: string; config: boolean }

export interface PlanRoot {
  name: string;
  root: string;
  entries: Map<RelPath, ScanEntry>;
  /** Files that the root's packages list, by path. */
  owned: Map<RelPath, Owned>;
  /** Names of installed packages. */
  installed: Set<string>;
}

export interface PlanInput {
  reference: PlanRoot;
  servers: PlanRoot[];
}

interface Base { server: string; path: RelPath; pkg: string }
export type Decision =
  | (Base & { kind: 'link'; ref: FileRecord; srv: FileRecord })
  | (Base & { kind: 'already'; ref: FileRecord; srv: FileRecord })
  | (Base & { kind: 'skip'; reason: SkipReason; detail?: string; size?: number });

/** Names of the metadata fields in which two files differ. */
export function metadataDiff(a: FileRecord, b: FileRecord): string[] {
  const out: string[] = [];
  if (a.mode !== b.mode) out.push('mode');
  if (a.uid !== b.uid) out.push('uid');
  if (a.gid !== b.gid) out.push('gid');
  if (a.mtimeNs !== b.mtimeNs) out.push('mtime');
  if (a.xattrs !== b.xattrs) out.push('xattrs');
  return out;
}

function skipOfEntry(e: ScanEntry | undefined): { reason: SkipReason; detail?: string } | null {
  if (!e) return { reason: 'missing' };
  if (e.kind === 'file') return null;
  return { reason: e.kind, detail: e.detail };
}

/** Decides, for every whitelisted path of the reference and every server, what to do. */
export function plan(input: PlanInput): Decision[] {
  const { reference: ref, servers } = input;
  const out: Decision[] = [];
  const paths = [...ref.owned.keys()].sort();
  for (const server of servers) {
    for (const path of paths) {
      const own = ref.owned.get(path)!;
      const base = { server: server.name, path, pkg: own.pkg };
      const skip = (reason: SkipReason, detail?: string, size?: number) =>
        out.push({ ...base, kind: 'skip', reason, detail, size });
      if (own.config) { skip('config'); continue; }
      if (!server.installed.has(own.pkg)) { skip('packageMissing'); continue; }
      const srvOwn = server.owned.get(path);
      if (!srvOwn || srvOwn.pkg !== own.pkg) { skip('notInPackage'); continue; }
      if (srvOwn.config) { skip('config'); continue; }
      const refSkip = skipOfEntry(ref.entries.get(path));
      if (refSkip) { skip(refSkip.reason, `reference: ${refSkip.detail ?? refSkip.reason}`); continue; }
      const srvEntry = server.entries.get(path);
      const srvSkip = skipOfEntry(srvEntry);
      if (srvSkip) { skip(srvSkip.reason, srvSkip.detail); continue; }
      const r = (ref.entries.get(path) as { rec: FileRecord }).rec;
      const s = (srvEntry as { rec: FileRecord }).rec;
      if (r.dev !== s.dev) { skip('otherFilesystem'); continue; }
      if (r.ino === s.ino) { out.push({ ...base, kind: 'already', ref: r, srv: s }); continue; }
      if (s.size === 0 && r.size === 0) { skip('empty'); continue; }
      if (r.size !== s.size || r.hash !== s.hash) { skip('contentDiffers', undefined, s.size); continue; }
      const diff = metadataDiff(r, s);
      if (diff.length) { skip('metadataDiffers', diff.join(','), s.size); continue; }
      out.push({ ...base, kind: 'link', ref: r, srv: s });
    }
  }
  return out;
}

/** Link decisions grouped by the reference inode they share (one immutable flag each). */
export function groupByRefInode(decisions: Decision[]): Map<string, Decision[]> {
  const groups = new Map<string, Decision[]>();
  for (const d of decisions) {
    if (d.kind !== 'link' && d.kind !== 'already') continue;
    const key = `${d.ref.dev}:${d.ref.ino}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = []));
    g.push(d);
  }
  return groups;
}
