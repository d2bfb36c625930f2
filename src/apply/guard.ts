// The guard around a shared inode's links: a read lease holds writers off, and an open that
// was held off (or got through) means every name of the inode gets a private copy back.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { isErrno, oneLine } from '../errors.js';
import { copyFd, hashFd } from '../fsx/content.js';
import { RootDir, lstatIn, splitRel, type OpenedFile, type RelPath } from '../fsx/rootdir.js';
import { FS_IMMUTABLE_FL, leaseIntact, readXattrs, setImmutable, syncFilesystem, takeReadLease } from '../fsx/sys.js';
import type { Decision } from '../plan.js';
import type { FileRecord, JournalEntry } from '../store/index-db.js';
import {
  type ApplyContext, type Group, type GroupState, KEPT_FLAGS, type Metadata, O_CREAT, O_EXCL, O_NOFOLLOW,
  type Outcome, at, dropTmp, flagsOf, sameXattrs, setMetadata, skip, tmpName,
} from './common.js';

/**
 * Takes a read lease on the reference before its first link: from then on no process can
 * open the inode for writing, under any name, until the attribute is on and the fd closed.
 * Refused while someone holds it open for writing (its tenant, say). The reference must be
 * as compared: its ctime moves with any change since.
 */
export function holdOff(fd: number, state: GroupState): Outcome | null {
  try {
    takeReadLease(fd);
  } catch (err) {
    if (isErrno(err, 'EAGAIN')) return skip('inUse', 'the reference file is open for writing: left private until it is closed');
    return skip('error', `cannot lease the reference file: ${oneLine(err)}`);
  }
  const now = fs.fstatSync(fd, { bigint: true });
  const was = state.refStat;
  if (now.ctimeNs !== was.ctimeNs || now.size !== was.size || now.mtimeNs !== was.mtimeNs) {
    return skip('changed', 'the reference changed after it was compared');
  }
  return null;
}

/**
 * After the attribute: a broken lease means someone tried to open the shared inode for
 * writing while its links were made (held off until now, when the attribute refuses it).
 * Metadata calls (chmod, chown, setxattr, utimes) are not held off by a lease: any change
 * to the shared inode since the comparison is put back and reported.
 */
export function heldOffCheck(fd: number, state: GroupState, ctx: ApplyContext, refPath: RelPath, servers: string[]): boolean {
  const where = servers.length ? `while it was being shared with ${servers.join(', ')}` : 'while it was being shared';
  const was = state.refStat;
  for (let attempt = 0; attempt < 3; attempt++) {
    const now = fs.fstatSync(fd, { bigint: true });
    const xattrs = readXattrs(fd);
    const same = now.mode === was.mode && now.uid === was.uid && now.gid === was.gid && now.size === was.size &&
      now.mtimeNs === was.mtimeNs && sameXattrs(xattrs, state.refXattrs);
    if (same) break;
    if (now.size !== was.size) {
      ctx.problems.push({ root: ctx.refRoot, path: refPath, reason: `its size changed ${where}` });
      break;
    }
    const lifted = setImmutable(fd, false);
    try {
      setMetadata(fd, { uid: Number(was.uid), gid: Number(was.gid), mode: Number(was.mode), xattrs: state.refXattrs, atimeNs: now.atimeNs, mtimeNs: was.mtimeNs });
    } finally {
      if (lifted) setImmutable(fd, true);
    }
    if (attempt === 0) ctx.problems.push({ root: ctx.refRoot, path: refPath, reason: `its metadata was changed ${where}; put back` });
  }
  // Read last: an open may also come while the attribute was lifted to put metadata back.
  const attempted = writeAttempted(fd);
  if (attempted) ctx.problems.push({ root: ctx.refRoot, path: refPath, reason: `opened for writing ${where}; held off, and every name of it given a private copy again` });
  return attempted;
}

/**
 * True when someone tried to open the leased inode for writing (the lease is breaking or
 * gone), or already holds it open for writing: a second read lease on a fresh descriptor
 * is refused (EAGAIN) while any writer has it open.
 */
export function writeAttempted(fd: number): boolean {
  try {
    if (!leaseIntact(fd)) return true;
    const probe = fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_RDONLY | fs.constants.O_NOATIME);
    try {
      takeReadLease(probe);
    } catch (err) {
      return true;
    } finally {
      fs.closeSync(probe);
    }
    return false;
  } catch {
    return true;
  }
}

/**
 * Gives each name (that still names fd's inode) a private copy of the inode's content and
 * metadata: journaled as undo copies are, through a temporary name and rename. The inode's
 * attribute is lifted for the renames and put back while any name is left. Returns which
 * names got their copy.
 */
