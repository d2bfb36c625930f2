// Undo: each shared file gets a private copy with its recorded metadata, under the same
// lease as linking; the attribute goes only with the last shared name.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import pLimit from 'p-limit';
import { isErrno, oneLine } from '../errors.js';
import { copyFd } from '../fsx/content.js';
import { openFileAtSync, splitRel, type OpenedFile, type RelPath } from '../fsx/rootdir.js';
import { isImmutable, readXattrs, setImmutable, takeReadLease, type Xattrs } from '../fsx/sys.js';
import { recordOf } from '../scan.js';
import { beforeUndo, faultPoint } from '../fault.js';
import { phaseCounter } from '../progress.js';
import type { FileRecord, JournalEntry } from '../store/index-db.js';
import {
  type ApplyContext, KEPT_FLAGS, O_CREAT, O_EXCL, O_NOFOLLOW, O_WRONLY, type Outcome, at, dropTmp, flagsOf,
  fstat, fsyncFd, refreshInode, rememberDirTimes, setMetadata, skip, skipFor, tmpName,
} from './common.js';
import { privateCopies, writeAttempted } from './guard.js';

/** A server file to make private again: it shares the reference's inode, or vunify linked it. */
export interface UndoItem {
  server: string; path: RelPath; pkg: string; dev: string; ino: string; refPath?: RelPath; tmp?: string;
  /** Reflinked (its own inode): the copy takes the file's current metadata, and no attribute is involved. */
  reflink?: boolean;
  /** Names the shared inode has in the reference's own candidates (a package may ship one inode twice); default 1. */
  refNames?: number;
}

