// The LMDB index: the one module that knows its on-disk layout.
//
//   meta      'schema' -> SCHEMA_VERSION
//   rootIds   root -> number                      the number that stands for a root in keys
//   files     id+path -> FileRow                  stat signature + content address
//   content   hash+id+path -> null                who holds a content (prefix scans)
//   links     id+path -> LinkRow                  links vunify made, with what it replaced
//   inodes    'dev:ino' -> InodeRow               inodes vunify made immutable
//   roots     root -> RootRecord                  every root seen: name, last scan
//   journal   key -> JournalEntry                 changes under way (see recover.ts)
//
// Keys of files, content and links are bytes: a root's number (4 bytes, big-endian), the
// path (one byte per char: paths are binary strings), and in content keys the 32 bytes of
// the BLAKE3 hash first. Their values are arrays: schema 1 stored objects keyed by root path,
// every value with its own copy of the field names, which took 40% of the file (a 500,000-file
// farm: 691 MB). Times are nanosecond decimal strings, dev and ino decimal strings: all exact.
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import type { Database, Key, RootDatabase } from 'lmdb';
import { VunifyError, oneLine } from '../errors.js';
import { releaseMappedFile } from '../fsx/sys.js';
import type { RelPath } from '../fsx/rootdir.js';
import { quickPath } from './quick-file.js';
import { FAILED_MARK_SUFFIX, LMDB_DATA_FILE, LMDB_LOCK_SUFFIX, brokenPath, failedMarkPath, upgradePath } from './names.js';
import type { FileRecord, LinkRecord } from '../model.js';

export type { FileRecord, LinkRecord } from '../model.js';

// lmdb's CommonJS build is one bundled file: 15-18 ms to load here, its ES modules 24 ms.
const require = createRequire(import.meta.url);
const { open } = require('lmdb') as typeof import('lmdb');

export const SCHEMA_VERSION = 2;

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

// LMDB's largest key (lmdb-js's build): a key that fits is written as it always was, so
// indexes written before long paths were handled read the same.
const MAX_KEY = 1978;
// A key that would not fit keeps this much of the path, a NUL (never in a path) and the
// SHA-256 of the whole path; the value then carries the whole path, checked on every read.
const LONG_PREFIX = 1024;
const LONG_TAIL = LONG_PREFIX + 1 + 32;

export const journalKey = (e: JournalEntry): string => {
  const key = `${e.op}\0${e.op === 'flag' ? `${e.dev}:${e.ino}` : `${e.root}\0${e.path}`}`;
  // Roots are absolute: 'op\0#' never starts a key that fits.
  return Buffer.byteLength(key) <= MAX_KEY ? key : `${e.op}\0#${crypto.createHash('sha256').update(key).digest('hex')}`;
};

export interface RootRecord {
  name: string;
  /** When the last scan of this root ended, and how long it took. */
  lastScanAt?: string;
  lastScanMs?: number;
  lastRole?: 'reference' | 'server' | 'pool';
}

const LMDB_MAGIC = 0xbeefc0de;

/**
 * File records per write transaction (see putFiles): each holds a copy of every page it
 * changes until its commit (measured with PUT_RELEASE at 1,000,000 files: see below).
 */
const TXN_FILES = Number(process.env.VUNIFY_TXN_FILES) || 512;
/**
 * putFiles releases the mapped pages every this many records: each record reads about three
 * pages far apart, and each read maps about 86 KiB around it (the kernel maps cached pages
 * around a fault; measured on a 670 MB index). A 1,000,000-file first unify's records phases
 * rose 36 MB on average (at most 68) over the run's resident memory with 2,048 records a
 * transaction and a release every 64, 10 MB (at most 26) with 512 and 16; at 250,000 files
 * the records phases took 5.1 s against 3.8-4.6 s, inside the run's spread.
 */
const PUT_RELEASE = Number(process.env.VUNIFY_PUT_RELEASE) || 16;

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
function failedMark(dbPath: string): string | null {
  try {
    return fs.readFileSync(failedMarkPath(dbPath), 'utf8').trim().split('\n')[0] || 'no reason recorded';
  } catch {
    return null;
  }
}

const DAMAGED = 'run with --rebuild-index to start a new one';

/**
 * LMDB trusts its file: a damaged one can crash the process instead of failing (a page past
 * the end of a truncated file is SIGBUS). Check the meta pages against the file's size before
 * opening, so damage is an error message.
 */
