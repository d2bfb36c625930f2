// Apply: the only code that changes a vserver. Every link is guarded by a fresh stat,
// a live metadata and extended-attribute check, and a byte-for-byte comparison; it is
// made as a temporary link in the server's folder and renamed over the file, so the
// path never disappears. Undo writes a private copy the same way.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import pLimit from 'p-limit';
import { isErrno, oneLine } from './errors.js';
import { copyFd, sameBytes } from './fsx/content.js';
import { RootDir, openFileAt, splitRel, type OpenedFile, type RelPath } from './fsx/rootdir.js';
import { isImmutable, readXattrs, removeXattr, setImmutable, setTimesNs, writeXattr, type Xattrs } from './fsx/sys.js';
import type { Decision, SkipReason } from './plan.js';
import { recordOf, sameSignatureStats } from './scan.js';
import type { FileRecord, Index, LinkRecord } from './store/index-db.js';

export type Outcome =
  | { kind: 'unified'; bytesSaved: number }
  | { kind: 'restored' }
  | { kind: 'skip'; reason: SkipReason; detail?: string };

export interface ApplyContext {
  index: Index;
  /** Open roots by root path (the reference and every server). */
  roots: Map<string, RootDir>;
  /** Root path of each server by its name. */
  serverRoots: Map<string, string>;
  refRoot: string;
  immutable: boolean;
  concurrency?: number;
  /** Failures that belong to no single decision (an attribute that could not be set). */
  problems: Array<{ root: string; path: RelPath; reason: string }>;
  /** Folder times as first seen in this run, put back after each rename in the folder. */
  dirTimes?: Map<string, { atimeNs: bigint; mtimeNs: bigint }>;
}

const { O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;
let tmpCounter = 0;
const tmpName = () => `.vunify-tmp.${process.pid}.${++tmpCounter}.${randomBytes(3).toString('hex')}`;

const skip = (reason: SkipReason, detail?: string): Outcome => ({ kind: 'skip', reason, detail });

function sameXattrs(a: Xattrs, b: Xattrs): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k].equals(b[k]));
}

function fsyncFd(fd: number): Promise<void> {
  return new Promise((res, rej) => fs.fsync(fd, (e) => (e ? rej(e) : res())));
}

const at = RootDir.at;

function fstat(fd: number, _o: { bigint: true }): Promise<fs.BigIntStats> {
  return new Promise((res, rej) => fs.fstat(fd, { bigint: true }, (e, st) => (e ? rej(e) : res(st))));
}

/**
 * Links, renames and temporary files change a folder's mtime; backups and rescans key
 * on it, so the times a folder had when this run first came are put back afterwards.
 */
async function rememberDirTimes(ctx: ApplyContext, root: string, dir: RelPath, dfd: number): Promise<() => void> {
  const times = (ctx.dirTimes ??= new Map());
  const key = `${root}\0${dir}`;
  if (!times.has(key)) {
    const st = await fstat(dfd, { bigint: true });
    times.set(key, { atimeNs: st.atimeNs, mtimeNs: st.mtimeNs });
  }
  const t = times.get(key)!;
  return () => {
    try { setTimesNs(dfd, t.atimeNs, t.mtimeNs); } catch { /* cosmetic: the change stands */ }
  };
}

/** Best-effort removal of a temporary name we created. */
async function dropTmp(dirFd: number, name: string): Promise<void> {
  await fsp.unlink(at(dirFd, name)).catch(() => {});
}

/** Carries out the link decisions, one reference inode at a time. Returns an outcome per decision. */
export async function applyLinks(decisions: Decision[], ctx: ApplyContext): Promise<Map<Decision, Outcome>> {
  const outcomes = new Map<Decision, Outcome>();
  const groups = new Map<string, Decision[]>();
  for (const d of decisions) {
    if (d.kind !== 'link' && d.kind !== 'already') continue;
    const key = `${d.ref.dev}:${d.ref.ino}`;
    const g = groups.get(key) ?? [];
    g.push(d);
    groups.set(key, g);
  }
  const limit = pLimit(ctx.concurrency ?? 4);
  const updates: Array<[string, RelPath, FileRecord | null]> = [];
  await Promise.all(
    [...groups.values()].map((group) =>
      limit(() => linkGroup(group, ctx, outcomes, updates).catch((err) => {
        for (const d of group) if (d.kind === 'link' && !outcomes.has(d)) outcomes.set(d, skip('error', oneLine(err)));
      })),
    ),
  );
  await ctx.index.putFiles(updates);
  return outcomes;
}