/** Puts private copies back, one shared inode at a time. */
export async function applyUndo(items: UndoItem[], ctx: ApplyContext): Promise<Map<UndoItem, Outcome>> {
  const outcomes = new Map<UndoItem, Outcome>();
  ctx.stuckTmps ??= new Set();
  beforeUndo();
  const groups = new Map<string, UndoItem[]>();
  for (const it of items) {
    const key = `${it.dev}:${it.ino}`;
    const g = groups.get(key) ?? [];
    g.push(it);
    groups.set(key, g);
  }
  const limit = pLimit(ctx.concurrency ?? 4);
  const updates: Array<[string, RelPath, FileRecord | null]> = [];
  // Journal every copy about to be made, and every attribute about to be lifted.
  const journal: JournalEntry[] = [];
  for (const it of items) {
    it.tmp = tmpName();
    journal.push({ op: 'undo', root: ctx.serverRoots.get(it.server)!, path: it.path, tmp: it.tmp, dev: it.dev, ino: it.ino });
  }
  for (const g of groups.values()) {
    if (g.every((it) => it.reflink)) continue;
    const withRef = g.find((it) => it.refPath !== undefined);
    journal.push(withRef
      ? { op: 'flag', root: ctx.refRoot, path: withRef.refPath!, dev: g[0].dev, ino: g[0].ino }
      : { op: 'flag', root: ctx.serverRoots.get(g[0].server)!, path: g[0].path, dev: g[0].dev, ino: g[0].ino });
  }
  await ctx.index.journalAdd(journal);
  const counter = phaseCounter(ctx.progress, 'undo', items.length, 'files');
  await Promise.all(
    [...groups.values()].map((group) =>
      limit(async () => {
        // Undo lifts the attribute of a shared inode for its renames: the same lease as
        // linking holds every write-open of it off meanwhile.
        // Reflinked files share no inode: no attribute is lifted, nothing to hold off.
        const held = group.every((it) => it.reflink) ? null : holdUndoGroup(group, ctx);
        if (held === 'inUse' || held === 'none') {
          const why = held === 'inUse' ? skip('inUse', 'the shared file is open for writing: left as it is') : skip('changed', 'no name of the shared inode could be held: left as it is');
          for (const it of group) { counter.add(1); outcomes.set(it, why); }
          return;
        }
        try {
          for (const it of group) {
            counter.add(1);
            // An opener held off already: stop lifting the attribute; the names go private below.
            if (held && writeAttempted(held.fd)) { outcomes.set(it, skip('inUse', 'opened for writing while undone: given a private copy')); continue; }
            const srvRoot = ctx.serverRoots.get(it.server)!;
            const old = ctx.index.getFile(srvRoot, it.path);
            const out = await undoOne(it, ctx).catch(skipFor); // a folder the tenant removed or swapped: their change
            outcomes.set(it, out);
            if (out.kind === 'restored') {
              // The private copy has the shared content: record it so a rescan need not read it.
              const st = await ctx.roots.get(srvRoot)!.lstat(it.path).catch(() => null);
              updates.push([srvRoot, it.path, st && old && old.ino === it.ino ? recordOf(st, old.hash, old.xattrs, old.pkg) : null]);
            }
          }
          if (held && writeAttempted(held.fd)) {
            // A held-off opener gets a descriptor on the inode: every name left on it goes private too.
            const refPath = group.find((it) => it.refPath !== undefined)?.refPath;
            const names: Array<{ root: string; path: RelPath }> = [
              ...(refPath !== undefined ? [{ root: ctx.refRoot, path: refPath }] : []),
              ...group.filter((it) => outcomes.get(it)?.kind !== 'restored').map((it) => ({ root: ctx.serverRoots.get(it.server)!, path: it.path })),
            ];
            ctx.problems.push({ root: names[0]?.root ?? ctx.refRoot, path: names[0]?.path ?? group[0].path, reason: 'opened for writing while its links were undone; held off, and every name of it given a private copy' });
            const rec = ctx.index.getFile(ctx.serverRoots.get(group[0].server)!, group[0].path) ?? (refPath !== undefined ? ctx.index.getFile(ctx.refRoot, refPath) : undefined);
            await privateCopies(held.fd, names, ctx, rec && rec.ino === group[0].ino ? rec.hash : '');
            for (const n of names) updates.push([n.root, n.path, null]);
          }
        } catch (err) {
          for (const it of group) if (!outcomes.has(it)) outcomes.set(it, skip('error', oneLine(err)));
        } finally {
          if (held) await held.close();
        }
        // The shared inode lost links (its ctime moved): refresh the records that remain on it.
        const known = ctx.index.getFile(ctx.serverRoots.get(group[0].server)!, group[0].path);
        const refPath = group.find((it) => it.refPath !== undefined)?.refPath;
        const onInode = (f?: FileRecord) => (f && f.dev === group[0].dev && f.ino === group[0].ino ? f : undefined);
        const base = onInode(known) ?? onInode(refPath !== undefined ? ctx.index.getFile(ctx.refRoot, refPath) : undefined);
        if (base) {
          await refreshInode(ctx, { dev: group[0].dev, ino: group[0].ino, hash: base.hash, xattrs: base.xattrs },
            refPath !== undefined ? [[ctx.refRoot, refPath]] : [], updates);
        }
      }),
    ),
  );
  counter.end();
  await ctx.index.putFiles(updates);
  // A temporary copy that could not be removed (a read-only remount) stays journaled for recover.
  const stuck = ctx.stuckTmps ?? new Set<string>();
  for (const e of journal) if (e.op === 'undo' && stuck.has(e.tmp)) ctx.problems.push({ root: e.root, path: e.path, reason: `its temporary name ${e.tmp} could not be removed; the next run (or vunify recover) removes it` });
  await ctx.index.journalDone(journal.filter((e) => e.op !== 'undo' || !stuck.has(e.tmp)));
  return outcomes;
}

/**
 * A read lease on a group's shared inode, through any of its names (the reference's, then
 * the servers'): 'inUse' when a writer holds it open, 'none' when no name of it can be
 * opened as that inode (nothing is then lifted).
 */
