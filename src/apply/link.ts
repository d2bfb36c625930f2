// Linking: verify each server copy against the reference (fresh stat, live metadata, the
// bytes), journal, link through a temporary name and rename, then the attribute.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { Blake3Hasher } from '../fsx/blake3.js';
import pLimit from 'p-limit';
import { isErrno, oneLine } from '../errors.js';
import { hashFd, readWhole, releaseWhole, sameAsBuffer, sameBytes } from '../fsx/content.js';
import { lstatIn, openFileAtSync, splitRel, type OpenedFile, type RelPath } from '../fsx/rootdir.js';
import type { StatLite } from '../fsx/sys.js';
import {
  FS_APPEND_FL, FS_IMMUTABLE_FL, exchangeAt, immutableAt, isImmutable, linkFd, readXattrs, setImmutable, setTimesNs,
  syncFilesystem, takeReadLease, type Xattrs,
} from '../fsx/sys.js';
import type { Decision } from '../plan.js';
import { sameSignatureStats } from '../scan.js';
import { afterExchange, afterTmpLink, afterVerify, beforeVerify, faultPoint } from '../fault.js';
import { phaseCounter } from '../progress.js';
import type { FileRecord, JournalEntry } from '../store/index-db.js';
import {
  type ApplyContext, CHUNK_GROUPS, chunkLinks, type Counter, type Group, type GroupState, HOLD_BYTES, KEPT_FLAGS,
  LINK_CONCURRENCY, type LinkDecision, type Outcome, type Sig, type Verified, at, dropTmp, flagsOf, fstat,
  refreshInode, rememberDirTimes, sameSig, sameXattrs, sigOf, skip, skipFor, spreadByFolder, tmpName,
} from './common.js';
import { evictGroup, evictNames, heldOffCheck, holdOff, writeAttempted } from './guard.js';

/**
 * Carries out the link decisions in chunks of reference inodes:
 *  1. verify: a fresh lstat of each server file against the scan, a live comparison of
 *     mode, owner, mtime and every xattr, and of the bytes (hashing the reference in the
 *     same pass when its hash is not known);
 *  2. journal: one durable transaction records every link about to be made, with what
 *     it replaces;
 *  3. link: per inode, a temporary hard link in the server's folder, checked to be the
 *     reference's inode, and renamed over the file only if the file's signature (ino,
 *     size, mtime, ctime) is still the one verified; then the immutable attribute;
 *  4. each touched folder gets its times back and is fsynced once;
 *  5. one transaction drops the records of links not made and re-records signatures.
 */
export async function applyLinks(decisions: Decision[], ctx: ApplyContext): Promise<Map<Decision, Outcome>> {
  const outcomes = new Map<Decision, Outcome>();
  const groups = new Map<string, Group>();
  for (const d of decisions) {
    if (d.kind !== 'link' && d.kind !== 'already') continue;
    const key = `${d.ref.dev}:${d.ref.ino}`;
    const g = groups.get(key) ?? [];
    g.push(d);
    groups.set(key, g);
  }
  // Groups without a new link need a visit only to put the attribute on: after a
  // --no-immutable run, or where a killed run or a failed chattr left it off (one statx
  // per shared inode tells, without opening it).
  const todo = [...groups.values()].filter((g) =>
    g.some((d) => d.kind === 'link') || (ctx.immutable && !carriesAttribute(g[0].refPath, g[0].ref, ctx)));
  const links = todo.flatMap((g) => g.filter((d): d is LinkDecision => d.kind === 'link'));
  ctx.stuckTmps ??= new Set();
  // How many names of each server inode this run links, whichever reference inode each goes to.
  ctx.linkNames = new Map();
  for (const d of links) ctx.linkNames.set(`${d.server}\0${d.srv.ino}`, (ctx.linkNames.get(`${d.server}\0${d.srv.ino}`) ?? 0) + 1);
  const bytes = phaseCounter(ctx.progress, 'compare', links.reduce((a, d) => a + d.srv.size, 0), 'bytes');
  const count = { bytes, links: phaseCounter(undefined, 'link', 0, 'files') };
  const cap = chunkLinks();
  let chunk: Group[] = [];
  let linksIn = 0;
  for (const g of todo) {
    let n = 0;
    for (const d of g) if (d.kind === 'link') n++;
    if (chunk.length > 0 && (chunk.length >= CHUNK_GROUPS || (ctx.spreadLinks && linksIn + n > cap))) {
      await linkChunk(chunk, ctx, outcomes, count);
      chunk = [];
      linksIn = 0;
    }
    chunk.push(g);
    linksIn += n;
  }
  if (chunk.length > 0) await linkChunk(chunk, ctx, outcomes, count);
  bytes.end();
  return outcomes;
}