async function linkGroup(
  group: Decision[],
  ctx: ApplyContext,
  outcomes: Map<Decision, Outcome>,
  updates: Array<[string, RelPath, FileRecord | null]>,
): Promise<void> {
  const refRoot = ctx.roots.get(ctx.refRoot)!;
  const first = group[0] as Extract<Decision, { kind: 'link' | 'already' }>;
  const links = group.filter((d): d is Extract<Decision, { kind: 'link' }> => d.kind === 'link');
  const { dir: refDir, name: refName } = splitRel(first.refPath);
  await refRoot.withDir(refDir, async (refDirFd) => {
    let ref: OpenedFile;
    try {
      ref = await openFileAt(refDirFd, refName);
    } catch (err) {
      for (const d of links) outcomes.set(d, skip('changed', `reference: ${oneLine(err)}`));
      return;
    }
    try {
      const r = first.ref;
      if (String(ref.stat.ino) !== r.ino || String(ref.stat.dev) !== r.dev || String(ref.stat.mtimeNs) !== r.mtimeNs || Number(ref.stat.size) !== r.size) {
        for (const d of links) outcomes.set(d, skip('changed', 'reference changed since scanned'));
        return;
      }
      const ours = ctx.index.getInode(r.dev, r.ino) !== undefined;
      const wasImmutable = isImmutable(ref.fd);
      if (wasImmutable && !ours) {
        for (const d of links) outcomes.set(d, skip('immutable', 'the reference file was immutable before vunify'));
        return;
      }
      const refXattrs = readXattrs(ref.fd);
      let cleared = false;
      try {
        if (links.length > 0 && wasImmutable) cleared = setImmutable(ref.fd, false);
        for (const d of links) {
          const out = await linkOne(d, ref, refDirFd, refName, refXattrs, ctx).catch((err) => skip('error', oneLine(err)));
          outcomes.set(d, out);
        }
      } finally {
        const now = await fstat(ref.fd, { bigint: true }).catch(() => null);
        const shared = now !== null && now.nlink > 1n;
        if (ctx.immutable && shared && !wasImmutable || cleared) {
          try {
            if (setImmutable(ref.fd, true) && !ours) {
              await ctx.index.putInode(r.dev, r.ino, { root: ctx.refRoot, path: first.refPath, setAt: new Date().toISOString() });
            }
          } catch (err) {
            // The links stand (the files are identical); the missing attribute is reported.
            ctx.problems.push({ root: ctx.refRoot, path: first.refPath, reason: `cannot set the immutable attribute: ${oneLine(err)}` });
          }
        }
      }
      // Linking and the attribute moved the inode's ctime and nlink: record the new
      // signatures so the next scan does not read these files again.
      const paths: Array<[string, RelPath]> = group
        .filter((d) => d.kind === 'already' || outcomes.get(d)?.kind === 'unified')
        .map((d) => [ctx.serverRoots.get(d.server)!, d.path]);
      await refreshInode(ctx, r, paths, updates);
    } finally {
      await ref.close();
    }
  });
}