function checkLmdbFile(dbPath: string): void {
  const mark = failedMark(dbPath);
  if (mark !== null) {
    throw new VunifyError('INDEX', `a write to the index failed earlier (${mark}); ${DAMAGED}`, dbPath);
  }
  let data: string;
  try {
    data = fs.statSync(dbPath).isDirectory() ? path.join(dbPath, LMDB_DATA_FILE) : dbPath;
  } catch {
    return; // a new index
  }
  let fd: number;
  try {
    fd = fs.openSync(data, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new VunifyError('INDEX', `cannot read the index (${(err as Error).message}); ${DAMAGED}`, dbPath);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size === 0) return;
    const why = metaProblem(fd, size);
    if (why) throw new VunifyError('INDEX', `the index is damaged (${why}); ${DAMAGED}`, dbPath);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * What is wrong with the meta pages (pages 0 and 1), or null. Each is a page header (16
 * bytes in LMDB 0.9, 24 in the 1.0 format lmdb-js writes), then MDB_meta: magic, version,
 * address, mapsize, two MDB_db of 48 bytes (the first's md_pad is the page size), last
 * page number, txnid. LMDB uses the meta with the higher txnid and reads pages up to its
 * last page: the file must hold them.
 */
function metaProblem(fd: number, size: number): string | null {
  const read = (at: number, n: number) => {
    const b = Buffer.alloc(n);
    return fs.readSync(fd, b, 0, n, at) === n ? b : null;
  };
  const meta = (at: number) => {
    const b = read(at, 160);
    if (!b) return null;
    const h = b.readUInt32LE(24) === LMDB_MAGIC ? 24 : b.readUInt32LE(16) === LMDB_MAGIC ? 16 : -1;
    if (h < 0) return null;
    return { h, psize: b.readUInt32LE(h + 24), lastPg: b.readBigUInt64LE(h + 120), txnid: b.readBigUInt64LE(h + 128), dbs: [dbAt(b, h + 24), dbAt(b, h + 72)] };
  };
  const m0 = meta(0);
  if (!m0) return 'not an LMDB file';
  const { psize } = m0;
  if (psize < 512 || psize > 65536 || (psize & (psize - 1)) !== 0) return `page size ${psize}`;
  const m1 = meta(psize);
  if (!m1) return 'its second meta page is missing or not LMDB\'s';
  const m = m1.txnid > m0.txnid ? m1 : m0;
  const need = (m.lastPg + 1n) * BigInt(psize);
  if (BigInt(size) >= need) return null;
  // Pages a transaction took and freed again (LMDB's loose pages) are never written, so the
  // file may end a few pages short of the last page number. It is truncated when a root
  // lies beyond its end, or more pages are in use than it holds.
  const pages = BigInt(size) / BigInt(psize);
  const NONE = 0xffffffffffffffffn;
  // The named tables (files, content, ...) count their pages apart from the main table's:
  // their roots and counts are in its root page (one leaf: a handful of tables).
  const main = m.dbs[1];
  const rootPage = main.root !== NONE && main.root < pages && main.depth === 1 ? read(Number(main.root) * psize, psize) : null;
  const dbs = [...m.dbs, ...(rootPage ? namedTables(rootPage, m.h) : [])];
  const inUse = dbs.reduce((a, d) => a + d.pages, 2n);
  if (dbs.some((d) => d.root !== NONE && d.root >= pages) || inUse > pages) {
    return `${size} bytes, but its last page ends at ${need}: truncated`;
  }
  return null;
}

/** An MDB_db at `at`: md_pad, md_flags, md_depth, then branch, leaf and overflow page counts, entries, root. */
function dbAt(b: Buffer, at: number): { depth: number; pages: bigint; root: bigint } {
  return { depth: b.readUInt16LE(at + 6), pages: b.readBigUInt64LE(at + 8) + b.readBigUInt64LE(at + 16) + b.readBigUInt64LE(at + 24), root: b.readBigUInt64LE(at + 40) };
}

/**
 * The named tables in the main table's root leaf, in the page format lmdb-js writes (a
 * 24-byte header, node offsets counted from its end); none for another format or a page
 * that does not parse (the meta pages' own check still applies).
 */
function namedTables(page: Buffer, header: number): Array<{ depth: number; pages: bigint; root: bigint }> {
  const P_LEAF = 0x02;
  const F_SUBDATA = 0x02;
  if (header !== 24 || (page.readUInt16LE(18) & P_LEAF) === 0) return [];
  const keys = page.readUInt16LE(20) >> 1;
  const out = [];
  for (let i = 0; i < keys; i++) {
    if (header + 2 * i + 2 > page.length) return [];
    const at = page.readUInt16LE(header + 2 * i) + header;
    if (at + 8 > page.length) return [];
    const flags = page.readUInt16LE(at + 4);
    const data = at + 8 + page.readUInt16LE(at + 6);
    if (!(flags & F_SUBDATA)) continue;
    if (data + 48 > page.length) return [];
    out.push(dbAt(page, data));
  }
  return out;
}

// Reads every entry of every table and decodes every value: garbage inside a page can make
// LMDB itself abort or fault, which only a process of its own survives.
const READ_WHOLE = `
const [lmdb, dbPath] = process.argv.slice(1);
const env = require(lmdb).open({ path: dbPath, readOnly: true, compression: false, keyEncoding: 'binary', encoding: 'binary' });
for (const name of [...env.getKeys()].map((k) => k.toString('latin1'))) {
  const db = env.openDB({ name, keyEncoding: 'binary', encoding: 'msgpack' });
  let n = 0;
  for (const _ of db.getRange({})) n++;
  // A damaged branch page can make a walk skip leaves without an error.
  if (n !== db.getStats().entryCount) throw new Error(name + ': ' + n + ' entries read, ' + db.getStats().entryCount + ' recorded');
}`;

/** With --rebuild-index: an existing index that cannot be read whole is damaged (and moved aside). */
function readWholeInChild(dbPath: string): void {
  checkLmdbFile(dbPath);
  if (Index.fileSize(dbPath) === 0) return;
  const r = spawnSync(process.execPath, ['--input-type=commonjs', '-e', READ_WHOLE, require.resolve('lmdb'), dbPath],
    { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'], timeout: 3_600_000 });
  if (r.status === 0) return;
  const last = (r.stderr ?? '').split('\n').find((l) => /error/i.test(l))?.trim() ?? '';
  const why = r.signal ? `reading it ended with ${r.signal}` : last.replace(/[^\x20-\x7e]+/g, '?').slice(0, 100) || `reading it failed (exit ${r.status})`;
  throw new VunifyError('INDEX', `the index is damaged (${why})`, dbPath);
}

type FileRow = [dev: string, ino: string, size: number, mode: number, uid: number, gid: number,
  mtimeNs: string, ctimeNs: string, nlink: number, hash: string, xattrs: string, pkg?: string];
type LinkRow = [refRoot: number, refPath: RelPath, dev: string, ino: string, mode: number, uid: number,
  gid: number, atimeNs: string, mtimeNs: string, xattrs: Record<string, string>, size: number,
  linkedAt: string, pkg: string | null, hash: string | null, flags?: number, method?: 'reflink'];
type InodeRow = [root: number, path: RelPath, setAt: string];
/** A row as stored: under a long path's key (see pathKey), with the whole path first. */
type Stored<R> = R | [RelPath, R];

const fileRow = (r: FileRecord): FileRow => {
  const row: FileRow = [r.dev, r.ino, r.size, r.mode, r.uid, r.gid, r.mtimeNs, r.ctimeNs, r.nlink, r.hash, r.xattrs];
  if (r.pkg !== undefined) row.push(r.pkg);
  return row;
};
let lastDev = '';
const fileRecord = (a: FileRow): FileRecord => {
  // The records of a device share one device string (strings are most of a record's memory).
  const dev = a[0] === lastDev ? lastDev : (lastDev = a[0]);
  // pkg always set (maybe undefined): one hidden class for every record.
  return { dev, ino: a[1], size: a[2], mode: a[3], uid: a[4], gid: a[5], mtimeNs: a[6], ctimeNs: a[7], nlink: a[8], hash: a[9], xattrs: a[10], pkg: a[11] };
};

/** A root's number and a path as key bytes (paths are binary strings: one byte per char). */
function pathKey(id: number, rel: RelPath, prefix?: Buffer): Buffer {
  const at = prefix ? prefix.length : 0;
  const long = at + 4 + rel.length > MAX_KEY;
  const b = Buffer.allocUnsafe(at + 4 + (long ? LONG_TAIL : rel.length));
  if (prefix) prefix.copy(b);
  b.writeUInt32BE(id, at);
  if (!long) {
    b.write(rel, at + 4, 'latin1');
  } else {
    b.write(rel.slice(0, LONG_PREFIX), at + 4, 'latin1');
    b[at + 4 + LONG_PREFIX] = 0;
    crypto.createHash('sha256').update(rel, 'latin1').digest().copy(b, at + 5 + LONG_PREFIX);
  }
  return b;
}

/** The path a key holds from offset at, or null when it is a long path's key (see pathKey). */
function keyPath(key: Buffer, at: number): RelPath | null {
  return key.length - at === LONG_TAIL && key[at + LONG_PREFIX] === 0 ? null : key.toString('latin1', at);
}


const idKey = (id: number) => pathKey(id, '');
const hashBytes = (hash: string) => {
  if (!/^[0-9a-f]{64}$/.test(hash)) throw new Error(`not a BLAKE3 hex digest: ${JSON.stringify(hash)}`);
  return Buffer.from(hash, 'hex');
};

/** The value to store for row under key (at: where the key's path starts). */
function stored<R>(key: Buffer, at: number, rel: RelPath, row: R): Stored<R> {
  return keyPath(key, at) === null ? [rel, row] : row;
}

/** rel's row under key; under a long path's key only when the stored path is rel (no digest is trusted alone). */
function rowAt<R>(db: Database<Stored<R>, Buffer>, key: Buffer, rel: RelPath): R | undefined {
  const value = db.get(key);
  if (value === undefined || keyPath(key, 4) !== null) return value as R | undefined;
  const [whole, row] = value as [RelPath, R];
  return whole === rel ? row : undefined;
}

/** The path and row of an entry read in a range of a root's keys. */
function unstored<R>(key: Buffer, value: Stored<R>): [RelPath, R] {
  const rel = keyPath(key, 4);
  return rel === null ? (value as [RelPath, R]) : [rel, value as R];
}

/** Under 1 MiB free for root on the index's filesystem. */
function filesystemFull(dbPath: string): boolean {
  try {
    const st = fs.statfsSync(dbPath);
    return st.bavail * st.bsize < 2 ** 20;
  } catch {
    return false;
  }
}

export class Index {
  /** Root paths by number and back; numbers are never reused. */
  private ids = new Map<string, number>();
  private paths = new Map<number, string>();
  private nextId = 1;
  /** Rewritten from schema 1 when opened: a new file, whose transaction ids start anew. */
  upgraded = false;

  private constructor(
    readonly path: string,
    private readonly env: RootDatabase,
    private readonly rootIds: Database<number, string>,
    private readonly files: Database<Stored<FileRow>, Buffer>,
    private readonly content: Database<RelPath | null, Buffer>,
    private readonly links: Database<Stored<LinkRow>, Buffer>,
    private readonly inodes: Database<InodeRow, string>,
    private readonly roots: Database<RootRecord, string>,
    private readonly journal: Database<JournalEntry, string>,
  ) {
    for (const { key, value } of rootIds.getRange({})) {
      this.ids.set(key, value);
      this.paths.set(value, key);
      this.nextId = Math.max(this.nextId, value + 1);
    }
  }

  /**
   * Opens (or creates) the index. With rebuild, an index that cannot be opened is moved
   * aside to PATH.broken-TIME and a new one is made: it only costs a rescan. With upgrade
   * (the caller holds the lock), an index of schema 1 is rewritten in schema 2 first.
   */
  static async open(dbPath: string, opts: { rebuild?: boolean; upgrade?: boolean } = {}): Promise<Index> {
    try {
      if (opts.rebuild) readWholeInChild(dbPath);
      return await Index.openOnce(dbPath, opts.upgrade ?? false);
    } catch (err) {
      if (!opts.rebuild || !(err instanceof VunifyError)) throw err;
      const aside = brokenPath(dbPath, new Date());
      for (const suffix of ['', LMDB_LOCK_SUFFIX, FAILED_MARK_SUFFIX]) {
        if (fs.existsSync(dbPath + suffix)) fs.renameSync(dbPath + suffix, aside + suffix);
      }
      return Index.openOnce(dbPath, false);
    }
  }

  private static openEnv(dbPath: string): RootDatabase {
    try {
      fs.mkdirSync(path.dirname(dbPath), { recursive: true, mode: 0o700 });
      return open({ path: dbPath, compression: false, mapSize: 2 ** 34 });
    } catch (err) {
      throw new VunifyError('INDEX', `cannot open the index (${(err as Error).message}); run with --rebuild-index to start a new one`, dbPath, { cause: err });
    }
  }

  private static async openOnce(dbPath: string, upgrade: boolean): Promise<Index> {
    checkLmdbFile(dbPath);
    const env = Index.openEnv(dbPath);
    try {
      const meta = env.openDB<number, string>({ name: 'meta' });
      const schema = meta.get('schema');
      if (schema === undefined) meta.putSync('schema', SCHEMA_VERSION);
      else if (schema === 1 && upgrade) {
        try {
          await Index.upgradeFrom1(dbPath, env);
        } catch (err) {
          // The old data file is only replaced by the last rename: until then it is whole.
          for (const f of [upgradePath(dbPath), upgradePath(dbPath) + LMDB_LOCK_SUFFIX]) fs.rmSync(f, { force: true });
          throw new VunifyError('INDEX', `upgrading the index from schema 1 failed (${oneLine(err)}); the index is as it was: fix the cause (space?) and run again`, dbPath, { cause: err });
        }
        const index = await Index.openOnce(dbPath, false);
        index.upgraded = true;
        return index;
      } else if (schema === 1) {
        throw new VunifyError('INDEX', 'the index is in the format of an older vunify (schema 1); any run of unify, plan, scan or gc upgrades it', dbPath);
      } else if (schema !== SCHEMA_VERSION) {
        throw new VunifyError('INDEX', `index schema ${schema} is not the supported ${SCHEMA_VERSION}; run with --rebuild-index to start a new index`, dbPath);
      }
      return new Index(
        dbPath,
        env,
        env.openDB({ name: 'rootIds' }),
        env.openDB({ name: 'files', keyEncoding: 'binary' }),
        env.openDB({ name: 'content', keyEncoding: 'binary' }),
        env.openDB({ name: 'links', keyEncoding: 'binary' }),
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

  /**
   * Rewrites a schema-1 index (still open as old) in schema 2, through this class's own
   * writes, into a new file that then replaces the old one's data file by rename: a crash
   * leaves either index whole. The old env is closed on return.
   */
  private static async upgradeFrom1(dbPath: string, old: RootDatabase): Promise<void> {
    const tmp = upgradePath(dbPath);
    for (const f of [tmp, tmp + LMDB_LOCK_SUFFIX]) fs.rmSync(f, { force: true });
    const next = await Index.openOnce(tmp, false);
    try {
      const raw = <V>(name: string) => old.openDB<V, Key>({ name });
      for (const { key, value } of raw<RootRecord>('roots').getRange({})) await next.putRoot(String(key), value);
      let batch: Array<[string, RelPath, FileRecord]> = [];
      for (const { key, value } of raw<FileRecord>('files').getRange({})) {
        const [root, rel] = key as [string, RelPath];
        batch.push([root, rel, value]);
        if (batch.length === 10_000) { await next.putFiles(batch); batch = []; }
      }
      await next.putFiles(batch);
      // Waited for in batches: lmdb-js holds every queued write in memory until it commits.
      let pending: Array<Promise<boolean>> = [];
      const put = async (p: Promise<boolean>) => {
        pending.push(p);
        if (pending.length === 10_000) { await Promise.all(pending); pending = []; }
      };
      for (const { key, value } of raw<LinkRecord>('links').getRange({})) {
        const [root, rel] = key as [string, RelPath];
        await put(next.putLink(root, rel, value));
      }
      for (const { key, value } of raw<InodeRecord>('inodes').getRange({})) {
        const [dev, ino] = String(key).split(':');
        await put(next.putInode(dev, ino, value));
      }
      await Promise.all(pending);
      const journal = [...raw<JournalEntry>('journal').getRange({})].map(({ value }) => value);
      await next.journalAdd(journal);
      await next.flush();
    } finally {
      await next.close();
    }
    await old.close();
    const data = fs.statSync(dbPath).isDirectory() ? path.join(dbPath, LMDB_DATA_FILE) : dbPath;
    fs.renameSync(tmp, data);
    fs.rmSync(tmp + LMDB_LOCK_SUFFIX, { force: true });
    // The quick file names the index by its path's inode, which a folder index keeps: it
    // described the old file (its transaction id above all), so it goes.
    fs.rmSync(quickPath(dbPath), { force: true });
  }

  /** The number of a root; with create, a new one is given (and written) when it has none. */
  private rid(root: string, create: true): number;
  private rid(root: string, create: false): number | undefined;
  private rid(root: string, create: boolean): number | undefined {
    let id = this.ids.get(root);
    if (id === undefined && create) {
      // Roots are keys of their own tables; the operator names them, no tenant can lengthen one.
      if (Buffer.byteLength(root) > MAX_KEY) throw new VunifyError('BAD_SERVER', `the path is longer than the index takes (${MAX_KEY} bytes)`, root);
      id = this.nextId++;
      this.ids.set(root, id);
      this.paths.set(id, root);
      void this.guard(Promise.resolve(this.rootIds.put(root, id)));
    }
    return id;
  }

  private rootOf(id: number): string {
    const root = this.paths.get(id);
    if (root === undefined) throw new VunifyError('INDEX', `the index names root number ${id}, which it does not list; run with --rebuild-index`, this.path);
    return root;
  }

  /** The key range of one root's records. */
  private rangeOf(id: number) {
    return { start: idKey(id), end: idKey(id + 1) };
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

  /** Set once journal entries are durable: from then on the run may have changed the farm. */
  private journaled = false;

  private failed(err: unknown): VunifyError {
    if (err instanceof VunifyError) return err;
    if (!this.writeError) {
      const errno = (err as { code?: unknown })?.code;
      const reason = String((err as Error)?.message ?? err).replace(/\s+/g, ' ').trim();
      const code = this.journaled ? 'INDEX_AFTER_CHANGES' : 'INDEX';
      const after = this.journaled ? ' after this run had made links or copies in the farm' : '';
      // LMDB's own codes are negative: its file may be damaged. An errno (a full disk)
      // leaves the last commit intact.
      if (typeof errno === 'number' && errno > 0) {
        // LMDB reports a full tmpfs as EIO: the free space tells.
        const full = errno === os.constants.errno.ENOSPC || filesystemFull(this.path);
        const name = Object.entries(os.constants.errno).find(([, n]) => n === errno)?.[0];
        const what = `${full ? 'ENOSPC: its filesystem is full; LMDB said ' : ''}${name ? `${name}: ` : ''}${reason}, errno ${errno}`;
        const fix = full ? 'free space on its filesystem' : 'check the health of its filesystem';
        this.writeError = this.journaled
          ? new VunifyError(code, `a write to the index failed${after} (${what}); the index keeps its last commit and its journal covers every change under way: ${fix}, then run vunify recover`, this.path, { cause: err })
          : new VunifyError(code, `a write to the index failed (${what}); the index keeps its last commit: check the space and health of its filesystem and run again`, this.path, { cause: err });
      } else {
        this.writeError = new VunifyError(code, `a write to the index failed${after} (${reason}); the index may be damaged: ${DAMAGED}${this.journaled ? ' (undo finds the links by their inodes)' : ''}`, this.path, { cause: err });
        try {
          fs.writeFileSync(failedMarkPath(this.path), `${new Date().toISOString()} ${reason}\n`, { mode: 0o600 });
        } catch { /* the error itself still stops the run */ }
      }
    }
    return this.writeError;
  }

  /**
   * A read that fails (a damaged page, a value that does not decode) is damage, not a bug:
   * one error that says how to start anew.
   */
  private damaged(err: unknown): VunifyError {
    if (err instanceof VunifyError) return err;
    // Decoders quote the data they choked on: keep the line short and printable.
    const reason = oneLine(err).replace(/[^\x20-\x7e]+/g, '?').slice(0, 100);
    return new VunifyError('INDEX', `the index is damaged (${reason}); ${DAMAGED}`, this.path, { cause: err });
  }

  private read<T>(fn: () => T): T {
    this.pageRead();
    try {
      return fn();
    } catch (err) {
      throw this.damaged(err);
    }
  }

  /** Yields map(entry) for each entry of a range read (undefined: none), as read() does. */
  private *each<E, T>(range: () => Iterable<E>, map: (e: E) => T | undefined): Generator<T> {
    let it: Iterator<E> | undefined;
    let done = false;
    try {
      for (;;) {
        let out: T | undefined;
        try {
          it ??= range()[Symbol.iterator]();
          const r = it.next();
          if (r.done) { done = true; return; }
          this.pageRead();
          out = map(r.value);
        } catch (err) {
          throw this.damaged(err);
        }
        if (out !== undefined) yield out;
      }
    } finally {
      if (!done) it?.return?.(); // ends the read transaction when the caller stops early
    }
  }

  getFile(root: string, rel: RelPath): FileRecord | undefined {
    const id = this.rid(root, false);
    const row = id === undefined ? undefined : this.read(() => rowAt(this.files, pathKey(id, rel), rel));
    return row && this.read(() => fileRecord(row));
  }

  /** Tells sink of every file record written from now on (null: removed), in order, until told null; see putFiles. */
  trackFiles(sink: ((root: string, rel: RelPath, rec: FileRecord | null) => void) | null): void {
    this.tracked = sink;
  }
  private tracked: ((root: string, rel: RelPath, rec: FileRecord | null) => void) | null = null;

  /** Writes many file records in one transaction, keeping the content index in step. */
  async putFiles(entries: Array<[root: string, rel: RelPath, rec: FileRecord | null]>): Promise<void> {
    // A transaction holds a copy of each page it changes until it commits, and a slice's
    // content entries land all over the content table (keyed by hash). Records are a cache
    // checked against the disk, so a crash between two of these costs a re-read, not a link.
    for (let i = 0; i < entries.length; i += TXN_FILES) await this.putFileRun(entries.slice(i, i + TXN_FILES));
  }

  private async putFileRun(entries: Array<[root: string, rel: RelPath, rec: FileRecord | null]>): Promise<void> {
    if (entries.length === 0) return;
    const t = this.tracked;
    if (t) for (const [root, rel, rec] of entries) t(root, rel, rec);
    const ids = entries.map(([root]) => this.rid(root, true));
    // Checked before the transaction: a bad hash is a bug in the caller, and a failure inside
    // the transaction would mark the index as damaged. '' means not read yet: no content address.
    const hashes = entries.map(([, , rec]) => (rec?.hash ? hashBytes(rec.hash) : null));
    await this.guard(this.env.transaction(() => {
      for (let i = 0; i < entries.length; i++) {
        if (i % PUT_RELEASE === PUT_RELEASE - 1) this.releaseMapped();
        const [, rel, rec] = entries[i];
        const key = pathKey(ids[i], rel);
        const oldRow = rowAt(this.files, key, rel);
        const oldHash = oldRow?.[9]; // checked when it was written
        if (oldHash && (!rec || oldHash !== rec.hash)) this.content.remove(pathKey(ids[i], rel, Buffer.from(oldHash, 'hex')));
        if (rec) {
          this.files.put(key, stored(key, 4, rel, fileRow(rec)));
          const h = hashes[i];
          // Written with the old row, in one transaction: a relinked file keeps its content,
          // and rewriting the entry would copy a page of the content table (keyed by hash:
          // a slice's records would copy most of it).
          if (h && oldHash !== rec.hash) {
            const ckey = pathKey(ids[i], rel, h);
            this.content.put(ckey, keyPath(ckey, 36) === null ? rel : null);
          }
        } else if (oldRow) {
          this.files.remove(key);
        }
      }
    }));
  }

  /** Every (root, path) whose content has this hash. */
  holders(hash: string): Array<{ root: string; path: RelPath }> {
    const h = hashBytes(hash);
    return [...this.each(() => this.content.getKeys({ start: h, end: pathKey(0xffffffff, '', h) }), (key) => {
      const rel = keyPath(key, 36) ?? this.content.get(key);
      return typeof rel === 'string' ? { root: this.rootOf(key.readUInt32BE(32)), path: rel } : undefined;
    })];
  }

  getLink(serverRoot: string, rel: RelPath): LinkRecord | undefined {
    const id = this.rid(serverRoot, false);
    const row = id === undefined ? undefined : this.read(() => rowAt(this.links, pathKey(id, rel), rel));
    return row && this.read(() => this.linkRecord(row));
  }

  putLink(serverRoot: string, rel: RelPath, r: LinkRecord): Promise<boolean> {
    const row: LinkRow = [this.rid(r.refRoot, true), r.refPath, r.dev, r.ino, r.mode, r.uid, r.gid, r.atimeNs, r.mtimeNs,
      r.xattrs, r.size, r.linkedAt, r.pkg ?? null, r.hash ?? null];
    if (r.flags || r.method) row.push(r.flags ?? 0);
    if (r.method) row.push(r.method);
    const key = pathKey(this.rid(serverRoot, true), rel);
    return this.guard(this.links.put(key, stored(key, 4, rel, row)));
  }

  private linkRecord(a: LinkRow): LinkRecord {
    const r: LinkRecord = { refRoot: this.rootOf(a[0]), refPath: a[1], dev: a[2], ino: a[3], mode: a[4], uid: a[5], gid: a[6],
      atimeNs: a[7], mtimeNs: a[8], xattrs: a[9], size: a[10], linkedAt: a[11] };
    if (a[12] !== null) r.pkg = a[12];
    if (a[13] !== null) r.hash = a[13];
    if (a[14]) r.flags = a[14];
    if (a[15] === 'reflink') r.method = a[15];
    return r;
  }

  removeLink(serverRoot: string, rel: RelPath): Promise<boolean> {
    const id = this.rid(serverRoot, false);
    return id === undefined ? Promise.resolve(false) : this.guard(this.links.remove(pathKey(id, rel)));
  }

  private inodeRecord(a: InodeRow): InodeRecord {
    return { root: this.rootOf(a[0]), path: a[1], setAt: a[2] };
  }

  getInode(dev: string, ino: string): InodeRecord | undefined {
    const row = this.read(() => this.inodes.get(`${dev}:${ino}`));
    return row && this.read(() => this.inodeRecord(row));
  }

  putInode(dev: string, ino: string, rec: InodeRecord): Promise<boolean> {
    return this.guard(this.inodes.put(`${dev}:${ino}`, [this.rid(rec.root, true), rec.path, rec.setAt]));
  }

  removeInode(dev: string, ino: string): Promise<boolean> {
    return this.guard(this.inodes.remove(`${dev}:${ino}`));
  }

  /** The paths of a root's file records, without decoding the records. */
  *filePathsOf(root: string): Generator<RelPath> {
    const id = this.rid(root, false);
    if (id === undefined) return;
    yield* this.each(() => this.files.getKeys(this.rangeOf(id)),
      (key) => keyPath(key, 4) ?? (this.files.get(key) as [RelPath, FileRow] | undefined)?.[0]);
  }

  /** Every file record of one root. */
  *filesOf(root: string): Generator<{ path: RelPath; rec: FileRecord }> {
    const id = this.rid(root, false);
    if (id === undefined) return;
    yield* this.each(() => this.files.getRange(this.rangeOf(id)), ({ key, value }) => {
      const [path, row] = unstored(key, value);
      return { path, rec: fileRecord(row) };
    });
  }

  /** Every link record (of one server root, when given). */
  *allLinks(root?: string): Generator<{ root: string; path: RelPath; rec: LinkRecord }> {
    const id = root === undefined ? undefined : this.rid(root, false);
    if (root !== undefined && id === undefined) return;
    yield* this.each(() => this.links.getRange(id === undefined ? {} : this.rangeOf(id)), ({ key, value }) => {
      const [path, row] = unstored(key, value);
      return { root: this.rootOf(key.readUInt32BE(0)), path, rec: this.linkRecord(row) };
    });
  }

  /** Numbers of the inodes on device dev that vunify made immutable (keys only: no record decoded). */
  inodeNumbersOn(dev: string): Set<number> {
    const prefix = `${dev}:`;
    const out = new Set<number>();
    for (const key of this.each(() => this.inodes.getKeys({}) as Iterable<string>, String)) {
      if (key.startsWith(prefix)) out.add(Number(key.slice(prefix.length)));
    }
    return out;
  }

  *allInodes(): Generator<{ dev: string; ino: string; rec: InodeRecord }> {
    yield* this.each(() => this.inodes.getRange({}), ({ key, value }) => {
      const [dev, ino] = String(key).split(':');
      return { dev, ino, rec: this.inodeRecord(value) };
    });
  }

  /** Writes journal entries in one transaction and waits until they are on disk. */
  async journalAdd(entries: JournalEntry[]): Promise<void> {
    if (entries.length === 0) return;
    await Promise.all(entries.map((e) => this.guard(this.journal.put(journalKey(e), e))));
    await this.flush();
    this.journaled = true;
  }

  async journalDone(entries: JournalEntry[]): Promise<void> {
    await Promise.all(entries.map((e) => this.guard(this.journal.remove(journalKey(e)))));
  }

  journalEntries(): JournalEntry[] {
    return [...this.each(() => this.journal.getRange({}), ({ value }) => {
      // recover acts on these: one that is not an entry is damage, not a path to act on.
      if (typeof (value as { op?: unknown } | undefined)?.op !== 'string') throw new Error('a journal entry that is not one');
      return value;
    })];
  }

  putRoot(root: string, rec: RootRecord): Promise<boolean> {
    return this.guard(this.roots.put(root, rec));
  }

  allRoots(): Array<{ root: string; rec: RootRecord }> {
    return [...this.each(() => this.roots.getRange({}), ({ key, value }) => ({ root: String(key), rec: value }))];
  }

  /** Drops every record of a root (files, content entries, links, the root itself). */
  async dropRoot(root: string): Promise<number> {
    const paths = [...this.filePathsOf(root)];
    await this.putFiles(paths.map((p) => [root, p, null]));
    const id = this.rid(root, false);
    const links = id === undefined ? [] : [...this.each(() => this.links.getKeys(this.rangeOf(id)), (k) => k)];
    await this.guard(this.env.transaction(() => {
      for (const key of links) this.links.remove(key);
      this.roots.remove(root);
    }));
    return paths.length;
  }

  /** Bytes of the index's data file on disk (0 when there is none). */
  static fileSize(dbPath: string): number {
    try {
      const file = fs.statSync(dbPath).isDirectory() ? path.join(dbPath, LMDB_DATA_FILE) : dbPath;
      return fs.statSync(file).size;
    } catch {
      return 0;
    }
  }

  /** Writes a compacted copy of the index to dest (LMDB copy with compaction). */
  async compactTo(dest: string): Promise<void> {
    await this.env.backup(dest, true);
  }

  /**
   * Stops counting the index pages read so far in this process's resident memory (they stay
   * in the page cache): a run releases them after each slice, so its peak does not grow with
   * the index. Returns the bytes of mapping released.
   */
  releaseMapped(): number {
    this.reads = 0;
    return releaseMappedFile(path.join(this.path, LMDB_DATA_FILE));
  }

  private reads = 0;
  /**
   * Counts a record read (any lookup or a range's item): every 256, the pages read so far are
   * released. A read maps its page and the kernel maps up to 64 KiB around it, so a loop of
   * lookups would otherwise map much of the index before the run's next release (at 2,048, a
   * 1%-change run's capture peaked 38 MB higher). getFile, getLink and getInode count twice
   * (the lookup and the decoding both go through read), so they release every 128: counting
   * them once peaked 4-10 MB higher in a 1%-change run's capture.
   */
  private pageRead(): void {
    if (++this.reads >= 256) this.releaseMapped();
  }

  /** The id of the last committed write transaction: it moves with every write. */
  lastTxnId(): number {
    return this.read(() => (this.env.getStats() as { lastTxnId: number }).lastTxnId);
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
  async flush(): Promise<void> {
    await this.waitFor(this.env.flushed);
    // The commit (on lmdb-js's write thread) maps index pages none of this thread's reads count
    this.releaseMapped();
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