/** True when the reference's inode is recorded as vunify's and has the attribute now. */
export function carriesAttribute(refPath: RelPath, r: FileRecord, ctx: ApplyContext): boolean {
  if (!ctx.index.getInode(r.dev, r.ino)) return false;
  const { dir, name } = splitRel(refPath);
  try {
    const now = ctx.roots.get(ctx.refRoot)!.withDirSync(dir, (dfd) => immutableAt(dfd, name));
    return now !== null && String(now.ino) === r.ino && now.immutable;
  } catch {
    return false; // the visit reports what is wrong
  }
}

export async function linkChunk(
  groups: Group[], ctx: ApplyContext, outcomes: Map<Decision, Outcome>, count: { bytes: Counter; links: Counter },
): Promise<void> {
  const limit = pLimit(ctx.concurrency ?? 4);
  const states = new Map<Group, GroupState>();
  const fail = (g: Group, err: unknown) => {
    for (const d of g) if (d.kind === 'link' && !outcomes.has(d)) outcomes.set(d, skipFor(err));
  };
  let t = performance.now();
  const lap = (phase: string) => { const now = performance.now(); ctx.trace?.(phase, now - t); t = now; };
  // 1. verify
  beforeVerify();
  const learned: Array<[string, RelPath, FileRecord]> = [];
  await Promise.all(groups.map((g) => limit(() => verifyGroup(g, ctx, outcomes, learned, count.bytes).then((st) => { if (st) states.set(g, st); }, (err) => fail(g, err)))));
  lap('verify');
  afterVerify();
  // 2. journal
  const verified = [...states.values()].flatMap((st) => st.verified);
  const journal: JournalEntry[] = verified.map((v) => ({
    op: 'link', root: ctx.serverRoots.get(v.d.server)!, path: v.d.path, tmp: v.tmp, dev: v.rec.dev, ino: v.rec.ino,
  }));
  for (const [g, st] of states) {
    // The attribute is cleared while links are added to an inode that has it.
    if (st.wasImmutable && st.verified.length > 0) journal.push({ op: 'flag', root: ctx.refRoot, path: g[0].refPath, dev: g[0].ref.dev, ino: g[0].ref.ino });
  }
  for (const v of verified) void ctx.index.putLink(ctx.serverRoots.get(v.d.server)!, v.d.path, v.rec);
  // Inodes that may get the attribute are recorded as vunify's before it is set: a crash
  // in between must not leave an attribute that looks as if someone else had set it.
  for (const [g, st] of states) {
    if (ctx.immutable && !st.ours && !st.wasImmutable) {
      void ctx.index.putInode(g[0].ref.dev, g[0].ref.ino, { root: ctx.refRoot, path: g[0].refPath, setAt: new Date().toISOString() });
    }
  }
  await ctx.index.journalAdd(journal);
  lap('journal');
  count.links = phaseCounter(ctx.progress, 'link', verified.length, 'files');
  // 3. link: more inodes at a time than for reading, since renames wait on the filesystem
  const linkLimit = pLimit(LINK_CONCURRENCY);
  const updates: Array<[string, RelPath, FileRecord | null]> = [...learned];
  ctx.learned = new Map(learned.map(([root, rel, rec]) => [`${root}\0${rel}`, rec.hash]));
  const touched = new Map<string, [string, RelPath]>();
  await Promise.all(spreadByFolder(groups).map((g) => linkLimit(async () => {
    const st = states.get(g);
    if (st) await linkGroup(g, st, ctx, outcomes, updates, touched).catch((err) => fail(g, err));
    count.links.add(st?.verified.length ?? 0);
  })));
  count.links.end();
  lap('link');
  // 4. folders get their times back; then one syncfs makes every rename durable
  for (const [root, dir] of touched.values()) {
    const times = ctx.dirTimes?.get(`${root}\0${dir}`);
    if (times) {
      await ctx.roots.get(root)!.withDir(dir, (dfd) => setTimesNs(dfd, times.atimeNs, times.mtimeNs)).catch(() => { /* cosmetic */ });
    }
  }
  for (const k of touched.keys()) ctx.touchedDirs?.add(k);
  let synced = true;
  if (touched.size > 0) {
    try {
      syncFilesystem(ctx.roots.get(ctx.refRoot)!.rootFd);
    } catch (err) {
      synced = false; // the journal stays: recover settles these entries once the disk says they are durable
      ctx.problems.push({ root: ctx.refRoot, path: '', reason: `cannot sync the filesystem: ${oneLine(err)}` });
    }
  }
  lap('sync');
  // 5. records
  const notMade = verified.filter((v) => outcomes.get(v.d)?.kind !== 'unified');
  const stuck = ctx.stuckTmps ?? new Set<string>();
  for (const v of verified) {
    if (stuck.has(v.tmp)) ctx.problems.push({ root: ctx.serverRoots.get(v.d.server)!, path: v.d.path, reason: `its temporary name ${v.tmp} could not be removed; the next run (or vunify recover) settles it` });
  }
  await Promise.all([
    ...notMade.map((v) => ctx.index.removeLink(ctx.serverRoots.get(v.d.server)!, v.d.path)),
    ctx.index.putFiles(updates),
    ctx.index.journalDone(synced ? journal.filter((e) => e.op !== 'link' || !stuck.has(e.tmp)) : []),
  ]);
  ctx.index.releaseMapped();
  lap('records');
  // The decisions live to the end of the run (the report): a linked one takes the records
  // just written, so the scanned ones, of every server copy, can go now.
  const now = new Map<string, FileRecord>();
  for (const [root, rel, rec] of updates) if (rec) now.set(`${root}\0${rel}`, rec);
  for (const v of verified) {
    if (outcomes.get(v.d)?.kind !== 'unified') continue;
    v.d.srv = now.get(`${ctx.serverRoots.get(v.d.server)!}\0${v.d.path}`) ?? v.d.srv;
    v.d.ref = now.get(`${ctx.refRoot}\0${v.d.refPath}`) ?? v.d.ref;
  }
}