async function linkOne(
  d: Extract<Decision, { kind: 'link' }>,
  ref: OpenedFile,
  refDirFd: number,
  refName: string,
  refXattrs: Xattrs,
  ctx: ApplyContext,
): Promise<Outcome> {
  const srvRootPath = ctx.serverRoots.get(d.server)!;
  const srvRoot = ctx.roots.get(srvRootPath)!;
  const { dir, name } = splitRel(d.path);
  return srvRoot.withDir(dir, async (dfd) => {
    const st1 = await fsp.lstat(at(dfd, name), { bigint: true }).catch(() => null);
    const s = d.srv;
    if (!st1 || !st1.isFile() || String(st1.ino) !== s.ino || String(st1.mtimeNs) !== s.mtimeNs ||
        String(st1.ctimeNs) !== s.ctimeNs || Number(st1.size) !== s.size) {
      return skip('changed', 'changed since scanned');
    }
    const srv = await openFileAt(dfd, name);
    let tmp: string | null = null;
    let recorded = false;
    let restoreDir = () => {};
    try {
      if (srv.stat.ino !== st1.ino) return skip('changed', 'replaced while opened');
      const rs = ref.stat;
      const ss = srv.stat;
      if (rs.mode !== ss.mode || rs.uid !== ss.uid || rs.gid !== ss.gid || rs.mtimeNs !== ss.mtimeNs) {
        return skip('metadataDiffers', 'changed since scanned');
      }
      const srvXattrs = readXattrs(srv.fd);
      if (!sameXattrs(refXattrs, srvXattrs)) return skip('metadataDiffers', 'xattrs');
      if (!(await sameBytes(ref.fd, srv.fd))) return skip('contentDiffers', 'bytes differ (hash was stale)');
      const rec: LinkRecord = {
        refRoot: ctx.refRoot, refPath: d.refPath, dev: String(rs.dev), ino: String(rs.ino),
        size: Number(ss.size), pkg: d.pkg,
        mode: Number(ss.mode), uid: Number(ss.uid), gid: Number(ss.gid),
        atimeNs: String(ss.atimeNs), mtimeNs: String(ss.mtimeNs),
        xattrs: Object.fromEntries(Object.entries(srvXattrs).map(([k, v]) => [k, v.toString('base64')])),
        linkedAt: new Date().toISOString(),
      };
      // The record of what is replaced is durable before the replacement.
      await ctx.index.putLink(srvRootPath, d.path, rec);
      recorded = true;
      restoreDir = await rememberDirTimes(ctx, srvRootPath, dir, dfd);
      tmp = tmpName();
      await fsp.link(at(refDirFd, refName), at(dfd, tmp));
      const lt = await fsp.lstat(at(dfd, tmp), { bigint: true });
      if (lt.ino !== rs.ino) return skip('changed', 'reference replaced while linking');
      const st2 = await fsp.lstat(at(dfd, name), { bigint: true }).catch(() => null);
      const again = await fstat(srv.fd, { bigint: true });
      if (!st2 || !sameSignatureStats(st1, st2) || !sameSignatureStats(st1, again)) {
        return skip('changed', 'written while compared');
      }
      await fsp.rename(at(dfd, tmp), at(dfd, name));
      tmp = null;
      restoreDir();
      await fsyncFd(dfd);
      return { kind: 'unified', bytesSaved: st1.nlink === 1n ? Number(st1.size) : 0 };
    } catch (err) {
      if (isErrno(err, 'EXDEV')) return skip('otherFilesystem', oneLine(err));
      return skip('error', oneLine(err));
    } finally {
      if (tmp !== null) {
        await dropTmp(dfd, tmp);
        restoreDir();
        if (recorded) await ctx.index.removeLink(srvRootPath, d.path).catch(() => {});
      }
      await srv.close();
    }
  });
}

/**
 * Re-records every indexed path of an inode whose ctime or nlink this run changed (the
 * given paths, and any holder of its content in the roots open now), keeping the hash.
 */
async function refreshInode(
  ctx: ApplyContext,
  r: { dev: string; ino: string; hash: string; xattrs: string },
  extra: Array<[string, RelPath]>,
  updates: Array<[string, RelPath, FileRecord | null]>,
): Promise<void> {
  const seen = new Set<string>();
  const todo: Array<[string, RelPath]> = [...extra];
  for (const h of ctx.index.holders(r.hash)) {
    const rec = ctx.index.getFile(h.root, h.path);
    if (rec && rec.dev === r.dev && rec.ino === r.ino) todo.push([h.root, h.path]);
  }
  for (const [root, rel] of todo) {
    const key = `${root}\0${rel}`;
    const dir = ctx.roots.get(root);
    if (seen.has(key) || !dir) continue;
    seen.add(key);
    const st = await dir.lstat(rel).catch(() => null);
    if (st && String(st.ino) === r.ino && String(st.dev) === r.dev) {
      updates.push([root, rel, recordOf(st, r.hash, r.xattrs, ctx.index.getFile(root, rel)?.pkg)]);
    }
  }
}

/** A server file to make private again: it shares the reference's inode, or vunify linked it. */
export interface UndoItem { server: string; path: RelPath; pkg: string; dev: string; ino: string; refPath?: RelPath }

