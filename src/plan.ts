// The planner: a pure function from scanned data to decisions. It reads no file and
// changes nothing; apply.ts carries out its 'link' decisions after checking the disk
// again, byte for byte.
import type { RelPath } from './fsx/rootdir.js';
import type { Decision, FileRecord, PlanInput, ScanEntry, SkipReason } from './model.js';

// The planner's types live in model.ts; they are exported here too, where they were first.
export { SKIP_REASONS } from './model.js';
export type { Decision, Owned, PlanInput, PlanRoot, SkipReason } from './model.js';

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

/** metadataDiff(a, b) is empty: without building the list (a per-file test of the hash stage). */
export const sameMetadata = (a: FileRecord, b: FileRecord): boolean =>
  a.mode === b.mode && a.uid === b.uid && a.gid === b.gid && a.mtimeNs === b.mtimeNs && a.xattrs === b.xattrs;

const fileOf = (e: ScanEntry | undefined): FileRecord | null => (e?.kind === 'file' ? e.rec : null);

/**
 * Decides, for every candidate file of every server, what to do: link it to the reference's
 * copy at the same path, or else to a reference file elsewhere with the same content and
 * metadata; or say why not.
 */
export function plan(input: PlanInput): Decision[] {
  const { reference: ref, servers } = input;
  const out: Decision[] = [];
  const refPaths = [...(input.refPaths ?? ref.owned.keys())].sort();
  const refCandidate = (p: RelPath) => {
    const o = ref.owned.get(p);
    return o !== undefined && !o.config ? fileOf(ref.entries.get(p)) : null;
  };
  for (const server of servers) {
    // Files of reference packages the server does not have at all.
    for (const p of input.tree ? [] : refPaths) {
      const own = ref.owned.get(p)!;
      if (!own.config && !server.installed.has(own.pkg) && ref.entries.get(p)?.kind !== 'folder') {
        out.push({ server: server.name, path: p, pkg: own.pkg, kind: 'skip', reason: 'packageMissing', detail: undefined, size: undefined });
      }
    }
    for (const path of [...server.owned.keys()].sort()) {
      const own = server.owned.get(path)!;
      // Literals with every field in one order, not spreads of a shared base: V8 gave each
      // spread object a hidden class of its own (86,000 of them for 100,000 files: 30 MB).
      const name = server.name;
      const pkg = own.pkg;
      const skip = (reason: SkipReason, detail?: string, size?: number) =>
        out.push({ server: name, path, pkg, kind: 'skip', reason, detail, size });
      const keep = (kind: 'link' | 'already', refPath: RelPath, ref: FileRecord, srv: FileRecord) =>
        out.push({ server: name, path, pkg, kind, refPath, ref, srv });
      if (own.config || ref.owned.get(path)?.config) { skip('config'); continue; }
      const entry = server.entries.get(path);
      if (entry?.kind === 'folder') continue;
      if (!entry || entry.kind !== 'file') { skip(entry?.kind ?? 'missing', entry && 'detail' in entry ? entry.detail : undefined); continue; }
      const s = entry.rec;
      if (s.size === 0) { skip('empty'); continue; }
      // The same path first; then the reference's other files with this content.
      const same = refCandidate(path);
      if (same && same.dev === s.dev && same.ino === s.ino) {
        keep('already', path, same, s); // the common case of a rescan
        continue;
      }
      const holders = s.hash ? input.refByHash?.get(s.hash) : undefined;
      const others = holders ? holders.filter((p) => p !== path).sort() : [];
      const tries = same ? [path, ...others] : others;
      // Already sharing an inode with any of them wins over a new link.
      const shared = tries.find((p) => { const r = refCandidate(p); return r && r.dev === s.dev && r.ino === s.ino; });
      if (shared !== undefined) { keep('already', shared, refCandidate(shared)!, s); continue; }
      let why: { reason: SkipReason; detail?: string } | null = null;
      let done = false;
      for (const refPath of tries) {
        const r = refCandidate(refPath);
        if (!r) continue;
        if (r.dev !== s.dev) { why ??= { reason: 'otherFilesystem' }; continue; }
        // A hash not read yet ('') is no verdict: apply compares the bytes before linking.
        if (r.size !== s.size || (r.hash !== '' && s.hash !== '' && r.hash !== s.hash)) { why ??= { reason: 'contentDiffers' }; continue; }
        const diff = input.method === 'reflink' ? [] : metadataDiff(r, s);
        if (diff.length) { why ??= { reason: 'metadataDiffers', detail: diff.join(',') }; continue; }
        keep('link', refPath, r, s);
        done = true;
        break;
      }
      if (done) continue;
      if (why) { skip(why.reason, why.detail, s.size); continue; }
      const refEntry = ref.entries.get(path);
      if (ref.owned.has(path) && refEntry && refEntry.kind !== 'file') {
        skip(refEntry.kind === 'folder' ? 'notRegular' : refEntry.kind, `reference: ${'detail' in refEntry && refEntry.detail ? refEntry.detail : refEntry.kind}`, s.size);
      } else {
        skip(ref.owned.has(path) ? 'missing' : 'notInReference', ref.owned.has(path) ? 'reference: missing' : undefined, s.size);
      }
    }
  }
  return out;
}