export async function verifyGroup(
  g: Group, ctx: ApplyContext, outcomes: Map<Decision, Outcome>, learned: Array<[string, RelPath, FileRecord]>, bytes: Counter,
): Promise<GroupState | null> {
  const refRoot = ctx.roots.get(ctx.refRoot)!;
  const first = g[0];
  const r = first.ref;
  const links = g.filter((d): d is LinkDecision => d.kind === 'link');
  const { dir: refDir, name: refName } = splitRel(first.refPath);
  return refRoot.withDir(refDir, async (refDirFd) => {
    let ref: OpenedFile;
    try {
      ref = openFileAtSync(refDirFd, refName);
    } catch (err) {
      for (const d of links) outcomes.set(d, skip('changed', `reference: ${oneLine(err)}`));
      return null;
    }
    let refBytes: Buffer | undefined;
    try {
      if (String(ref.stat.ino) !== r.ino || String(ref.stat.dev) !== r.dev || String(ref.stat.mtimeNs) !== r.mtimeNs || Number(ref.stat.size) !== r.size) {
        for (const d of links) outcomes.set(d, skip('changed', 'reference changed since scanned'));
        return null;
      }
      const ours = ctx.index.getInode(r.dev, r.ino) !== undefined;
      const refFlags = flagsOf(ref.fd);
      const wasImmutable = (refFlags & FS_IMMUTABLE_FL) !== 0;
      if (refFlags & FS_APPEND_FL) {
        for (const d of links) outcomes.set(d, skip('appendOnly', 'the reference file is append-only (not set by vunify)'));
        return null;
      }
      if (wasImmutable && !ours) {
        for (const d of links) outcomes.set(d, skip('immutable', 'the reference file was immutable before vunify'));
        return null;
      }
      const refXattrs = readXattrs(ref.fd);
      const state: GroupState = { ours, wasImmutable, refHash: r.hash, verified: [], refStat: ref.stat, refXattrs };
      // A small reference file is read once and held: each server copy is compared with it
      // in memory, instead of reading the reference again for every server.
      if (links.length > 1 && r.size <= HOLD_BYTES) {
        refBytes = await readWhole(ref.fd, r.size);
        ctx.read?.(ctx.refRoot, first.refPath, r.size);
        if (state.refHash === '' && refBytes.length === r.size) {
          const h = new Blake3Hasher();
          h.update(refBytes);
          state.refHash = h.digest('hex');
        }
      }
      for (const d of links) {
        const hasher = state.refHash === '' ? new Blake3Hasher() : undefined;
        const v = await verifyOne(d, ref, refXattrs, refFlags & KEPT_FLAGS, hasher, ctx, learned, refBytes, state).catch(skipFor);
        bytes.add(d.srv.size);
        if ('kind' in v) { outcomes.set(d, v); continue; }
        if (hasher) state.refHash = hasher.digest('hex');
        v.rec.refPath = first.refPath;
        if (state.refHash) v.rec.hash = state.refHash;
        state.verified.push(v);
      }
      keepInodesWhole(links, state, outcomes, ctx.linkNames);
      return state;
    } finally {
      if (refBytes) releaseWhole(refBytes);
      await ref.close();
    }
  });
}

