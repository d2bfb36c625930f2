// The quick rescan's view of the disk: an inode as 12 u32 words (see INODE_WORDS), read
// from struct stat or made from a record, and walks over folders given in order, one fd per
// depth, following no symlink. Also the state of a package database's files and folders.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { RelPath } from '../fsx/rootdir.js';
import { DT_REG, closeFd, forEachDirent, nsText, openDirAt, rawStat, readDirents, statRawAt } from '../fsx/sys.js';
import { INODE_WORDS } from '../store/quick-file.js';

export const nameZ = (name: string) => Buffer.from(name + '\0', 'latin1');

export const L = rawStat.layout;
/** The 12 words of an inode as struct stat holds them (see INODE_WORDS). */
export function statWords(out: Uint32Array, at: number): void {
  const b = rawStat.buf;
  const offs = [8, 48, L!.mtime, L!.mtime + 8, L!.ctime, L!.ctime + 8];
  for (let k = 0; k < 6; k++) {
    out[at + 2 * k] = b.readUInt32LE(offs[k]);
    out[at + 2 * k + 1] = b.readUInt32LE(offs[k] + 4);
  }
}

export function sameWords(a: Uint32Array, at: number): boolean {
  const b = rawStat.buf;
  return b.readUInt32LE(8) === a[at] && b.readUInt32LE(12) === a[at + 1] &&
    b.readUInt32LE(48) === a[at + 2] && b.readUInt32LE(52) === a[at + 3] &&
    b.readUInt32LE(L!.mtime) === a[at + 4] && b.readUInt32LE(L!.mtime + 4) === a[at + 5] &&
    b.readUInt32LE(L!.mtime + 8) === a[at + 6] && b.readUInt32LE(L!.mtime + 12) === a[at + 7] &&
    b.readUInt32LE(L!.ctime) === a[at + 8] && b.readUInt32LE(L!.ctime + 4) === a[at + 9] &&
    b.readUInt32LE(L!.ctime + 8) === a[at + 10] && b.readUInt32LE(L!.ctime + 12) === a[at + 11];
}

export const ROOT_FLAGS = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW;

/**
 * Walks folders given in order (each after its parent), holding one fd per depth; fn gets
 * each folder and its fd. A folder that cannot be opened ends the walk, or with skipMissing is
 * left out with everything below it (its parent's listing still shows it). With lazy, folders
 * are opened only when fn asks (fd() is -1 when that fails; fn then says 'missing'): a walk
 * over listings it already holds opens nothing.
 */
export function walkFolders<T extends { depth: number; name: string }>(
  rootFd: number, folders: T[], fn: (f: T, fd: () => number) => boolean | 'missing', skipMissing = false, lazy = false,
): boolean {
  const fds: Array<number | undefined> = []; // per depth: open fd, -1 failed, undefined not opened yet
  const path: T[] = [];
  let skipBelow = Infinity;
  const openAt = (d: number): number => {
    const have = fds[d];
    if (have !== undefined) return have;
    const parent = d === 0 ? rootFd : openAt(d - 1);
    const fd = d === 0 ? rootFd : parent < 0 ? -1 : openDirAt(parent, nameZ(path[d].name));
    fds[d] = fd;
    return fd;
  };
  const close = (fd: number | undefined) => { if (fd !== undefined && fd >= 0 && fd !== rootFd) closeFd(fd); };
  try {
    for (const f of folders) {
      if (f.depth > skipBelow) continue;
      skipBelow = Infinity;
      while (path.length > f.depth) {
        path.pop();
        close(fds.pop());
      }
      if (path.length !== f.depth) return false;
      path.push(f);
      fds.push(undefined);
      if (!lazy && openAt(f.depth) < 0) {
        if (!skipMissing) return false;
        skipBelow = f.depth;
        continue;
      }
      const went = fn(f, () => openAt(f.depth));
      if (went === 'missing' && skipMissing) skipBelow = f.depth;
      else if (!went) return false;
    }
    return true;
  } finally {
    for (const fd of fds) close(fd);
  }
}

export function folderOrder(folders: Iterable<RelPath>): Array<{ rel: RelPath; depth: number; name: string }> {
  const children = new Map<RelPath, Set<string>>();
  const add = (rel: RelPath) => {
    while (rel !== '') {
      const i = rel.lastIndexOf('/');
      const parent = i < 0 ? '' : rel.slice(0, i);
      const kids = children.get(parent) ?? new Set();
      if (kids.has(rel)) return;
      kids.add(rel);
      children.set(parent, kids);
      rel = parent;
    }
  };
  for (const f of folders) add(f);
  const out: Array<{ rel: RelPath; depth: number; name: string }> = [];
  const visit = (rel: RelPath, depth: number) => {
    out.push({ rel, depth, name: rel.slice(rel.lastIndexOf('/') + 1) });
    for (const k of [...(children.get(rel) ?? [])].sort()) visit(k, depth + 1);
  };
  visit('', 0);
  return out;
}

/**
 * A package database file's state: its inode's words, 'empty', or 'absent' (or 'not a file'). The
 * folders on the way are opened one by one, following no symlink.
 */