export async function privateCopies(fd: number, given: Array<{ root: string; path: RelPath; atimeNs?: bigint }>, ctx: ApplyContext, hash = ''): Promise<boolean[]> {
  const st = fs.fstatSync(fd, { bigint: true });
  // Every name the index knows for the inode, in any root: a root outside this run shares
  // the inode the held-off opener will write to just as much.
  const names = [...given];
  const seen = new Set(names.map((n) => `${n.root}\0${n.path}`));
  for (const h of hash ? ctx.index.holders(hash) : []) {
    const rec = ctx.index.getFile(h.root, h.path);
    if (rec && rec.dev === String(st.dev) && rec.ino === String(st.ino) && !seen.has(`${h.root}\0${h.path}`)) {
      seen.add(`${h.root}\0${h.path}`);
      names.push(h);
    }
  }
  const opened = new Map<string, RootDir>();
  const rootOf = async (root: string) => ctx.roots.get(root) ?? opened.get(root) ?? opened.set(root, await RootDir.open(root)).get(root)!;
  const flags = flagsOf(fd);
  const want: Metadata = {
    uid: Number(st.uid), gid: Number(st.gid), mode: Number(st.mode), xattrs: readXattrs(fd), flags: flags & KEPT_FLAGS, atimeNs: st.atimeNs, mtimeNs: st.mtimeNs,
  };
  const journal: Array<Extract<JournalEntry, { op: 'undo' }>> = names.map((n) => ({ op: 'undo', root: n.root, path: n.path, tmp: tmpName(), dev: String(st.dev), ino: String(st.ino) }));
  await ctx.index.journalAdd(journal);
  const made = names.map(() => false);
  const ready = names.map(() => false);
  const stuck = new Set<string>();
  // 1. every copy, while the attribute is still on: a lease the kernel times out (after
  // lease-break-time) lets an opener write; a copy whose bytes are not the known content is not used.
  for (let i = 0; i < names.length; i++) {
    const n = names[i];
    const tmp = journal[i].tmp;
    const { dir, name } = splitRel(n.path);
    try {
      await (await rootOf(n.root)).withDir(dir, async (dfd) => {
        const cur = lstatIn(dfd, name);
        if (!cur || cur.ino !== st.ino) return; // no longer this inode's name
        const out = await fsp.open(at(dfd, tmp), fs.constants.O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600); // read back for the hash
        try {
          await copyFd(fd, out.fd);
          setMetadata(out.fd, { ...want, atimeNs: n.atimeNs ?? st.atimeNs });
          await out.sync();
          if (hash && (await hashFd(out.fd)).hash !== hash) throw new Error('the shared content changed before it could be copied');
          ready[i] = true;
        } finally {
          await out.close();
        }
      });
    } catch (err) {
      ctx.problems.push({ root: n.root, path: n.path, reason: `cannot give it a private copy again: ${oneLine(err)}` });
    }
  }
  // 2. the renames, back to back, with the attribute lifted only for them
  if (flags & FS_IMMUTABLE_FL) setImmutable(fd, false);
  try {
    for (let i = 0; i < names.length; i++) {
      const n = names[i];
      const tmp = journal[i].tmp;
      const { dir, name } = splitRel(n.path);
      await (await rootOf(n.root)).withDir(dir, async (dfd) => {
        try {
          if (ready[i]) {
            fs.renameSync(at(dfd, tmp), at(dfd, name));
            made[i] = true;
          }
        } catch (err) {
          ctx.problems.push({ root: n.root, path: n.path, reason: `cannot give it a private copy again: ${oneLine(err)}` });
        } finally {
          if (!made[i] && !(await dropTmp(dfd, tmp))) stuck.add(tmp);
        }
      }).catch((err) => ctx.problems.push({ root: n.root, path: n.path, reason: oneLine(err) }));
    }
  } finally {
    const left = fs.fstatSync(fd, { bigint: true }).nlink;
    if (left > 0n && (flags & FS_IMMUTABLE_FL)) setImmutable(fd, true);
    if (left > 0n) ctx.problems.push({ root: names[0].root, path: names[0].path, reason: `${left} name(s) outside this run still share the inode` });
  }
  for (const d of opened.values()) await d.close();
  syncFilesystem(ctx.roots.get(ctx.refRoot)!.rootFd);
  for (const t of stuck) ctx.stuckTmps?.add(t);
  await ctx.index.journalDone(journal.filter((e) => !stuck.has(e.tmp)));
  return made;
}

/**
 * An open for writing that the lease held off goes on once the lease is dropped, with a
 * descriptor on the shared inode: ext4 refuses its writes once the attribute is on, XFS and
 * btrfs do not. So every name of the inode in this run's roots gets a private copy (the
 * compared content and metadata, journaled as undo copies are) while the lease still holds,
 * and that descriptor is left on an inode no root names.
 */
export async function evictGroup(
  g: Group, ref: OpenedFile, state: GroupState, ctx: ApplyContext, outcomes: Map<Decision, Outcome>,
  updates: Array<[string, RelPath, FileRecord | null]>,
): Promise<void> {
  const was = state.refStat;
  const names: Array<{ root: string; path: RelPath; atimeNs: bigint; d?: Decision }> = [{ root: ctx.refRoot, path: g[0].refPath, atimeNs: was.atimeNs }];
  for (const d of g) {
    if (d.kind === 'already' || outcomes.get(d)?.kind === 'unified') {
      const v = state.verified.find((x) => x.d === d);
      names.push({ root: ctx.serverRoots.get(d.server)!, path: d.path, atimeNs: v ? BigInt(v.rec.atimeNs) : was.atimeNs, d });
    }
  }
  await evictNames(ref.fd, names, state.refHash, ctx, outcomes, updates);
}

/** privateCopies for an inode's names, and what it means for their decisions and records. */
export async function evictNames(
  fd: number, names: Array<{ root: string; path: RelPath; atimeNs?: bigint; d?: Decision }>, hash: string, ctx: ApplyContext,
  outcomes: Map<Decision, Outcome>, updates: Array<[string, RelPath, FileRecord | null]>,
): Promise<void> {
  const made = await privateCopies(fd, names, ctx, hash);
  for (let i = 0; i < names.length; i++) {
    const n = names[i];
    if (n.d && made[i]) {
      if (n.d.kind === 'link') outcomes.set(n.d, skip('inUse', 'opened for writing while being linked; left private'));
      await ctx.index.removeLink(n.root, n.path);
    }
    updates.push([n.root, n.path, null]); // the next scan reads it again
  }
  const st = fs.fstatSync(fd, { bigint: true });
  if (st.nlink === 0n) await ctx.index.removeInode(String(st.dev), String(st.ino));
}