/**
 * The names of one server inode go together: when one of them is left private, so are the
 * others (relinking some would only split the inode, and save nothing).
 */
export function keepInodesWhole(links: LinkDecision[], state: GroupState, outcomes: Map<Decision, Outcome>, runNames?: Map<string, number>): void {
  const left = new Map<string, Outcome>();
  for (const d of links) {
    const o = outcomes.get(d);
    if (o?.kind === 'skip') left.set(`${d.server}\0${d.srv.ino}`, o);
  }
  // Names not among this run's links (not candidates, or in no package): the inode stays whole.
  for (const v of state.verified) {
    const k = `${v.d.server}\0${v.st1.ino}`;
    const n = runNames?.get(k) ?? 1;
    if (v.st1.nlink > 1n && !left.has(k) && BigInt(n) < v.st1.nlink) {
      left.set(k, skip('otherNames', `the inode has ${v.st1.nlink} names here, ${n} of them linked in this run`));
    }
  }
  if (left.size === 0) return;
  state.verified = state.verified.filter((v) => {
    const o = left.get(`${v.d.server}\0${v.st1.ino}`);
    if (!o || o.kind !== 'skip') return true;
    outcomes.set(v.d, skip(o.reason, `another name of this inode was left private: ${o.detail ?? o.reason}`));
    return false;
  });
}

