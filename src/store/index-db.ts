// The LMDB index: the one module that knows its on-disk layout.
//
//   meta      'schema' -> SCHEMA_VERSION
//   files     [root, path] -> FileRecord          stat signature + content address
//   content   [hash, root, path] -> null          who holds a content (prefix scans)
//   links     [serverRoot, path] -> LinkRecord    links vunify made, with what it replaced
//   inodes    'dev:ino' -> InodeRecord            inodes vunify made immutable
//   roots     root -> RootRecord                  every root seen: name, last scan
//   journal   key -> JournalEntry                 changes under way (see recover.ts)
//
// Paths are binary strings (one char per byte). Times are nanosecond decimal strings,
// dev and ino decimal strings: all exact.
import fs from 'node:fs';
import path from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { VunifyError } from '../errors.js';
import type { RelPath } from '../fsx/rootdir.js';

export const SCHEMA_VERSION = 1;

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
  linkedAt: string;
}

export interface InodeRecord {
  root: string;
  path: RelPath;
  setAt: string;
}

/**
 * A change under way, written durably before the change starts and removed once it is
 * durable: after a crash, recover.ts finishes or rolls back each one it finds.
 */
export type JournalEntry =
  | { op: 'link'; root: string; path: RelPath; tmp: string; dev: string; ino: string }
  | { op: 'undo'; root: string; path: RelPath; tmp: string; dev: string; ino: string }
  | { op: 'flag'; root: string; path: RelPath; dev: string; ino: string };

export const journalKey = (e: JournalEntry) => `${e.op}\0${e.op === 'flag' ? `${e.dev}:${e.ino}` : `${e.root}\0${e.path}`}`;

export interface RootRecord {
  name: string;
  /** When the last scan of this root ended, and how long it took. */
  lastScanAt?: string;
  lastScanMs?: number;
  lastRole?: 'reference' | 'server';
}

const LMDB_MAGIC = 0xbeefc0de;

/** lmdb-js rejects a failed commit's writes with a generic error; the cause comes on a
 * second promise, rejected in the same callback (or never). */
async function commitDetail(err: unknown): Promise<unknown> {
  const detail = (err as { commitError?: Promise<unknown> })?.commitError;
  if (!detail) return err;
  return Promise.race([
    detail.then(() => err, (cause: unknown) => cause),
    new Promise((resolve) => setTimeout(resolve, 50, err).unref()),
  ]);
}

/**
 * A failed LMDB commit can leave the file unwritable while it still opens (seen once at
 * 500,000 files: a freelist assertion inside LMDB). The failure is marked in a file beside
 * the index so the next run stops at open, where --rebuild-index can move both aside.
 */
const failedMarkPath = (dbPath: string) => `${dbPath}.write-failed`;

function failedMark(dbPath: string): string | null {
  try {
    return fs.readFileSync(failedMarkPath(dbPath), 'utf8').trim().split('\n')[0] || 'no reason recorded';
  } catch {
    return null;
  }
}

/**
 * LMDB trusts its file: a damaged one can crash the process instead of failing. Check the
 * magic number of the first meta page before opening, so damage is an error message.
 */
