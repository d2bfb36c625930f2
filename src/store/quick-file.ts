// The quick-rescan file, INDEX.quick: what the last complete unify saw of the farm (a digest
// of every folder listing it depended on, and the stat fields of every candidate inode with
// one name to stat it by), the options it ran with, and the report a rescan of the unchanged
// farm gives. A checksum guards against a torn write; anything unreadable counts as no file.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { quickPath, quickTmpPath } from './names.js';

// Q2: inodes in check order, each with a name in its folder (Q1 files are not read: a full run).
const MAGIC = Buffer.from('VUNIFYQ2');
/** u32 words per inode: ino, size, mtime s, mtime ns, ctime s, ctime ns; 64 bits each. */
export const INODE_WORDS = 12;

/** A folder in walk order: depth 0 is the root itself, each folder follows its parent. */
export interface QuickFolder { depth: number; name: string }

/**
 * listings: one digest of every folder's listing, in order. inputs: package database files
 * and their state (see quick/inodes.ts, fileSignature).
 */
export interface QuickRoot {
  path: string; ino: string; folders: QuickFolder[]; listings: string; inputs: Array<[string, string]>;
  /** Tree mode: how many file records the index held for the root (its candidates). */
  records?: number;
}

export interface QuickHeader {
  fingerprint: string;
  /** The index file's dev:ino: a deleted, rebuilt or compacted index voids the file. */
  index: string;
  /** Digest of the mounts below the roots. */
  mounts: string;
  dev: string;
  createdAt: string;
  /** The index's last transaction id once the run's writes were committed. */
  txn?: number;
  roots: QuickRoot[];
  /** The report (JSON) a full rescan of the unchanged farm gives, and its -v file lines. */
  report: unknown;
  notable: unknown[];
}

/**
 * inodes: INODE_WORDS words per inode, in the order the check stats them: root by root,
 * folder by folder (the header's order). perFolder: how many inodes each folder holds, over
 * the roots' folders in order. names: each inode's name in its folder, NUL-terminated, one
 * after another; nameEnds: the offset of each name's NUL.
 */
export interface QuickState { header: QuickHeader; inodes: Uint32Array; perFolder: Uint32Array; names: Buffer; nameEnds: Uint32Array }

export { quickPath };

export function readQuick(dbPath: string): QuickState | null {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(quickPath(dbPath));
  } catch {
    return null;
  }
  if (buf.length < MAGIC.length + 40 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) return null;
  const body = buf.subarray(0, buf.length - 32);
  if (!crypto.createHash('sha256').update(body).digest().equals(buf.subarray(buf.length - 32))) return null;
  try {
    let off = MAGIC.length;
    const hlen = body.readUInt32LE(off);
    off += 4;
    const header = JSON.parse(body.toString('utf8', off, off + hlen)) as QuickHeader;
    off += hlen;
    // Each table: a u32 count, then its u32 words, copied (aligned) in the machine's order;
    // vunify only runs on little-endian machines.
    const table = (words: number): Uint32Array => {
      const n = body.readUInt32LE(off);
      off += 4;
      const len = n * words * 4;
      if (off + len > body.length) throw new Error('short');
      const t = new Uint32Array(body.buffer.slice(body.byteOffset + off, body.byteOffset + off + len));
      off += len;
      return t;
    };
    const inodes = table(INODE_WORDS);
    const perFolder = table(1);
    const nameEnds = table(1);
    const names = body.subarray(off);
    const folders = header.roots.reduce((a, r) => a + r.folders.length, 0);
    if (perFolder.length !== folders || nameEnds.length * INODE_WORDS !== inodes.length) return null;
    if (nameEnds.length > 0 && nameEnds[nameEnds.length - 1] !== names.length - 1) return null;
    return { header, inodes, perFolder, names, nameEnds };
  } catch {
    return null;
  }
}

/**
 * Written beside, in pieces (no copy of the tables: this is at the end of the run's peak),
 * and renamed into place; no fsync: a lost or torn file only costs a full rescan.
 */
export function writeQuick(dbPath: string, state: QuickState): void {
  const head = Buffer.from(JSON.stringify(state.header), 'utf8');
  const u32 = (v: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(v); return b; };
  const table = (t: Uint32Array, words: number) => [u32(t.length / words), Buffer.from(t.buffer, t.byteOffset, t.byteLength)];
  const parts = [
    MAGIC, u32(head.length), head,
    ...table(state.inodes, INODE_WORDS), ...table(state.perFolder, 1), ...table(state.nameEnds, 1), state.names,
  ];
  const sum = crypto.createHash('sha256');
  const tmp = quickTmpPath(dbPath, process.pid);
  let fd = -1;
  try {
    fd = fs.openSync(tmp, 'w', 0o600);
    const put = (b: Buffer) => { for (let o = 0; o < b.length;) o += fs.writeSync(fd, b, o); };
    for (const part of parts) {
      sum.update(part);
      put(part);
    }
    put(sum.digest());
    fs.closeSync(fd);
    fd = -1;
    fs.renameSync(tmp, quickPath(dbPath));
  } catch {
    // A full disk must not fail a run that is done: without the file the next run is full.
    if (fd >= 0) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
  }
}

/** Called before anything that may change the farm: from then on only a full rescan tells. */
export function dropQuick(dbPath: string): void {
  fs.rmSync(quickPath(dbPath), { force: true });
}