export async function verifyOne(
  d: LinkDecision, ref: OpenedFile, refXattrs: Xattrs, refFlags: number, hasher: Blake3Hasher | undefined, ctx: ApplyContext,
  learned: Array<[string, RelPath, FileRecord]>, refBytes?: Buffer, group?: GroupState,
): Promise<Verified | Outcome> {
  const srvRootPath = ctx.serverRoots.get(d.server)!;
  const { dir, name } = splitRel(d.path);
  return ctx.roots.get(srvRootPath)!.withDir(dir, async (dfd) => {
    const st1 = lstatIn(dfd, name);
    const s = d.srv;
    if (!st1 || !st1.isFile() || String(st1.ino) !== s.ino || String(st1.mtimeNs) !== s.mtimeNs ||
        String(st1.ctimeNs) !== s.ctimeNs || Number(st1.size) !== s.size) {
      return skip('changed', 'changed since scanned');
    }
    const srv = openFileAtSync(dfd, name);
    try {
      if (srv.stat.ino !== st1.ino) return skip('changed', 'replaced while opened');
      const rs = ref.stat;
      const ss = srv.stat;
      if (rs.mode !== ss.mode || rs.uid !== ss.uid || rs.gid !== ss.gid || rs.mtimeNs !== ss.mtimeNs) {
        return skip('metadataDiffers', 'changed since scanned');
      }
      const srvFlags = flagsOf(srv.fd);
      if (srvFlags & FS_IMMUTABLE_FL) return skip('immutable', 'the server\'s file is immutable (not set by vunify)');
      if (srvFlags & FS_APPEND_FL) return skip('appendOnly', 'the server\'s file is append-only');
      // A temporary name could be made in such a folder but never renamed nor removed.
      if (flagsOf(dfd) & (FS_APPEND_FL | FS_IMMUTABLE_FL)) return skip('appendOnly', 'its folder is append-only or immutable');
      if ((srvFlags & KEPT_FLAGS) !== refFlags) return skip('metadataDiffers', `inode flags (lsattr) differ: ${(srvFlags & KEPT_FLAGS).toString(16)} here, ${refFlags.toString(16)} in the reference`);
      const srvXattrs = readXattrs(srv.fd);
      if (!sameXattrs(refXattrs, srvXattrs)) return skip('metadataDiffers', 'xattrs');
      const cmp = refBytes && refBytes.length === Number(rs.size)
        ? { same: await sameAsBuffer(srv.fd, refBytes) }
        : await sameBytes(ref.fd, srv.fd, hasher, Number(ss.size));
      ctx.read?.(ctx.refRoot, d.refPath, Number(rs.size));
      ctx.read?.(srvRootPath, d.path, Number(ss.size));
      if (!cmp.same) {
        // Record both hashes, so that the next run knows without reading again.
        if (d.srv.hash === '') learned.push([srvRootPath, d.path, { ...d.srv, hash: (await hashFd(srv.fd, Number(ss.size))).hash }]);
        // The reference's hash once per group: held bytes or an earlier mismatch may know it.
        if (d.ref.hash === '' && !group?.refLearned) {
          const refHash = group?.refHash || (await hashFd(ref.fd, Number(rs.size))).hash;
          if (group) Object.assign(group, { refHash, refLearned: true });
          learned.push([ctx.refRoot, d.refPath, { ...d.ref, hash: refHash }]);
        }
        return skip('contentDiffers', 'the bytes differ');
      }
      return {
        d, st1, tmp: tmpName(),
        rec: {
          refRoot: ctx.refRoot, refPath: d.refPath, dev: String(rs.dev), ino: String(rs.ino),
          size: Number(ss.size), pkg: d.pkg,
          mode: Number(ss.mode), uid: Number(ss.uid), gid: Number(ss.gid),
          atimeNs: String(ss.atimeNs), mtimeNs: String(ss.mtimeNs),
          xattrs: Object.fromEntries(Object.entries(srvXattrs).map(([k, v]) => [k, v.toString('base64')])),
          ...(srvFlags & KEPT_FLAGS ? { flags: srvFlags & KEPT_FLAGS } : {}),
          linkedAt: new Date().toISOString(),
        },
      };
    } finally {
      await srv.close();
    }
  });
}