function checkLmdbFile(dbPath: string): void {
  const mark = failedMark(dbPath);
  if (mark !== null) {
    throw new VunifyError('INDEX', `a write to the index failed earlier (${mark}); run with --rebuild-index to start a new one`, dbPath);
  }
  let data: string;
  try {
    data = fs.statSync(dbPath).isDirectory() ? path.join(dbPath, 'data.mdb') : dbPath;
  } catch {
    return; // a new index
  }
  let fd: number;
  try {
    fd = fs.openSync(data, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new VunifyError('INDEX', `cannot read the index (${(err as Error).message}); run with --rebuild-index to start a new one`, dbPath);
  }
  try {
    const head = Buffer.alloc(32);
    const n = fs.readSync(fd, head, 0, 32, 0);
    if (n === 0) return;
    // The meta page header is 16 bytes in LMDB 0.9 and 24 in the 1.0 format lmdb-js writes.
    if (n < 32 || (head.readUInt32LE(16) !== LMDB_MAGIC && head.readUInt32LE(24) !== LMDB_MAGIC)) {
      throw new VunifyError('INDEX', 'the index is damaged (not an LMDB file); run with --rebuild-index to start a new one', dbPath);
    }
  } finally {
    fs.closeSync(fd);
  }
}

export class Index {
  private constructor(
    readonly path: string,
    private readonly env: RootDatabase,
    private readonly files: Database<FileRecord, [string, string]>,
    private readonly content: Database<null, [string, string, string]>,
    private readonly links: Database<LinkRecord, [string, string]>,
    private readonly inodes: Database<InodeRecord, string>,
    private readonly roots: Database<RootRecord, string>,
    private readonly journal: Database<JournalEntry, string>,
  ) {}

  /**
   * Opens (or creates) the index. With rebuild, an index that cannot be opened is moved
   * aside to PATH.broken-TIME and a new one is made: it only costs a rescan.
   */
  static open(dbPath: string, opts: { rebuild?: boolean } = {}): Index {
    try {
      return Index.openOnce(dbPath);
    } catch (err) {
      if (!opts.rebuild || !(err instanceof VunifyError)) throw err;
      const aside = `${dbPath}.broken-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      for (const suffix of ['', '-lock', '.write-failed']) {
        if (fs.existsSync(dbPath + suffix)) fs.renameSync(dbPath + suffix, aside + suffix);
      }
      return Index.openOnce(dbPath);
    }
  }

  private static openOnce(dbPath: string): Index {
    let env: RootDatabase;
    checkLmdbFile(dbPath);
    try {
      fs.mkdirSync(path.dirname(dbPath), { recursive: true, mode: 0o700 });
      env = open({ path: dbPath, compression: false, mapSize: 2 ** 34 });
    } catch (err) {
      throw new VunifyError('INDEX', `cannot open the index (${(err as Error).message}); run with --rebuild-index to start a new one`, dbPath, { cause: err });
    }
    try {
      const meta = env.openDB<number, string>({ name: 'meta' });
      const schema = meta.get('schema');
      if (schema === undefined) meta.putSync('schema', SCHEMA_VERSION);
      else if (schema !== SCHEMA_VERSION) {
        throw new VunifyError('INDEX', `index schema ${schema} is not the supported ${SCHEMA_VERSION}; run with --rebuild-index to start a new index`, dbPath);
      }
      return new Index(
        dbPath,
        env,
        env.openDB({ name: 'files' }),
        env.openDB({ name: 'content' }),
        env.openDB({ name: 'links' }),
        env.openDB({ name: 'inodes' }),
        env.openDB({ name: 'roots' }),
        env.openDB({ name: 'journal' }),
      );
    } catch (err) {
      void env.close();
      if (err instanceof VunifyError) throw err;
      throw new VunifyError('INDEX', `the index is unreadable (${(err as Error).message}); run with --rebuild-index to start a new one`, dbPath, { cause: err });
    }
  }

  private writeError: VunifyError | null = null;

  /**
   * Every write goes through here: a failed commit becomes one VunifyError (marked beside
   * the index when LMDB itself failed), and the promise has a handler so a write nobody
   * awaits cannot end the process with Node's unhandled-rejection trace. flush() and close()
   * rethrow it.
   */
  private guard<T>(p: Promise<T>): Promise<T> {
    const g = p.catch(async (err: unknown) => {
      throw this.failed(await commitDetail(err));
    });
    g.catch(() => undefined);
    return g;
  }

  private failed(err: unknown): VunifyError {
    if (err instanceof VunifyError) return err;
    if (!this.writeError) {
      const errno = (err as { code?: unknown })?.code;
      const reason = String((err as Error)?.message ?? err).replace(/\s+/g, ' ').trim();
      // LMDB's own codes are negative: its file may be damaged. An errno (a full disk)
      // leaves the last commit intact.
      if (typeof errno === 'number' && errno > 0) {
        this.writeError = new VunifyError('INDEX', `a write to the index failed (${reason}, errno ${errno}); the index keeps its last commit: check the space and health of its filesystem and run again`, this.path, { cause: err });
      } else {
        this.writeError = new VunifyError('INDEX', `a write to the index failed (${reason}); the index may be damaged: run with --rebuild-index to start a new one`, this.path, { cause: err });
        try {
          fs.writeFileSync(failedMarkPath(this.path), `${new Date().toISOString()} ${reason}\n`, { mode: 0o600 });
        } catch { /* the error itself still stops the run */ }
      }
    }
    return this.writeError;
  }

  getFile(root: string, rel: RelPath): FileRecord | undefined {
    return this.files.get([root, rel]);
  }

  /** Writes many file records in one transaction, keeping the content index in step. */
  /** Every file record written from now on, by `root\0path` (null: removed); see putFiles. */
  trackFiles(): Map<string, FileRecord | null> {
    this.tracked = new Map();
    return this.tracked;
  }
  private tracked: Map<string, FileRecord | null> | null = null;

  async putFiles(entries: Array<[root: string, rel: RelPath, rec: FileRecord | null]>): Promise<void> {
    if (entries.length === 0) return;
    if (this.tracked) for (const [root, rel, rec] of entries) this.tracked.set(`${root}\0${rel}`, rec);
    await this.guard(this.env.transaction(() => {
      for (const [root, rel, rec] of entries) {
        const old = this.files.get([root, rel]);
        if (old && old.hash && (!rec || old.hash !== rec.hash)) this.content.remove([old.hash, root, rel]);
        if (rec) {
          this.files.put([root, rel], rec);
          // '' means not read yet: no content address.
          if (rec.hash) this.content.put([rec.hash, root, rel], null);
        } else if (old) {
          this.files.remove([root, rel]);
        }
      }
    }));
  }

  /** Every (root, path) whose content has this hash. */
  holders(hash: string): Array<{ root: string; path: RelPath }> {
    const out: Array<{ root: string; path: RelPath }> = [];
    for (const key of this.content.getKeys({ start: [hash], end: [hash, '\uffff'] })) {
      const [, root, rel] = key as [string, string, string];
      out.push({ root, path: rel });
    }
    return out;
  }

  getLink(serverRoot: string, rel: RelPath): LinkRecord | undefined {
    return this.links.get([serverRoot, rel]);
  }

  putLink(serverRoot: string, rel: RelPath, rec: LinkRecord): Promise<boolean> {
    return this.guard(this.links.put([serverRoot, rel], rec));
  }

  removeLink(serverRoot: string, rel: RelPath): Promise<boolean> {
    return this.guard(this.links.remove([serverRoot, rel]));
  }

  getInode(dev: string, ino: string): InodeRecord | undefined {
    return this.inodes.get(`${dev}:${ino}`);
  }

  putInode(dev: string, ino: string, rec: InodeRecord): Promise<boolean> {
    return this.guard(this.inodes.put(`${dev}:${ino}`, rec));
  }

  removeInode(dev: string, ino: string): Promise<boolean> {
    return this.guard(this.inodes.remove(`${dev}:${ino}`));
  }

  /** Every file record of one root. */
  /** The paths of a root's file records, without decoding the records. */
  *filePathsOf(root: string): Generator<RelPath> {
    for (const key of this.files.getKeys({ start: [root], end: [root, '\uffff'] })) yield (key as [string, string])[1];
  }

  *filesOf(root: string): Generator<{ path: RelPath; rec: FileRecord }> {
    for (const { key, value } of this.files.getRange({ start: [root], end: [root, '\uffff'] })) {
      yield { path: (key as [string, string])[1], rec: value };
    }
  }

  /** Every link record (of one server root, when given). */
  *allLinks(root?: string): Generator<{ root: string; path: RelPath; rec: LinkRecord }> {
    const range = root ? { start: [root], end: [root, '\uffff'] } : {};
    for (const { key, value } of this.links.getRange(range)) {
      const [r, p] = key as [string, string];
      yield { root: r, path: p, rec: value };
    }
  }

  /** The 'dev:ino' keys of every inode vunify made immutable (keys only: no record decoded). */
  inodeKeys(): Set<string> {
    return new Set(this.inodes.getKeys({}) as Iterable<string>);
  }

  *allInodes(): Generator<{ dev: string; ino: string; rec: InodeRecord }> {
    for (const { key, value } of this.inodes.getRange({})) {
      const [dev, ino] = String(key).split(':');
      yield { dev, ino, rec: value };
    }
  }

  /** Writes journal entries in one transaction and waits until they are on disk. */
  async journalAdd(entries: JournalEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await Promise.all(entries.map((e) => this.guard(this.journal.put(journalKey(e), e))));
    await this.flush();
  }

  async journalDone(entries: JournalEntry[]): Promise<void> {
    await Promise.all(entries.map((e) => this.guard(this.journal.remove(journalKey(e)))));
  }

  journalEntries(): JournalEntry[] {
    return [...this.journal.getRange({})].map(({ value }) => value);
  }

  putRoot(root: string, rec: RootRecord): Promise<boolean> {
    return this.guard(this.roots.put(root, rec));
  }

  allRoots(): Array<{ root: string; rec: RootRecord }> {
    return [...this.roots.getRange({})].map(({ key, value }) => ({ root: String(key), rec: value }));
  }

  /** Drops every record of a root (files, content entries, links, the root itself). */
  async dropRoot(root: string): Promise<number> {
    const paths = [...this.filesOf(root)].map((f) => f.path);
    await this.putFiles(paths.map((p) => [root, p, null]));
    const links = [...this.allLinks(root)];
    await this.guard(this.env.transaction(() => {
      for (const l of links) this.links.remove([root, l.path]);
      this.roots.remove(root);
    }));
    return paths.length;
  }

  /** Bytes of the index's data file on disk (0 when there is none). */
  static fileSize(dbPath: string): number {
    try {
      const file = fs.statSync(dbPath).isDirectory() ? path.join(dbPath, 'data.mdb') : dbPath;
      return fs.statSync(file).size;
    } catch {
      return 0;
    }
  }

  /** Writes a compacted copy of the index to dest (LMDB copy with compaction). */
  async compactTo(dest: string): Promise<void> {
    await this.env.backup(dest, true);
  }

  /** The id of the last committed write transaction: it moves with every write. */
  lastTxnId(): number {
    return (this.env.getStats() as { lastTxnId: number }).lastTxnId;
  }

  /** Waits until every write so far is committed (visible to readers; not yet durable). */
  committed(): Promise<void> {
    return this.waitFor(this.env.committed);
  }

  /** Waits for p, then fails with the first write failure seen, even one nobody awaited. */
  private async waitFor(p: PromiseLike<unknown>): Promise<void> {
    await this.guard(Promise.resolve(p));
    if (this.writeError) throw this.writeError;
  }

  /** Waits until every write so far is durable on disk. */
  flush(): Promise<void> {
    return this.waitFor(this.env.flushed);
  }

  async close(): Promise<void> {
    if (this.writeError) {
      // After a failed commit lmdb-js's close never settles; the process exit closes the file.
      Promise.resolve(this.env.close()).catch(() => undefined);
      throw this.writeError;
    }
    await this.waitFor(this.env.close());
  }
}
