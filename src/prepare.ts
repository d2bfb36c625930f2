// The candidates stage: opens the roots and the index (every check that can fail on bad
// input runs here, before the first change to any vserver), reads each root's package
// database or walks its tree, and says which files of each root take part.
import fs from 'node:fs';
import path from 'node:path';
import type { CommonOptions, Owned, OwnedPaths, PlanRoot, SkipReason } from './model.js';
import { OwnedTable } from './owned-table.js';
import { VunifyError, isErrno, oneLine } from './errors.js';
import { RootDir, type RelPath } from './fsx/rootdir.js';
import { isReadOnly, isWithin, placeOf, sameId } from './fsx/mounts.js';
import { getInodeFlags } from './fsx/sys.js';
import { lockJournalRoots, takeLock, takeRootLocks, type RootLocks } from './lock.js';
import { DEFAULT_VSERVERS_DIR, serverPath } from './paths.js';
import { DEFAULT_DB } from './store/names.js';
import type { QuickOptions } from './quick/check.js';
import { fileSignature, inputsDigest } from './quick/inodes.js';
import { quickSurvey, type QuickSurvey } from './quick/survey.js';
import { afterWalk } from './fault.js';
import { recover } from './recover.js';
import { DpkgSource } from './sources/dpkg.js';
import { RpmSource } from './sources/rpm.js';
import { DEFAULT_EXCLUDES, makeExcluder, readExcludeFile, walkTree, type Excluder, type WalkSeen } from './sources/tree.js';
import type { PackageListing, PackageSource, SourceInputs } from './sources/types.js';
import { Index, type FileRecord } from './store/index-db.js';
import { dropQuick } from './store/quick-file.js';
import { refuseWithoutReflink } from './reflink.js';
import { POOL_DIR_NAME, dropPoolTmps, openPool, poolDirOf } from './pool/store.js';

export interface Root { name: string; dir: RootDir; source: PackageSource | null }

async function openSource(dir: RootDir, opts: CommonOptions): Promise<PackageSource | null> {
  const pm = opts.packageManager ?? 'auto';
  if (pm === 'none') return null;
  if (pm === 'rpm' || pm === 'auto') {
    const rpm = await RpmSource.open(dir, opts.rpm ?? 'rpm');
    if (rpm || pm === 'rpm') return rpm;
  }
  return DpkgSource.open(dir);
}


async function openRoot(token: string, opts: CommonOptions): Promise<Root> {
  const vserversDir = opts.vserversDir ?? DEFAULT_VSERVERS_DIR;
  if (token === '' || token === '.' || token === '..') throw new VunifyError('BAD_SERVER', 'not a server name', `'${token}'`);
  const p = serverPath(token, vserversDir);
  let dir: RootDir;
  try {
    const st = fs.statSync(p);
    if (!st.isDirectory()) throw new VunifyError('BAD_SERVER', 'not a folder', p);
    dir = await RootDir.open(p);
  } catch (err) {
    if (err instanceof VunifyError) throw err;
    if (isErrno(err, 'ENOENT')) throw new VunifyError('BAD_SERVER', `no such server (looked for ${p}; give --vservers-dir, or a path)`, token);
    throw new VunifyError('BAD_SERVER', oneLine(err), p);
  }
  const source = await openSource(dir, opts);
  if (!source && !opts.allFiles) {
    await dir.close();
    const pm = opts.packageManager ?? 'auto';
    const what = pm === 'rpm' ? 'no RPM database (var/lib/rpm/rpmdb.sqlite or Packages)'
      : pm === 'dpkg' ? 'no dpkg database (var/lib/dpkg/status)'
      : pm === 'none' ? '--package-manager none needs --all-files'
      : 'no package database (RPM: var/lib/rpm; dpkg: var/lib/dpkg/status); use --all-files for trees without one';
    throw new VunifyError('NO_PACKAGE_DB', what, p);
  }
  return { name: token, dir, source };
}

/**
 * Roots must be distinct and apart: the same folder twice (a bind mount too), one inside
 * another, or `/` would let a run link or undo a root's files through another's name.
 */