export async function linkGroup(
  g: Group,
  state: GroupState,
  ctx: ApplyContext,
  outcomes: Map<Decision, Outcome>,
  updates: Array<[string, RelPath, FileRecord | null]>,
  touched: Map<string, [string, RelPath]>,
): Promise<void> {
  const refRoot = ctx.roots.get(ctx.refRoot)!;
  const first = g[0];
  const r = { ...first.ref, hash: state.refHash };
  const { dir: refDir, name: refName } = splitRel(first.refPath);
  await refRoot.withDir(refDir, async (refDirFd) => {
    const ref = openFileAtSync(refDirFd, refName);
    try {
      if (String(ref.stat.ino) !== r.ino) {
        for (const v of state.verified) outcomes.set(v.d, skip('changed', 'reference replaced while linking'));
        return;
      }
      if (state.verified.length > 0) {
        const refused = holdOff(ref.fd, state);
        if (refused) {
          for (const v of state.verified) outcomes.set(v.d, refused);
          return;
        }
      }
      let cleared = false;
      let attempted = false;
      let failure: unknown;
      const extra: SecondCopy[] = [];
      try {
        if (state.verified.length > 0 && state.wasImmutable) {
          cleared = setImmutable(ref.fd, false);
          faultPoint();
        }
        let canon = { fd: ref.fd, ino: ref.stat.ino };
        const known = ctx.secondCopies?.get(`${r.dev}:${r.ino}`);
        if (known && state.verified.length > 0) {
          canon = await useSecondCopy(known.root, known.path, known.ino, known.sig, state.verified, ctx, extra);
        }
        for (let i = 0; i < state.verified.length; i++) {
          const v = state.verified[i];
          const out = await linkVerified(v, canon.fd, ctx, touched).catch(skipFor);
          outcomes.set(v.d, out);
          const rest = state.verified.slice(i + 1);
          if (out.kind === 'unified' && v.st1.nlink > 1n) {
            try { rebaseline(v, rest, ctx); } catch { /* the other names keep their signature: the re-check decides */ }
          }
          if (out.kind === 'skip' && out.reason === 'linkLimit') {
            // This copy is shared instead: by the rest of this inode's links now, and by
            // servers handled later in this run.
            const copy = { root: ctx.serverRoots.get(v.d.server)!, path: v.d.path, ino: v.st1.ino, sig: sigOf(v.st1) };
            (ctx.secondCopies ??= new Map()).set(`${r.dev}:${r.ino}`, copy);
            if (rest.length > 0) canon = await useSecondCopy(copy.root, copy.path, copy.ino, copy.sig, rest, ctx, extra);
          }
        }
      } catch (err) {
        failure = err; // second copies and a broken lease are settled first, then it is reported
      } finally {
        const now = await fstat(ref.fd, { bigint: true }).catch(() => null);
        const shared = now !== null && now.nlink > 1n;
        if ((ctx.immutable && shared && !state.wasImmutable) || cleared) {
          try {
            setImmutable(ref.fd, true);
            faultPoint();
          } catch (err) {
            // The links stand (the files are identical); the missing attribute is reported.
            ctx.problems.push({ root: ctx.refRoot, path: first.refPath, reason: `cannot set the immutable attribute: ${oneLine(err)}` });
          }
        }
        if (state.verified.length > 0) {
          const servers = state.verified.filter((v) => outcomes.get(v.d)?.kind === 'unified').map((v) => v.d.server);
          attempted = heldOffCheck(ref.fd, state, ctx, first.refPath, servers);
        }
      }
      for (const c of extra) {
        await finishSecondCopy(c, ctx);
        if (writeAttempted(c.file.fd)) {
          // As for the reference: a held-off opener gets a descriptor on this inode.
          const names: Array<{ root: string; path: RelPath; d?: Decision }> = [{ root: c.rootPath, path: c.path }, ...c.rest.filter((v) => outcomes.get(v.d)?.kind === 'unified').map((v) => ({ root: ctx.serverRoots.get(v.d.server)!, path: v.d.path, d: v.d }))];
          ctx.problems.push({ root: c.rootPath, path: c.path, reason: 'opened for writing while being shared (second copy); every name of it given a private copy again' });
          await evictNames(c.file.fd, names, '', ctx, outcomes, updates);
          ctx.secondCopies?.delete(`${r.dev}:${r.ino}`);
          await c.file.close();
          c.held.release();
          continue;
        }
        const known = ctx.secondCopies?.get(`${r.dev}:${r.ino}`);
        if (known && known.ino === c.ino) known.sig = sigOf(fs.fstatSync(c.file.fd, { bigint: true }));
        await refreshInode(ctx, { ...r, hash: state.refHash || r.hash, ino: String(c.ino) }, [[c.rootPath, c.path], ...c.linked()], updates, fs.fstatSync(c.file.fd, { bigint: true }));
        await c.file.close();
        c.held.release();
      }
      if (attempted) {
        await evictGroup(g, ref, state, ctx, outcomes, updates);
        if (failure) throw failure;
        return;
      }
      if (failure) throw failure;
      // Linking and the attribute moved the inode's ctime and nlink: record the new
      // signatures (and the hash learnt while comparing) so the next scan reads nothing.
      // Every name of the reference's inode that this group knows (a package may ship it twice).
      // With their records as scanned: the name's package, and its hash when on this inode already.
      const paths: Array<[string, RelPath, FileRecord]> = [[ctx.refRoot, first.refPath, first.ref], ...g.map((d): [string, RelPath, FileRecord] => [ctx.refRoot, d.refPath, d.ref]), ...g
        .filter((d) => d.kind === 'already' || outcomes.get(d)?.kind === 'unified')
        .map((d): [string, RelPath, FileRecord] => [ctx.serverRoots.get(d.server)!, d.path, d.srv])];
      // Also when the content was never read (a group visited only to put the attribute
      // on): its ctime moved all the same.
      await refreshInode(ctx, { ...r, hash: state.refHash || r.hash }, paths, updates, fs.fstatSync(ref.fd, { bigint: true }));
    } finally {
      await ref.close();
    }
  });
}