/** Puts private copies back, one shared inode at a time. */
export async function applyUndo(items: UndoItem[], ctx: ApplyContext): Promise<Map<UndoItem, Outcome>> {
  const outcomes = new Map<UndoItem, Outcome>();
  const groups = new Map<string, UndoItem[]>();
  for (const it of items) {
    const key = `${it.dev}:${it.ino}`;
    const g = groups.get(key) ?? [];
    g.push(it);
    groups.set(key, g);
  }
  const limit = pLimit(ctx.concurrency ?? 4);
  const updates: Array<[string, RelPath, FileRecord | null]> = [];
  await Promise.all(
    [...groups.values()].map((group) =>
      limit(async () => {
        for (const it of group) {
          const srvRoot = ctx.serverRoots.get(it.server)!;
          const old = ctx.index.getFile(srvRoot, it.path);
          const out = await undoOne(it, ctx).catch((err) => skip('error', oneLine(err)));
          outcomes.set(it, out);
          if (out.kind === 'restored') {
            // The private copy has the shared content: record it so a rescan need not read it.
            const st = await ctx.roots.get(srvRoot)!.lstat(it.path).catch(() => null);
            updates.push([srvRoot, it.path, st && old && old.ino === it.ino ? recordOf(st, old.hash, old.xattrs, old.pkg) : null]);
          }
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
  await ctx.index.putFiles(updates);
  return outcomes;
}

async function undoOne(it: UndoItem, ctx: ApplyContext): Promise<Outcome> {
  const srvRootPath = ctx.serverRoots.get(it.server)!;
  const srvRoot = ctx.roots.get(srvRootPath)!;
  const { dir, name } = splitRel(it.path);
  return srvRoot.withDir(dir, async (dfd) => {
    const cur = await openFileAt(dfd, name);
    let tmp: string | null = null;
    let restoreDir = () => {};
    try {
      if (String(cur.stat.ino) !== it.ino || String(cur.stat.dev) !== it.dev) return skip('changed', 'changed since checked');
      const rec = ctx.index.getLink(srvRootPath, it.path);
      const useRec = rec && rec.ino === it.ino && rec.dev === it.dev ? rec : undefined;
      const want = useRec
        ? {
            mode: useRec.mode, uid: useRec.uid, gid: useRec.gid,
            atimeNs: BigInt(useRec.atimeNs), mtimeNs: BigInt(useRec.mtimeNs),
            xattrs: Object.fromEntries(Object.entries(useRec.xattrs).map(([k, v]) => [k, Buffer.from(v, 'base64')])) as Xattrs,
          }
        : {
            mode: Number(cur.stat.mode), uid: Number(cur.stat.uid), gid: Number(cur.stat.gid),
            atimeNs: cur.stat.atimeNs, mtimeNs: cur.stat.mtimeNs, xattrs: readXattrs(cur.fd),
          };
      restoreDir = await rememberDirTimes(ctx, srvRootPath, dir, dfd);
      tmp = tmpName();
      const out = await fsp.open(at(dfd, tmp), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
      try {
        await copyFd(cur.fd, out.fd);
        // Owner first: chown clears setuid bits and file capabilities.
        await out.chown(want.uid, want.gid);
        await out.chmod(want.mode & 0o7777);
        const inherited = readXattrs(out.fd);
        for (const k of Object.keys(inherited)) if (!(k in want.xattrs)) removeXattr(out.fd, k);
        for (const [k, v] of Object.entries(want.xattrs)) writeXattr(out.fd, k, v);
        setTimesNs(out.fd, want.atimeNs, want.mtimeNs);
        await out.sync();
      } finally {
        await out.close();
      }
      const wasImmutable = isImmutable(cur.fd);
      if (wasImmutable) setImmutable(cur.fd, false);
      try {
        await fsp.rename(at(dfd, tmp), at(dfd, name));
        tmp = null;
        restoreDir();
        await fsyncFd(dfd);
      } finally {
        if (wasImmutable) {
          const now = await fstat(cur.fd, { bigint: true });
          const ours = ctx.index.getInode(it.dev, it.ino) !== undefined;
          // Still shared, or not ours to clear: the attribute goes back on.
          if (now.nlink > 1n || !ours) setImmutable(cur.fd, true);
          else await ctx.index.removeInode(it.dev, it.ino);
        }
      }
      if (rec) await ctx.index.removeLink(srvRootPath, it.path);
      return { kind: 'restored' };
    } catch (err) {
      if (isErrno(err, 'ENOSPC', 'EROFS', 'EPERM', 'EDQUOT')) return skip('error', oneLine(err));
      throw err;
    } finally {
      if (tmp !== null) {
        await dropTmp(dfd, tmp);
        restoreDir();
      }
      await cur.close();
    }
  });
}
