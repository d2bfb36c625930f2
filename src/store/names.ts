// Every name vunify gives to something on disk, in one place: the index and the files it
// keeps beside it (INDEX.quick, INDEX.run-lock...), the run locks, and the temporary names
// it makes inside server roots and elsewhere. A new file vunify writes gets its name here.
// Imports nothing: any module may use it.

/** The index (`--db`, VUNIFY_DB). */
export const DEFAULT_DB = '/var/lib/vunify/index';

/** Per-root run locks: on the host, where no vserver reaches (VUNIFY_LOCK_DIR for tests). */
export const DEFAULT_LOCK_DIR = '/run/vunify/locks';
export const lockDir = (): string => process.env.VUNIFY_LOCK_DIR || DEFAULT_LOCK_DIR;
/** A root's lock file in lockDir(), keyed by the root folder's identity (a bind mount locks the same file). */
export const rootLockName = (dev: bigint | number | string, ino: bigint | number | string): string => `${dev}-${ino}.lock`;

/** The index's own lock (an flock): one run per index. */
export const runLockPath = (dbPath: string): string => `${dbPath}.run-lock`;

/** The quick-rescan file (store/quick-file.ts), and the temporary name it is written under. */
export const quickPath = (dbPath: string): string => `${dbPath}.quick`;
export const quickTmpPath = (dbPath: string, pid: number): string => `${quickPath(dbPath)}.tmp-${pid}`;

/** Marks a failed LMDB commit beside the index: the next run stops at open. */
export const FAILED_MARK_SUFFIX = '.write-failed';
export const failedMarkPath = (dbPath: string): string => dbPath + FAILED_MARK_SUFFIX;
/** Where an upgrade from schema 1 writes the new index before it replaces the old. */
export const upgradePath = (dbPath: string): string => `${dbPath}.upgrade`;
/** --rebuild-index: an index that cannot be read is moved aside to this name (its -lock and .write-failed follow it). */
export const brokenPath = (dbPath: string, at: Date): string => `${dbPath}.broken-${at.toISOString().replace(/[:.]/g, '-')}`;
/** gc's compaction: the compacted copy, and the old index while the copy takes its place. */
export const compactPath = (dbPath: string, pid: number): string => `${dbPath}.compact-${pid}`;
export const compactOldPath = (dbPath: string, pid: number): string => `${dbPath}.old-${pid}`;

/** LMDB's own names: the data file in a folder index, and the lock file beside a one-file index. */
export const LMDB_DATA_FILE = 'data.mdb';
export const LMDB_LOCK_SUFFIX = '-lock';

/** Temporary names in server folders while linking or undoing (apply.ts), removed by recover; never candidates. */
export const TMP_PREFIX = '.vunify-tmp.';

/** The content pool's folder name. */
export const POOL_DIR_NAME = '.vunify-pool';

/** The private folder (in os.tmpdir()) where a root's RPM database is copied to be queried. */
export const RPMDB_TMP_PREFIX = 'vunify-rpmdb-';

/** writeFileAtomic's temporary name in the file's folder (a leading dot and another ending: node_exporter reads only *.prom). */
export const atomicTmpName = (base: string, pid: number): string => `.${base}.${pid}.tmp`;