export interface SecondCopy {
  rootPath: string;
  path: RelPath;
  ino: bigint;
  held: { fd: number; release: () => void };
  file: OpenedFile;
  linked: () => Array<[string, RelPath]>;
  rest: Verified[];
}

/**
 * When the shared inode is full (EMLINK), the server copy that could not be linked stays
 * private and becomes the shared copy for the remaining servers.
 * Points the remaining links of an inode at a second shared copy: it is opened (and must
 * still be the inode it was), its attribute lifted while links are added (journaled), and
 * the link records and journal entries are rewritten to it, durably, before any link.
 */
export async function useSecondCopy(
  rootPath: string, rel: RelPath, ino: bigint, sig: Sig, rest: Verified[], ctx: ApplyContext, extra: SecondCopy[],
): Promise<{ fd: number; ino: bigint }> {
  const { dir, name } = splitRel(rel);
  const held = ctx.roots.get(rootPath)!.holdDir(dir);
  let file: OpenedFile;
  try {
    file = openFileAtSync(held.fd, name);
  } catch (err) {
    held.release();
    throw err;
  }
  try {
    if (file.stat.ino !== ino) throw new Error('the copy to share instead changed meanwhile');
    takeReadLease(file.fd);
    // Held now: it must still be exactly what was compared (or what the last chunk left).
    if (!sameSig(sigOf(fs.fstatSync(file.fd, { bigint: true })), sig)) throw new Error('the copy to share instead was changed after it was compared');
  } catch (err) {
    await file.close();
    held.release();
    throw err;
  }
  const dev = String(file.stat.dev);
  for (const r of rest) r.rec = { ...r.rec, refRoot: rootPath, refPath: rel, ino: String(ino) };
  for (const r of rest) void ctx.index.putLink(ctx.serverRoots.get(r.d.server)!, r.d.path, r.rec);
  if (ctx.immutable) void ctx.index.putInode(dev, String(ino), { root: rootPath, path: rel, setAt: new Date().toISOString() });
  const journal: JournalEntry[] = rest.map((r) => ({ op: 'link', root: ctx.serverRoots.get(r.d.server)!, path: r.d.path, tmp: r.tmp, dev: r.rec.dev, ino: r.rec.ino }));
  const lifted = isImmutable(file.fd);
  if (lifted) journal.push({ op: 'flag', root: rootPath, path: rel, dev, ino: String(ino) });
  await ctx.index.journalAdd(journal);
  if (lifted) setImmutable(file.fd, false);
  extra.push({
    rootPath, path: rel, ino, held, file,
    linked: () => rest.filter((r) => r.rec.ino === String(ino)).map((r) => [ctx.serverRoots.get(r.d.server)!, r.d.path]),
    rest: rest.filter((r) => r.rec.ino === String(ino)),
  });
  return { fd: file.fd, ino };
}

export async function finishSecondCopy(c: SecondCopy, ctx: ApplyContext): Promise<void> {
  if (!ctx.immutable && !ctx.index.getInode(String(c.file.stat.dev), String(c.ino))) return;
  try {
    if (fs.fstatSync(c.file.fd, { bigint: true }).nlink > 1n) setImmutable(c.file.fd, true);
  } catch (err) {
    ctx.problems.push({ root: c.rootPath, path: c.path, reason: `cannot set the immutable attribute: ${oneLine(err)}` });
  }
}

/**
 * Names of one server inode (a package that ships one inode under two names) are linked in
 * turn: relinking one moves the inode's ctime and link count, so each other name's expected
 * signature follows, as long as nothing else about the inode moved.
 */
export function rebaseline(done: Verified, rest: Verified[], ctx: ApplyContext): void {
  for (const w of rest) {
    if (w.d.server !== done.d.server || w.st1.ino !== done.st1.ino) continue;
    const { dir, name } = splitRel(w.d.path);
    const now = ctx.roots.get(ctx.serverRoots.get(w.d.server)!)!.withDirSync(dir, (dfd) => lstatIn(dfd, name));
    if (now && now.ino === w.st1.ino && now.size === w.st1.size && now.mtimeNs === w.st1.mtimeNs && now.nlink === w.st1.nlink - 1n &&
        now.mode === w.st1.mode && now.uid === w.st1.uid && now.gid === w.st1.gid) {
      w.st1 = now;
    }
  }
}