export function holdUndoGroup(group: UndoItem[], ctx: ApplyContext): OpenedFile | 'inUse' | 'none' {
  const refPath = group.find((it) => it.refPath !== undefined)?.refPath;
  const names: Array<[string, RelPath]> = [
    ...(refPath !== undefined ? [[ctx.refRoot, refPath] as [string, RelPath]] : []),
    ...group.map((it): [string, RelPath] => [ctx.serverRoots.get(it.server)!, it.path]),
  ];
  for (const [root, rel] of names) {
    const { dir, name } = splitRel(rel);
    let f: OpenedFile;
    try {
      f = ctx.roots.get(root)!.withDirSync(dir, (dfd) => openFileAtSync(dfd, name));
    } catch {
      continue;
    }
    if (String(f.stat.ino) !== group[0].ino || String(f.stat.dev) !== group[0].dev) {
      void f.close();
      continue;
    }
    try {
      takeReadLease(f.fd);
    } catch (err) {
      void f.close();
      if (isErrno(err, 'EAGAIN')) return 'inUse';
      continue;
    }
    return f;
  }
  return 'none';
}

export async function undoOne(it: UndoItem, ctx: ApplyContext): Promise<Outcome> {
  const srvRootPath = ctx.serverRoots.get(it.server)!;
  const srvRoot = ctx.roots.get(srvRootPath)!;
  const { dir, name } = splitRel(it.path);
  return srvRoot.withDir(dir, async (dfd) => {
    const cur = openFileAtSync(dfd, name);
    let tmp: string | null = null;
    let restoreDir = () => {};
    try {
      if (String(cur.stat.ino) !== it.ino || String(cur.stat.dev) !== it.dev) return skip('changed', 'changed since checked');
      const rec = ctx.index.getLink(srvRootPath, it.path);
      const useRec = rec && rec.ino === it.ino && rec.dev === it.dev && !it.reflink ? rec : undefined;
      if (it.reflink && isImmutable(cur.fd)) return skip('immutable', 'made immutable since it was reflinked; left as it is');
      const want = useRec
        ? {
            mode: useRec.mode, uid: useRec.uid, gid: useRec.gid,
            atimeNs: BigInt(useRec.atimeNs), mtimeNs: BigInt(useRec.mtimeNs),
            xattrs: Object.fromEntries(Object.entries(useRec.xattrs).map(([k, v]) => [k, Buffer.from(v, 'base64')])) as Xattrs,
            flags: useRec.flags ?? 0,
          }
        : {
            mode: Number(cur.stat.mode), uid: Number(cur.stat.uid), gid: Number(cur.stat.gid),
            atimeNs: cur.stat.atimeNs, mtimeNs: cur.stat.mtimeNs, xattrs: readXattrs(cur.fd), flags: flagsOf(cur.fd) & KEPT_FLAGS,
          };
      restoreDir = await rememberDirTimes(ctx, srvRootPath, dir, dfd);
      const name2 = it.tmp ?? tmpName();
      const out = await fsp.open(at(dfd, name2), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
      tmp = name2; // ours only once created (EEXIST: someone else's file, left alone)
      try {
        await copyFd(cur.fd, out.fd);
        setMetadata(out.fd, want);
        await out.sync();
      } finally {
        await out.close();
      }
      faultPoint();
      const wasImmutable = isImmutable(cur.fd);
      if (wasImmutable) setImmutable(cur.fd, false);
      try {
        faultPoint();
        fs.renameSync(at(dfd, tmp), at(dfd, name));
        tmp = null;
        restoreDir();
        await fsyncFd(dfd);
        faultPoint();
      } finally {
        if (wasImmutable) {
          const now = await fstat(cur.fd, { bigint: true });
          // Still shared: the attribute goes back on. Alone now (its only names the
          // reference's own), it stays off, whichever index (or tool) set it: an inode shared
          // across roots got it to protect the sharing, and a lone immutable file would stop
          // its own package manager.
          if (now.nlink > BigInt(it.refNames ?? 1)) setImmutable(cur.fd, true);
          else if (ctx.index.getInode(it.dev, it.ino) !== undefined) await ctx.index.removeInode(it.dev, it.ino);
        }
      }
      if (rec) await ctx.index.removeLink(srvRootPath, it.path);
      return { kind: 'restored' };
    } catch (err) {
      if (isErrno(err, 'ENOSPC', 'EROFS', 'EPERM', 'EDQUOT')) return skip('error', oneLine(err));
      throw err;
    } finally {
      if (tmp !== null) {
        if (!(await dropTmp(dfd, tmp))) ctx.stuckTmps?.add(tmp);
        restoreDir();
      }
      await cur.close();
    }
  });
}
