// The shared types of the pipeline: what a scan finds (FileRecord, ScanEntry), what the
// planner takes and gives (PlanRoot, PlanInput, Decision with its SkipReason), what a link
// replaced (LinkRecord), and the options of a run. Types only (and the list of skip
// reasons): every stage imports from here, and this module imports no stage, so the pure
// planner needs nothing from the store or the scan.
import type { RelPath } from './fsx/rootdir.js';
import type { ProgressSink } from './progress.js';

/** How a server file shares the reference's content (CommonOptions.method). */
export type Method = 'link' | 'reflink';

export interface CommonOptions {
  reference: string;
  servers: string[];
  /** Package names, or 'all' for every package installed in the reference. */
  packages: string[] | 'all';
  vserversDir?: string;
  db?: string;
  rpm?: string;
  concurrency?: number;
  /**
   * Files in the report: 1 lists the files linked (or restored), and those that failed or
   * changed under way; 2 lists every file with its decision and reason.
   */
  verbose?: number;
  /** Which package database to read: detected per root by default. */
  packageManager?: 'auto' | 'rpm' | 'dpkg' | 'none';
  /** Tree mode: every regular file of the roots is a candidate, minus the excludes. */
  allFiles?: boolean;
  /** Tree mode: patterns to leave out, and files of patterns. */
  exclude?: string[];
  excludeFrom?: string[];
  /** Tree mode: start from the built-in exclude list (default true). */
  defaultExcludes?: boolean;
  /** Move an unreadable index aside and start a new one. */
  rebuildIndex?: boolean;
  /** Warnings and progress lines (stderr in the CLI). */
  log?: (line: string) => void;
  /** Progress of each phase (a bar on a terminal in the CLI). */
  progress?: ProgressSink;
  /** Phase timings (VUNIFY_TRACE=1 in the CLI). */
  trace?: (phase: string, ms: number) => void;
  /** link (default): hard links, immutable; reflink: shared extents, private inodes (btrfs, XFS). */
  method?: Method;
  /** Share what the reference lacks among the servers, through a host-only pool (see pool/store.ts). */
  pool?: boolean;
  /** The pool folder (default: VSERVERS_DIR/.vunify-pool); implies pool. */
  poolDir?: string;
}

/** UnifyOptions but for engine.ts's onPlan hook, whose type needs the open farm's (prepare.ts). */
export interface UnifyFlags extends CommonOptions {
  dryRun?: boolean;
  /** Set the immutable attribute on shared inodes (default true). */
  immutable?: boolean;
  /** Scan in full: no quick rescan, and nothing taken over from the last complete unify. */
  full?: boolean;
  /** The caller tried the quick rescan already (the CLI does, before loading this module). */
  quickTried?: boolean;
}

export interface FileRecord {
  dev: string;
  ino: string;
  size: number;
  mode: number; // st_mode, type bits included
  uid: number;
  gid: number;
  mtimeNs: string;
  ctimeNs: string;
  nlink: number;
  /** BLAKE3 hex of the content; '' while not read (no file of the same size to pair with). */
  hash: string;
  /** BLAKE3 hex of the sorted extended attributes, '' when there are none. */
  xattrs: string;
  /** The package that lists the file, when known. */
  pkg?: string;
}

/** What a server file was before vunify replaced it with a link: enough for an exact undo. */
export interface LinkRecord {
  refRoot: string;
  refPath: RelPath;
  dev: string;
  ino: string; // the shared inode
  mode: number;
  uid: number;
  gid: number;
  atimeNs: string;
  mtimeNs: string;
  xattrs: Record<string, string>; // name -> base64
  size: number;
  pkg?: string;
  /** BLAKE3 of the shared content, as compared when linking (verify checks against it). */
  hash?: string;
  /** Inode flags undo puts back (lsattr's d, A...; apply.ts KEPT_FLAGS), when any were set. */
  flags?: number;
  /** 'reflink': the server file kept its own inode (dev, ino: its own) and got the reference's extents. */
  method?: 'reflink';
  linkedAt: string;
}

export type ScanEntry =
  | { kind: 'file'; rec: FileRecord }
  | { kind: 'missing' | 'notRegular' | 'symlinkInPath' | 'error'; detail?: string }
  /** Package databases list folders too: not files, and no decision is reported for them. */
  | { kind: 'folder' };

export const SKIP_REASONS = [
  'config', // a %config file or dpkg conffile: private by design
  'packageMissing', // the server lacks the reference's package (counted per reference file)
  'notInReference', // no file of the reference's packages has this content and metadata
  'missing', // no such file (in the server or the reference)
  'notRegular', // a symlink, device... (folders a package lists get no decision)
  'symlinkInPath', // a folder on the way is a symlink: never followed
  'empty', // nothing to save
  'otherFilesystem', // not on the reference's filesystem (a mount inside a root)
  'contentDiffers',
  'metadataDiffers', // mode, owner, mtime or extended attributes
  'immutable', // immutable before vunify came: left as it is
  'appendOnly', // append-only file or folder (lsattr's a): a link could be made but never renamed
  'inUse', // the reference file is open for writing: sharing it now would share those writes
  'otherNames', // the server's inode has names this run does not link: relinking some would split it and save nothing
  'linkLimit', // the shared inode has the most links the filesystem allows: this copy is shared instead
  'changed', // changed between comparison and link: left untouched
  'error',
] as const;
export type SkipReason = (typeof SKIP_REASONS)[number];

export interface Owned { pkg: string; config: boolean }

/** A root's candidates by path: a Map, or the compact OwnedTable (owned-table.ts) a run keeps. */
export interface OwnedPaths extends Iterable<[RelPath, Owned]> {
  readonly size: number;
  get(k: RelPath): Owned | undefined;
  has(k: RelPath): boolean;
  delete(k: RelPath): boolean;
  keys(): Iterable<RelPath>;
}

export interface PlanRoot {
  name: string;
  root: string;
  entries: Map<RelPath, ScanEntry>;
  /** Files that the root's packages list, by path. */
  owned: OwnedPaths;
  /** Names of installed packages. */
  installed: Set<string>;
}

export interface PlanInput {
  reference: PlanRoot;
  servers: PlanRoot[];
  /**
   * Reference paths by content hash (from the index's content table), for files whose
   * twin in the reference lives at another path: renamed, moved, or in another package.
   */
  refByHash?: Map<string, RelPath[]>;
  /** Tree mode: files, not packages; no package can be missing. */
  tree?: boolean;
  /** reflink: each server file keeps its inode, so its metadata need not match. */
  method?: 'link' | 'reflink';
  /** The reference paths whose packageMissing lines this plan gives (a slice's); default all. */
  refPaths?: RelPath[];
}

interface Base { server: string; path: RelPath; pkg: string }
export type Decision =
  | (Base & { kind: 'link'; refPath: RelPath; ref: FileRecord; srv: FileRecord })
  | (Base & { kind: 'already'; refPath: RelPath; ref: FileRecord; srv: FileRecord })
  | (Base & { kind: 'skip'; reason: SkipReason; detail?: string; size?: number });