function checkRootsApart(ref: Root, servers: Root[]): void {
  const all = [ref, ...servers];
  const top = fs.statSync('/', { bigint: true });
  const places = all.map((r) => placeOf(r.dir.rootFd));
  const what = (i: number) => (i === 0 ? 'the reference ' : 'the server ') + (all[i].name === all[i].dir.path ? all[i].name : `${all[i].name} (${all[i].dir.path})`);
  all.forEach((r, i) => {
    if (sameId(places[i].id, top)) throw new VunifyError('BAD_SERVER', 'is the host\'s root folder (/), which holds every vserver', r.name);
  });
  for (let i = 1; i < all.length; i++) {
    for (let j = 0; j < i; j++) {
      const culprit = all[i].name;
      if (sameId(places[i].id, places[j].id)) {
        throw new VunifyError('BAD_SERVER', j === 0 ? 'is the reference; a server cannot be unified with itself'
          : `is named twice (also as '${all[j].name}')`, culprit);
      }
      if (isWithin(places[i], places[j])) throw new VunifyError('BAD_SERVER', `is inside ${what(j)}; roots must not nest`, culprit);
      if (isWithin(places[j], places[i])) throw new VunifyError('BAD_SERVER', `contains ${what(j)}; roots must not nest`, culprit);
    }
  }
}

/**
 * The pool must be outside every root (no tenant may reach it by any path), hold none, and
 * be on the reference's filesystem. A pool not made yet is judged by its nearest folder.
 */
function checkPoolApart(poolPath: string, roots: Root[]): void {
  let at = poolPath;
  let exists = true;
  for (;;) {
    try {
      fs.statSync(at);
      break;
    } catch (err) {
      if (!isErrno(err, 'ENOENT') || path.dirname(at) === at) throw new VunifyError('BAD_POOL', oneLine(err), poolPath);
      exists = false;
      at = path.dirname(at);
    }
  }
  const fd = fs.openSync(at, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    const place = placeOf(fd);
    for (const r of roots) {
      const rp = placeOf(r.dir.rootFd);
      if (sameId(place.id, rp.id) && exists) throw new VunifyError('BAD_POOL', `is the root of ${r.name}; the pool must be outside every root`, poolPath);
      if (sameId(place.id, rp.id) || isWithin(place, rp)) throw new VunifyError('BAD_POOL', `is inside the root of ${r.name}; the pool must be outside every root`, poolPath);
      if (exists && isWithin(rp, place)) throw new VunifyError('BAD_POOL', `holds the root of ${r.name}; the pool must be outside every root`, poolPath);
    }
    if (place.id.dev !== roots[0].dir.dev) {
      throw new VunifyError('BAD_POOL', `is on another filesystem than the reference ${roots[0].name}; hard links cannot cross filesystems`, poolPath);
    }
  } finally {
    fs.closeSync(fd);
  }
}

export interface Farm {
  ref: Root; servers: Root[]; index: Index; lockFd: number;
  /** The roots' own locks, held by runs that change them. */
  rootLocks: RootLocks | null;
  /** What the last complete unify left that is still as it was (see quickSurvey). */
  survey: QuickSurvey | null;
  /** The index's last transaction id once opened and recovered. */
  txnAtOpen: number;
  /** --pool: the pool folder's path, and the folder once it exists (a dry run does not make it). */
  poolPath: string | null;
  pool: RootDir | null;
}