export function fileSignature(rootFd: number, rel: RelPath): string {
  const parts = rel.split('/');
  const name = parts.pop()!;
  const fds: number[] = [];
  try {
    let fd = rootFd;
    for (const p of parts) {
      fd = openDirAt(fd, nameZ(p));
      if (fd < 0) return 'absent';
      fds.push(fd);
    }
    if (!statRawAt(fd, nameZ(name))) return 'absent';
    if ((rawStat.buf.readUInt32LE(L!.mode) & 0o170000) !== 0o100000) return 'not a file';
    // An empty file by its emptiness alone: SQLite truncates its write-ahead log on every
    // close, readers' included, which moves its times and nothing else.
    if (rawStat.buf.readUInt32LE(48) === 0 && rawStat.buf.readUInt32LE(52) === 0) return 'empty';
    const w = new Uint32Array(INODE_WORDS);
    statWords(w, 0);
    return Buffer.from(w.buffer).toString('base64');
  } finally {
    for (const fd of fds) closeFd(fd);
  }
}

/** A digest of the package database's folders (listings, regular files) and files, to see them change. */
export function inputsDigest(rootFd: number, inputsOf: { folders: RelPath[]; files: RelPath[] }): string {
  const h = crypto.createHash('sha256');
  for (const rel of inputsOf.files) h.update(`${rel}\0${fileSignature(rootFd, rel)}\0`);
  const inputs = inputsOf.folders;
  const wanted = new Set(inputs);
  const words = new Uint32Array(INODE_WORDS);
  walkFolders(rootFd, folderOrder(inputs), (f, openFd) => {
    const fd = openFd();
    if (!wanted.has(f.rel)) return true;
    const dents = readDirents(fd, f.depth === 0);
    if (!dents) return false;
    h.update(f.rel + '\0');
    h.update(dents);
    forEachDirent(dents, (_ino, type, nameOff, nameEnd) => {
      if (type === DT_REG && statRawAt(fd, dents.subarray(nameOff, nameEnd + 1))) {
        statWords(words, 0);
        h.update(words);
      }
      return true;
    });
    return true;
  }, true);
  return h.digest('base64');
}

/** What the capture and the survey know of an inode: a record's signature. */
export type CaptureRecordSig = { size: number; mtimeNs: string; ctimeNs: string };
export type CaptureRecord = CaptureRecordSig & { dev: string; ino: string; words?: Uint32Array };

/** A record's inode as words (see INODE_WORDS), as struct stat would hold them. */
export function recordWords(rec: CaptureRecordSig & { words?: Uint32Array }, ino: number, w: Uint32Array): void {
  if (rec.words) {
    w.set(rec.words); // the survey's record of an inode: its words as the check compares them
    return;
  }
  const put = (k: number, v: bigint) => {
    const u = BigInt.asUintN(64, v);
    w[2 * k] = Number(u & 0xffffffffn);
    w[2 * k + 1] = Number(u >> 32n);
  };
  const time = (k: number, nsText: string) => {
    const ns = BigInt(nsText);
    let sec = ns / 1_000_000_000n;
    let nsec = ns % 1_000_000_000n;
    if (nsec < 0n) { sec -= 1n; nsec += 1_000_000_000n; } // struct stat: floor seconds, 0 <= nsec
    put(k, sec);
    put(k + 1, nsec);
  };
  // Plain numbers for what fits (inode numbers, sizes, times after 1970): no BigInt per file.
  const num = (k: number, v: number) => {
    w[2 * k] = v >>> 0;
    w[2 * k + 1] = Math.floor(v / 0x1_0000_0000);
  };
  const fast = (k: number, nsText: string) => {
    if (nsText.length < 10 || nsText.length > 24 || nsText[0] === '-') return false;
    num(k, Number(nsText.slice(0, -9)));
    num(k + 1, Number(nsText.slice(-9)));
    return true;
  };
  if (Number.isSafeInteger(ino)) num(0, ino);
  else put(0, BigInt(ino));
  num(1, rec.size);
  if (!fast(2, rec.mtimeNs)) time(2, rec.mtimeNs);
  if (!fast(4, rec.ctimeNs)) time(4, rec.ctimeNs);
}

/** True when the inode words at `at` are w. */
export function sameSlot(words: ArrayLike<number>, at: number, w: Uint32Array): boolean {
  for (let i = 0; i < INODE_WORDS; i++) if (words[at + i] !== w[i]) return false;
  return true;
}

/** An inode's size, mtime and ctime as records hold them, from its words (see INODE_WORDS). */
export function wordsSig(words: ArrayLike<number>, at: number): CaptureRecordSig {
  // Seconds are a signed 64-bit word pair; nanoseconds fit the low word.
  const ns = (k: number) => nsText(words[at + 2 * k] + (words[at + 2 * k + 1] | 0) * 0x1_0000_0000, words[at + 2 * k + 2]);
  return { size: words[at + 2] + words[at + 3] * 0x1_0000_0000, mtimeNs: ns(2), ctimeNs: ns(4) };
}

/**
 * Moves each slot i of `width` words to slot to[i], in place (to is a permutation of 0..n-1):
 * the capture's table is put in check order without a second table beside it.
 */
export function permuteSlots(words: Uint32Array, to: Uint32Array, n: number, width: number): void {
  const carry = new Uint32Array(width);
  const held = new Uint32Array(width);
  const placed = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    if (placed[i]) continue;
    // Follow i's cycle: each slot's words go to their place, whose words are carried on.
    carry.set(words.subarray(i * width, (i + 1) * width));
    let j = i;
    do {
      const dst = to[j];
      held.set(words.subarray(dst * width, (dst + 1) * width));
      words.set(carry, dst * width);
      carry.set(held);
      placed[dst] = 1;
      j = dst;
    } while (j !== i);
  }
}