export async function linkVerified(v: Verified, canonFd: number, ctx: ApplyContext, touched: Map<string, [string, RelPath]>): Promise<Outcome> {
  const srvRootPath = ctx.serverRoots.get(v.d.server)!;
  const { dir, name } = splitRel(v.d.path);
  return ctx.roots.get(srvRootPath)!.withDir(dir, async (dfd) => {
    await rememberDirTimes(ctx, srvRootPath, dir, dfd);
    touched.set(`${srvRootPath}\0${dir}`, [srvRootPath, dir]);
    let tmp: string | null = null;
    let swapped = false;
    try {
      // Linked from the open shared file itself: no name can be swapped under it. The
      // temporary name is ours only once this succeeds (EEXIST: someone else's file).
      linkFd(canonFd, dfd, v.tmp);
      tmp = v.tmp;
      afterTmpLink();
      faultPoint();
      const st2 = lstatIn(dfd, name);
      if (!st2 || !sameSignatureStats(v.st1, st2)) return skip('changed', 'written after it was compared');
      if (exchangeAt(dfd, tmp, name)) {
        // The names are swapped: the file's name is on the shared inode, the temporary name
        // on the server's own inode, which nothing freed yet. If that is not the inode
        // verified, as it was (the exchange moved its ctime: mode, size and mtime tell),
        // a write or a replacement landed since the check: swap back, the file as written.
        // Until the old inode is gone or back, only recover may touch the temporary name.
        swapped = true;
        faultPoint();
        afterExchange(at(dfd, tmp));
        const old = lstatIn(dfd, tmp);
        if (!old || !sameButCtime(v.st1, old)) {
          exchangeAt(dfd, tmp, name);
          swapped = false;
          faultPoint();
          return skip('changed', 'written while it was replaced');
        }
        // Freeing the old inode is the filesystem's slow part: in libuv's pool, and an unlink
        // frees it after letting go of the folder's lock (a rename frees it holding the lock).
        try {
          await fsp.unlink(at(dfd, tmp));
        } catch (err) {
          if (!isErrno(err, 'ENOENT')) {
            exchangeAt(dfd, tmp, name); // the file goes back to its own inode, whole
            swapped = false;
            throw err;
          }
        }
        swapped = false;
      } else {
        // Renaming over a file frees its inode: ~0.1 ms of filesystem work here. In libuv's
        // pool, several inodes' renames run at once.
        await fsp.rename(at(dfd, tmp), at(dfd, name));
      }
      tmp = null;
      faultPoint();
      // The server's inode is freed with its last name: counted once, apparent and on disk.
      const last = v.st1.nlink === 1n;
      return { kind: 'unified', bytesSaved: last ? Number(v.st1.size) : 0, diskSaved: last ? Number(v.st1.blocks) * 512 : 0 };
    } catch (err) {
      if (isErrno(err, 'EXDEV')) return skip('otherFilesystem', oneLine(err));
      if (isErrno(err, 'ENOENT') && tmp !== null) return skip('changed', 'removed while it was replaced');
      if (isErrno(err, 'EMLINK')) return skip('linkLimit', 'the shared copy has the most links the filesystem allows; this copy is shared from now on');
      return skip('error', oneLine(err));
    } finally {
      // A name that cannot go now (a read-only remount) stays journaled: recover removes it,
      // or, on the server's own inode (swapped), puts it back.
      if (tmp !== null && (swapped || !(await dropTmp(dfd, tmp)))) ctx.stuckTmps?.add(v.tmp);
    }
  });
}


/** The inode verified, unchanged but for its ctime (which a rename moves). */
function sameButCtime(a: StatLite, b: StatLite): boolean {
  return a.ino === b.ino && a.dev === b.dev && a.size === b.size && a.mtimeNs === b.mtimeNs && a.mode === b.mode &&
    a.uid === b.uid && a.gid === b.gid && a.nlink === b.nlink;
}