/** The roots and the index, checked and locked (roots only when changesFarm), the journal recovered. */
export async function openFarm(opts: CommonOptions, needImmutable: boolean, changesFarm: boolean, survey: boolean): Promise<Farm> {
  if (opts.servers.length === 0) throw new VunifyError('USAGE', 'name at least one server besides the reference');
  if (opts.allFiles && (opts.packages === 'all' || opts.packages.length > 0)) {
    throw new VunifyError('USAGE', '--all-files takes every file: name no packages and leave out --all-packages');
  }
  if (!opts.allFiles && opts.packages !== 'all' && opts.packages.length === 0) {
    throw new VunifyError('USAGE', 'name packages after --, or use --all-packages (or --all-files)');
  }
  const opened: Root[] = [];
  try {
    for (const token of [opts.reference, ...opts.servers]) opened.push(await openRoot(token, opts));
    const [ref, ...servers] = opened;
    checkRootsApart(ref, servers);
    const poolPath = poolDirOf(opts);
    if (poolPath) {
      if (opts.method === 'reflink') throw new VunifyError('USAGE', '--pool shares inodes: it does not go with --method reflink');
      checkPoolApart(poolPath, opened);
    }
    for (const s of servers) {
      if (s.dir.dev !== ref.dir.dev) {
        throw new VunifyError('OTHER_FILESYSTEM', `is on another filesystem than the reference ${ref.name}; hard links cannot cross filesystems`, s.dir.path);
      }
    }
    if (needImmutable) {
      try {
        getInodeFlags(ref.dir.rootFd);
      } catch (err) {
        throw new VunifyError('NO_IMMUTABLE', `the filesystem cannot hold the immutable attribute (${oneLine(err)}); use --no-immutable to link without it`, ref.dir.path);
      }
    }
    if (opts.method === 'reflink') refuseWithoutReflink(opened.map((r) => ({ path: r.dir.path, rootFd: r.dir.rootFd })));
    if (changesFarm) {
      // Said once, before any change: otherwise every file would fail with EROFS on its own.
      const ro = opened.find((r) => isReadOnly(r.dir.rootFd));
      if (ro) throw new VunifyError('BAD_SERVER', 'is on a read-only filesystem; nothing was changed', ro.dir.path);
    }
    // Before the index's lock: a run refused here leaves nothing, not even an index folder.
    const pool = poolPath ? await openPool(poolPath, changesFarm) : null;
    const lockable = [...opened.map((r) => ({ path: r.dir.path, fd: r.dir.rootFd })), ...(pool ? [{ path: pool.path, fd: pool.rootFd }] : [])];
    const rootLocks = changesFarm ? takeRootLocks(lockable) : null;
    try {
      if (pool && changesFarm) dropPoolTmps(pool);
      return { ...await openIndex(opts, opened, rootLocks, changesFarm, survey), poolPath, pool };
    } catch (err) {
      rootLocks?.release();
      await pool?.close();
      throw err;
    }
  } catch (err) {
    for (const r of opened) await r.dir.close();
    throw err;
  }
}

async function openIndex(opts: CommonOptions, opened: Root[], rootLocks: RootLocks | null, changesFarm: boolean, survey: boolean): Promise<Omit<Farm, 'pool' | 'poolPath'>> {
  const [ref, ...servers] = opened;
  const dbPath = path.resolve(opts.db ?? DEFAULT_DB);
  const lockFd = takeLock(dbPath);
  try {
    // Read before the quick file goes: files still as the last complete run left them.
    const t0 = performance.now();
    const surveyed = survey ? quickSurvey(opts as QuickOptions, dbPath, opened.map((r) => r.dir.path)) : null;
    if (surveyed) opts.trace?.(`survey: ${surveyed.words.size} inodes unchanged`, performance.now() - t0);
    // Before any change: from here on only a full rescan can tell what the farm holds.
    if (changesFarm) dropQuick(dbPath);
    const index = await Index.open(dbPath, { rebuild: opts.rebuildIndex, upgrade: true });
    try {
      const recovering = lockJournalRoots(index, rootLocks ?? undefined);
      try {
        await recover(index, opts.log);
      } finally {
        recovering.release();
      }
    } catch (err) {
      await index.close();
      throw err;
    }
    // Before this run writes anything: equal to the survey's, no run wrote since the capture.
    // An upgraded index is a new file: the survey's transaction id and records were the old one's.
    return { ref, servers, index, lockFd, rootLocks, survey: index.upgraded ? null : surveyed, txnAtOpen: index.lastTxnId() };
  } catch (err) {
    fs.closeSync(lockFd);
    throw err;
  }
}


export async function closeFarm(f: Farm): Promise<void> {
  await f.index.close();
  for (const r of [f.ref, ...f.servers]) await r.dir.close();
  await f.pool?.close();
  fs.closeSync(f.lockFd);
  f.rootLocks?.release();
}

/**
 * The files of a listing by path. refPaths: the reference's paths, each to itself; a path equal
 * to one takes the reference's string (the roots of a farm mostly hold the same paths, and
 * each root's own copies of them were most of the candidate lists' memory).
 */
export function ownedOf(listing: PackageListing, refPaths?: Map<RelPath, RelPath>): { owned: OwnedTable; installed: Set<string> } {
  const owned = new Map<RelPath, Owned>();
  const installed = new Set<string>();
  for (const p of listing.packages) {
    installed.add(p.name);
    for (const f of p.files) {
      if (f.ghost) continue;
      const prev = owned.get(f.path);
      // A path listed by two packages counts as config when either says so.
      owned.set(refPaths?.get(f.path) ?? f.path, { pkg: prev?.pkg ?? p.name, config: f.config || (prev?.config ?? false) });
    }
  }
  return { owned: OwnedTable.of(owned), installed };
}

