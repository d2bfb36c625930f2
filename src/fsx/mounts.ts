// Where a folder is, by identity rather than by name: its device and inode, those of each
// folder above it, and its path inside its filesystem. A bind mount shows one folder at two
// paths, so names alone cannot tell that one root is, or holds, another.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { openDirAtOrThrow } from './sys.js';

const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
const libc = koffi.load('libc.so.6');
const cFstatvfs = libc.func('int fstatvfs(int fd, _Out_ uint8_t *buf)');
// struct statvfs on 64-bit glibc: nine 8-byte fields, then f_flag.
const F_FLAG = 72;
const ST_RDONLY = 1n;

/** True when the filesystem (the mount or its superblock) holding fd is read-only. */
export function isReadOnly(fd: number): boolean {
  const buf = Buffer.alloc(256);
  if (cFstatvfs(fd, buf) < 0) return false; // unknown: the writes themselves will say
  return (buf.readBigUInt64LE(F_FLAG) & ST_RDONLY) !== 0n;
}

export interface Identity { dev: bigint; ino: bigint }
export const sameId = (a: Identity, b: Identity) => a.dev === b.dev && a.ino === b.ino;

export interface Place {
  id: Identity;
  /** Every folder above, reached by `..` (which leaves a mount at its mount point), up to `/`. */
  above: Identity[];
  /** The path inside its filesystem (a bind mount's source included); null if unknown. */
  fsPath: string | null;
}

const idOf = (fd: number): Identity => {
  const st = fs.fstatSync(fd, { bigint: true });
  return { dev: st.dev, ino: st.ino };
};

export function placeOf(fd: number): Place {
  const id = idOf(fd);
  const above: Identity[] = [];
  let cur = fd;
  let curId = id;
  try {
    for (let depth = 0; depth < 4096; depth++) {
      const up = openDirAtOrThrow(cur, '..');
      if (cur !== fd) fs.closeSync(cur);
      cur = up;
      const upId = idOf(up);
      if (sameId(upId, curId)) break; // `/` is its own parent
      above.push(upId);
      curId = upId;
    }
  } finally {
    if (cur !== fd) fs.closeSync(cur);
  }
  return { id, above, fsPath: fsPathOf(fd) };
}

/** True when a is b or lies anywhere below it, seen through any mount. */
export function isWithin(a: Place, b: Place): boolean {
  if (sameId(a.id, b.id) || a.above.some((x) => sameId(x, b.id))) return true;
  if (a.id.dev !== b.id.dev || a.fsPath === null || b.fsPath === null) return false;
  return b.fsPath === '/' || a.fsPath.startsWith(b.fsPath + '/');
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

/** The mount's root inside its filesystem, plus the fd's path below the mount point. */
function fsPathOf(fd: number): string | null {
  try {
    const id = /^mnt_id:\s*(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'))?.[1];
    const line = fs.readFileSync('/proc/self/mountinfo', 'latin1').split('\n').find((l) => l.split(' ')[0] === id);
    if (!id || !line) return null;
    const f = line.split(' ');
    const root = unescape(f[3]);
    const at = unescape(f[4]);
    const p = fs.readlinkSync(`/proc/self/fd/${fd}`, 'latin1');
    if (p.endsWith(' (deleted)')) return null;
    let rel: string;
    if (p === at) rel = '';
    else if (at === '/' && p.startsWith('/')) rel = p;
    else if (p.startsWith(at + '/')) rel = p.slice(at.length);
    else return null; // outside our view of the mount (a deleted folder, another root)
    return (root === '/' ? '' : root) + rel || '/';
  } catch {
    return null;
  }
}