export interface Prepared {
  farm: Farm;
  refPlan: PlanRoot;
  serverPlans: PlanRoot[];
  packages: string[];
  notes: Map<string, string[]>;
  /** Tree mode: no per-package whitelist. */
  tree: boolean;
  /** For the quick-rescan file: each root's package database state, and what tree mode walked. */
  seen: Map<string, { inputs: SourceInputs; inputsDigest: string; inputFiles: Array<[RelPath, string]>; walk?: WalkSeen }>;
  /**
   * Per server, the files taken as already unified from the survey (path -> inode): not
   * scanned nor planned again.
   */
  settled: Map<string, Map<RelPath, number>>;
  /** Per server, how many of its settled files are skips (settleSkips), by reason: the others are already unified. */
  settledSkips: Map<string, Partial<Record<SkipReason, number>>>;
  /**
   * File records written by apply (see captureAfter), of paths with no file entry, and
   * removals. A scanned file's new record replaces its entry's, and the old one can go.
   */
  written: Map<string, Map<RelPath, FileRecord | null>>;
  excluded?: Excluder;
  /** The servers went a slice at a time: their entries are gone, their records are the index's. */
  sliced?: boolean;
}

export async function prepare(opts: CommonOptions, needImmutable: boolean, changesFarm = false, survey = false): Promise<Prepared> {
  const farm = await openFarm(opts, needImmutable, changesFarm, survey);
  try {
    // Known to the index before its first entry: recover and gc then find it.
    if (farm.pool && changesFarm) await farm.index.putRoot(farm.pool.path, { name: POOL_DIR_NAME, lastRole: 'pool' });
    await dropVanishedRoots(farm.index, opts.log);
    // Taken before the databases are read: a change while they are read then shows.
    const seen: Prepared['seen'] = new Map();
    for (const r of [farm.ref, ...farm.servers]) {
      const inputs = r.source?.inputs ?? { folders: [], files: [] };
      seen.set(r.dir.path, {
        inputs, inputsDigest: inputsDigest(r.dir.rootFd, inputs),
        inputFiles: inputs.files.map((rel) => [rel, fileSignature(r.dir.rootFd, rel)]),
      });
    }
    const p = opts.allFiles ? await prepareTree(farm, opts, seen) : await preparePackages(farm, opts);
    p.seen = seen;
    return p;
  } catch (err) {
    await closeFarm(farm);
    throw err;
  }
}

async function preparePackages(farm: Farm, opts: CommonOptions): Promise<Prepared> {
  const pooling = farm.poolPath !== null;
  const refListing = await farm.ref.source!.list(opts.packages);
  // With a pool, a package the reference lacks is still shared among the servers that hold it.
  const elsewhere = new Set<string>();
  if (refListing.missing.length > 0 && pooling) {
    for (const s of farm.servers) for (const p of (await s.source!.list(refListing.missing)).packages) elsewhere.add(p.name);
  }
  const nowhere = refListing.missing.filter((m) => !elsewhere.has(m));
  if (nowhere.length > 0) {
    throw new VunifyError('BAD_PACKAGE', pooling ? `not installed in the reference ${farm.ref.name} nor in any server` : `not installed in the reference ${farm.ref.name}`, nowhere.join(', '));
  }
  const packages = [...new Set([...refListing.packages.map((p) => p.name), ...elsewhere])];
  const refVersions = new Map(refListing.packages.map((p) => [p.name, p.version]));
  const ref = ownedOf(refListing);
  const refPaths = pathTable(ref.owned);
  const notes = new Map<string, string[]>();
  const serverPlans: PlanRoot[] = [];
  for (const s of farm.servers) {
    // --all-packages with a pool: every package of the server, the reference's or not.
    const wanted = pooling && opts.packages === 'all' ? 'all' : packages;
    const listing = wanted === 'all' || wanted.length ? await s.source!.list(wanted) : { packages: [], missing: [], rejectedPaths: 0 };
    const n: string[] = [];
    for (const m of listing.missing) n.push(`package ${m} is not installed`);
    for (const p of listing.packages) {
      const refVersion = refVersions.get(p.name);
      if (refVersion !== undefined && refVersion !== p.version) n.push(`package ${p.name} is ${p.version} here, ${refVersion} in the reference`);
    }
    if (listing.rejectedPaths) n.push(`${listing.rejectedPaths} unsafe path(s) in the package database ignored`);
    notes.set(s.name, n);
    const o = ownedOf(listing, refPaths);
    serverPlans.push({ name: s.name, root: s.dir.path, entries: new Map(), owned: o.owned, installed: o.installed });
  }
  return {
    farm, packages, notes, serverPlans, tree: false, seen: new Map(), written: new Map(), settled: new Map(), settledSkips: new Map(),
    refPlan: { name: farm.ref.name, root: farm.ref.dir.path, entries: new Map(), owned: ref.owned, installed: ref.installed },
  };
}

/** Tree mode: every regular file not excluded; config files of a root's packages stay out. */
async function prepareTree(farm: Farm, opts: CommonOptions, seen: Prepared['seen']): Promise<Prepared> {
  const patterns = [
    ...(opts.defaultExcludes === false ? [] : DEFAULT_EXCLUDES),
    ...(opts.exclude ?? []),
    ...(opts.excludeFrom ?? []).flatMap(readExcludeFile),
  ];
  const exclude = makeExcluder(patterns);
  const notes = new Map<string, string[]>();
  const planOf = async (r: Root, refPaths?: Map<RelPath, RelPath>): Promise<PlanRoot> => {
    const walk: WalkSeen = { folders: new Set(), skipped: new Set(), digests: new Map() };
    const t0 = performance.now();
    const files = await walkTree(r.dir, exclude, walk, farm.survey?.listings.get(r.dir.path));
    opts.trace?.(`walk ${r.name}: ${walk.folders.size} folders, ${files.length} files`, performance.now() - t0);
    seen.get(r.dir.path)!.walk = walk;
    const known = r.source ? ownedOf(await r.source.list('all')).owned : null;
    // The walk's order is the table's; an equal path takes the reference's string.
    for (let i = 0; i < files.length; i++) files[i] = refPaths?.get(files[i]) ?? files[i];
    const owned = OwnedTable.sorted(files, (f) => known?.get(f) ?? UNOWNED);
    return { name: r.name, root: r.dir.path, entries: new Map(), owned, installed: new Set() };
  };
  const refPlan = await planOf(farm.ref);
  const refPaths = pathTable(refPlan.owned);
  const serverPlans: PlanRoot[] = [];
  for (const s of farm.servers) serverPlans.push(await planOf(s, refPaths));
  afterWalk();
  return { farm, packages: [], notes, serverPlans, refPlan, tree: true, seen, written: new Map(), settled: new Map(), settledSkips: new Map(), excluded: exclude };
}

/** The reference's paths, each to itself: the string object servers' equal paths can share (ownedOf). */
function pathTable(refOwned: OwnedPaths): Map<RelPath, RelPath> {
  return new Map([...refOwned.keys()].map((k) => [k, k]));
}

/** The package name given to tree-mode files that no package database lists. */
export const TREE_PKG = '-';
const UNOWNED: Owned = Object.freeze({ pkg: TREE_PKG, config: false });

export const linkable = (o: Owned | undefined) => o !== undefined && !o.config;

/** Roots the index knows whose folder is gone (a deleted vserver): their records go. */
export async function dropVanishedRoots(index: Index, log?: (l: string) => void): Promise<number> {
  let n = 0;
  for (const { root, rec } of index.allRoots()) {
    let isDir = false;
    try { isDir = fs.statSync(root).isDirectory(); } catch (err) { if (!isErrno(err, 'ENOENT', 'ENOTDIR')) continue; }
    if (isDir) continue;
    const files = await index.dropRoot(root);
    log?.(`dropped ${files} index entries of ${rec.name} (${root}): the folder is gone`);
    n++;
  }
  return n;
}

export const candidatePaths = (r: PlanRoot) => [...r.owned].filter(([, o]) => !o.config).map(([k]) => k);

export function rootsOf(p: Prepared): Array<[Root, PlanRoot, 'reference' | 'server']> {
  return [
    [p.farm.ref, p.refPlan, 'reference'],
    ...p.farm.servers.map((s, i) => [s, p.serverPlans[i], 'server'] as [Root, PlanRoot, 'server']),
  ];
}
