// System calls Node does not offer: inode flags (what chattr sets), fd-based xattrs,
// and nanosecond timestamps. koffi ships prebuilt binaries inside its npm package, so
// no compiler or download is needed. Everything here works on file descriptors, never
// on paths, so a symlink swapped in by a vserver's root cannot redirect it.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';

// CommonJS packages are required, not imported: no ES module wrapper (2-3 ms a package at start).
const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');

const libc = koffi.load('libc.so.6');

const FS_IOC_GETFLAGS = 0x80086601;
const FS_IOC_SETFLAGS = 0x40086602;
/** FS_IMMUTABLE_FL from linux/fs.h: the 'i' of lsattr. */
export const FS_IMMUTABLE_FL = 0x10;

const Timespec = koffi.struct('vunify_timespec', { tv_sec: 'int64_t', tv_nsec: 'int64_t' });

const cIoctl = libc.func('int ioctl(int fd, unsigned long req, _Inout_ int *arg)');
const cFlistxattr = libc.func('intptr_t flistxattr(int fd, _Out_ uint8_t *list, size_t size)');
const cFgetxattr = libc.func('intptr_t fgetxattr(int fd, const char *name, _Out_ uint8_t *value, size_t size)');
const cFsetxattr = libc.func('int fsetxattr(int fd, const char *name, const uint8_t *value, size_t size, int flags)');
const cLlistxattr = libc.func('intptr_t llistxattr(const uint8_t *path, _Out_ uint8_t *list, size_t size)');
const cLgetxattr = libc.func('intptr_t lgetxattr(const uint8_t *path, const char *name, _Out_ uint8_t *value, size_t size)');
const cFremovexattr = libc.func('int fremovexattr(int fd, const char *name)');
const cFutimens = libc.func(`int futimens(int fd, _In_ ${'vunify_timespec'} *times)`);
void Timespec;

// Aliases share a number (EAGAIN/EWOULDBLOCK, EOPNOTSUPP/ENOTSUP, EDEADLK/EDEADLOCK): the
// first name is the one callers test for, as Node's own errors use it.
const errnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(os.constants.errno)) if (!errnoNames.has(num as number)) errnoNames.set(num as number, name);
for (const name of ['EAGAIN', 'EOPNOTSUPP', 'EDEADLK'] as const) {
  const num = (os.constants.errno as Record<string, number>)[name];
  if (num !== undefined) errnoNames.set(num, name);
}

export function sysError(call: string): NodeJS.ErrnoException {
  const num = koffi.errno();
  const code = errnoNames.get(num) ?? `E${num}`;
  const err = new Error(`${code}: ${call} failed`) as NodeJS.ErrnoException;
  err.code = code;
  err.errno = -num;
  err.syscall = call;
  return err;
}

export function getInodeFlags(fd: number): number {
  const arg = [0];
  if (cIoctl(fd, FS_IOC_GETFLAGS, arg) < 0) throw sysError('ioctl(FS_IOC_GETFLAGS)');
  return arg[0] >>> 0;
}

export function setInodeFlags(fd: number, flags: number): void {
  if (cIoctl(fd, FS_IOC_SETFLAGS, [flags | 0]) < 0) throw sysError('ioctl(FS_IOC_SETFLAGS)');
}

export function isImmutable(fd: number): boolean {
  return (getInodeFlags(fd) & FS_IMMUTABLE_FL) !== 0;
}

/** Sets or clears the immutable flag; returns true when it changed anything. */
export function setImmutable(fd: number, on: boolean): boolean {
  const flags = getInodeFlags(fd);
  const next = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
  if (next === flags) return false;
  setInodeFlags(fd, next);
  return true;
}

export type Xattrs = Record<string, Buffer>;

type ListFn = (buf: Buffer, size: number) => number;
type GetFn = (name: string, buf: Buffer, size: number) => number;

function collectXattrs(list: ListFn, get: GetFn, what: string): Xattrs {
  let size = 256;
  let listBuf: Buffer;
  let n: number;
  for (;;) {
    listBuf = Buffer.alloc(size);
    n = list(listBuf, size);
    if (n >= 0) break;
    const err = sysError(`${what}listxattr`);
    if (err.code === 'ERANGE') { size *= 4; continue; }
    if (err.code === 'ENOTSUP' || err.code === 'EOPNOTSUPP') return {};
    throw err;
  }
  const out: Xattrs = {};
  if (n === 0) return out;
  for (const name of listBuf.subarray(0, n).toString('latin1').split('\0')) {
    if (!name) continue;
    let vsize = 256;
    for (;;) {
      const v = Buffer.alloc(vsize);
      const m = get(name, v, vsize);
      if (m >= 0) { out[name] = v.subarray(0, m); break; }
      const err = sysError(`${what}getxattr`);
      if (err.code === 'ERANGE') { vsize *= 8; continue; }
      if (err.code === 'ENODATA') break; // removed meanwhile
      throw err;
    }
  }
  return out;
}

/** All extended attributes of an open file, by name (binary-safe values). */
export function readXattrs(fd: number): Xattrs {
  return collectXattrs(
    (b, n) => Number(cFlistxattr(fd, b, n)),
    (name, b, n) => Number(cFgetxattr(fd, name, b, n)),
    'f',
  );
}

/**
 * The same by path without following a final symlink (llistxattr): for scans, where
 * opening every file would cost more. The path must be a /proc/self/fd/N/name path.
 */
export function readXattrsAt(p: Buffer | string): Xattrs {
  const z = Buffer.concat([typeof p === 'string' ? Buffer.from(p) : p, Buffer.from([0])]);
  return collectXattrs(
    (b, n) => Number(cLlistxattr(z, b, n)),
    (name, b, n) => Number(cLgetxattr(z, name, b, n)),
    'l',
  );
}

export function writeXattr(fd: number, name: string, value: Buffer): void {
  if (cFsetxattr(fd, name, value, value.length, 0) < 0) throw sysError(`fsetxattr(${name})`);
}

export function removeXattr(fd: number, name: string): void {
  if (cFremovexattr(fd, name) < 0) {
    const err = sysError(`fremovexattr(${name})`);
    if (err.code !== 'ENODATA') throw err;
  }
}

/** Sets atime and mtime with nanosecond precision (Node's futimes rounds through a double). */
export function setTimesNs(fd: number, atimeNs: bigint, mtimeNs: bigint): void {
  const ts = (ns: bigint) => ({ tv_sec: ns / 1_000_000_000n, tv_nsec: ns % 1_000_000_000n });
  if (cFutimens(fd, [ts(atimeNs), ts(mtimeNs)]) < 0) throw sysError('futimens');
}

const cFlock = libc.func('int flock(int fd, int op)');
const LOCK_EX = 2;
const LOCK_NB = 4;

/** Takes an exclusive lock on an open file without waiting; false when another holds it. */
export function tryLock(fd: number): boolean {
  if (cFlock(fd, LOCK_EX | LOCK_NB) === 0) return true;
  const err = sysError('flock');
  if (err.code === 'EWOULDBLOCK' || err.code === 'EAGAIN') return false;
  throw err;
}

const cSyncfs = libc.func('int syncfs(int fd)');

/**
 * Commits everything of the filesystem that holds fd: one journal commit for a whole batch
 * of renames costs what one folder fsync does, where a fsync per folder costs one each.
 */
export function syncFilesystem(fd: number): void {
  if (cSyncfs(fd) < 0) throw sysError('syncfs');
}

/** A name as the kernel takes it: its bytes (names are latin1 strings here) and a NUL. */
const cName = (name: string): Buffer => Buffer.from(`${name}\0`, 'latin1');

const cLinkat = libc.func('int linkat(int olddirfd, const char *oldpath, int newdirfd, const uint8_t *newpath, int flags)');
const AT_EMPTY_PATH = 0x1000;

/**
 * A new name, in an open folder, for the inode behind an open fd (linkat with
 * AT_EMPTY_PATH; root has the CAP_DAC_READ_SEARCH it needs). No path names the source, so
 * a file renamed or swapped meanwhile cannot change what gets linked.
 */
export function linkFd(fd: number, dirFd: number, name: string): void {
  if (cLinkat(fd, '', dirFd, cName(name), AT_EMPTY_PATH) < 0) throw sysError('linkat');
}

const cRenameat2 = libc.func('int renameat2(int olddirfd, const uint8_t *oldpath, int newdirfd, const uint8_t *newpath, unsigned int flags)');
const RENAME_EXCHANGE = 2;
let exchangeWorks = true;

/**
 * Swaps two names in an open folder (renameat2 with RENAME_EXCHANGE): each then names the
 * other's inode, and nothing is freed. False when the filesystem cannot (then never asked
 * again); other failures throw.
 */
export function exchangeAt(dirFd: number, a: string, b: string): boolean {
  if (!exchangeWorks) return false;
  if (cRenameat2(dirFd, cName(a), dirFd, cName(b), RENAME_EXCHANGE) === 0) return true;
  const err = sysError('renameat2');
  if (err.code === 'EINVAL' || err.code === 'ENOSYS' || err.code === 'EOPNOTSUPP') {
    exchangeWorks = false;
    return false;
  }
  throw err;
}

const Iovec = koffi.struct('vunify_iovec', { base: 'void *', len: 'size_t' });
const cPreadv2 = libc.func('intptr_t preadv2(int fd, const vunify_iovec *iov, int iovcnt, int64_t offset, int flags)');
const RWF_NOWAIT = 0x8;
void Iovec;
let nowaitWorks = true;

/**
 * Reads len bytes at pos into buf at off only if the page cache holds them (preadv2 with
 * RWF_NOWAIT): the number read (0 at the end of the file), or -1 when the read would wait
 * on the disk (or the kernel cannot tell: then never again).
 */
export function readCached(fd: number, buf: Buffer, off: number, len: number, pos: number): number {
  if (!nowaitWorks) return -1;
  const n = Number(cPreadv2(fd, { base: buf.subarray(off, off + len), len }, 1, pos, RWF_NOWAIT));
  if (n >= 0) return n;
  const err = sysError('preadv2');
  if (err.code === 'EAGAIN') return -1;
  if (err.code === 'EOPNOTSUPP' || err.code === 'EINVAL' || err.code === 'ENOSYS') {
    nowaitWorks = false;
    return -1;
  }
  throw err;
}

/** The fields of struct stat that vunify uses (what fs.BigIntStats gives, without the cost). */
export interface StatLite {
  dev: bigint; ino: bigint; mode: bigint; nlink: bigint; uid: bigint; gid: bigint; size: bigint;
  atimeNs: bigint; mtimeNs: bigint; ctimeNs: bigint;
  /** 512-byte blocks allocated (st_blocks): what freeing the inode gives back. */
  blocks: bigint;
  isFile(): boolean;
}

// struct stat offsets: x86_64 and the generic layout of arm64.
const LAYOUT = process.arch === 'x64'
  ? { nlink: [16, 8], mode: 24, uid: 28, gid: 32, size: 48, blocks: 64, atime: 72, mtime: 88, ctime: 104 }
  : process.arch === 'arm64'
    ? { nlink: [20, 4], mode: 16, uid: 24, gid: 28, size: 48, blocks: 64, atime: 72, mtime: 88, ctime: 104 }
    : null;
const cFstatat = libc.func('int fstatat(int dirfd, const uint8_t *path, _Out_ uint8_t *buf, int flags)');
const AT_SYMLINK_NOFOLLOW = 0x100;
const S_IFMT = 0o170000n;
const S_IFREG = 0o100000n;
const statBuf = Buffer.alloc(256);
const ns = (b: Buffer, off: number) => b.readBigInt64LE(off) * 1_000_000_000n + b.readBigInt64LE(off + 8);

/**
 * lstat of a name in an open folder (fstatat, no symlink followed), about twice as fast as
 * Node's bigint lstat. Null when the name does not exist.
 */
export function lstatAt(dirFd: number, name: string): StatLite | null {
  if (!LAYOUT) throw new Error(`lstatAt: no struct stat layout for ${process.arch}`);
  if (cFstatat(dirFd, cName(name), statBuf, AT_SYMLINK_NOFOLLOW) < 0) {
    const err = sysError('fstatat');
    if (err.code === 'ENOENT') return null;
    throw err;
  }
  const b = statBuf;
  const mode = BigInt(b.readUInt32LE(LAYOUT.mode));
  return {
    dev: b.readBigUInt64LE(0), ino: b.readBigUInt64LE(8), mode,
    nlink: LAYOUT.nlink[1] === 8 ? b.readBigUInt64LE(LAYOUT.nlink[0]) : BigInt(b.readUInt32LE(LAYOUT.nlink[0])),
    uid: BigInt(b.readUInt32LE(LAYOUT.uid)), gid: BigInt(b.readUInt32LE(LAYOUT.gid)), size: b.readBigInt64LE(LAYOUT.size),
    atimeNs: ns(b, LAYOUT.atime), mtimeNs: ns(b, LAYOUT.mtime), ctimeNs: ns(b, LAYOUT.ctime),
    blocks: b.readBigInt64LE(LAYOUT.blocks),
    isFile: () => (mode & S_IFMT) === S_IFREG,
  };
}

export const hasLstatAt = LAYOUT !== null;

/** What a scan compares first, as the strings and numbers records hold (no BigInt made). */
export interface StatSig { dev: string; ino: string; size: number; mtimeNs: string; ctimeNs: string; mode: number; nlink: number }

const sigName = { buf: Buffer.alloc(4096) };
/**
 * A time as records hold it (nanoseconds as a decimal string) from its seconds and
 * nanoseconds: equal to String(sec * 10^9 + nsec) as BigInt arithmetic gives it, with no
 * BigInt made for a time after 1970.
 */
export function nsText(sec: number, nsec: number): string {
  return sec > 0 ? `${sec}${String(nsec).padStart(9, '0')}` : String(BigInt(sec) * 1_000_000_000n + BigInt(nsec));
}
const nsString = (b: Buffer, off: number): string => nsText(b.readUInt32LE(off) + b.readInt32LE(off + 4) * 2 ** 32, b.readUInt32LE(off + 8));

/**
 * lstatSig: fstatat of a name in an open folder (no symlink followed), as a StatSig; null
 * when the name does not exist. About twice as cheap as lstatAt: no BigInt, no allocation
 * for the name.
 */
export function lstatSig(dirFd: number, name: string): StatSig | null {
  if (!LAYOUT) throw new Error(`lstatSig: no struct stat layout for ${process.arch}`);
  let z = sigName.buf;
  if (name.length + 1 > z.length) z = sigName.buf = Buffer.alloc(name.length * 2 + 1);
  z[z.write(name, 0, 'latin1')] = 0;
  if (cFstatat(dirFd, z, statBuf, AT_SYMLINK_NOFOLLOW) < 0) {
    const err = sysError('fstatat');
    if (err.code === 'ENOENT') return null;
    throw err;
  }
  const b = statBuf;
  const u64 = (off: number) => b.readUInt32LE(off) + b.readUInt32LE(off + 4) * 2 ** 32;
  return {
    dev: String(u64(0)), ino: String(u64(8)), size: u64(LAYOUT.size), mode: b.readUInt32LE(LAYOUT.mode),
    nlink: LAYOUT.nlink[1] === 8 ? u64(LAYOUT.nlink[0]) : b.readUInt32LE(LAYOUT.nlink[0]),
    mtimeNs: nsString(b, LAYOUT.mtime), ctimeNs: nsString(b, LAYOUT.ctime),
  };
}

/** openDirAt that throws the errno (ELOOP, ENOTDIR, ENOENT...) instead of returning -1. */
export function openDirAtOrThrow(dirFd: number, name: string): number {
  const fd = openDirAt(dirFd, Buffer.from(name + '\0', 'latin1'));
  if (fd < 0) throw sysError('openat');
  return fd;
}

const cOpenat = libc.func('int openat(int dirfd, const uint8_t *path, int flags)');
const cClose = libc.func('int close(int fd)');
const cGetdents = libc.func('intptr_t getdents64(int fd, _Out_ uint8_t *buf, size_t count)');
const cLseek = libc.func('int64_t lseek(int fd, int64_t offset, int whence)');
const O_DIRECTORY_NOFOLLOW = 0o200000 | 0o400000 | 0o2000000; // O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC

/**
 * Opens the folder `name` (NUL-terminated bytes) inside an open folder, following no
 * symlink; -1 when it is missing, a symlink or not a folder.
 */
export function openDirAt(dirFd: number, nameZ: Buffer): number {
  return cOpenat(dirFd, nameZ, O_DIRECTORY_NOFOLLOW);
}

export function closeFd(fd: number): void {
  cClose(fd);
}

let dentsBuf = Buffer.alloc(64 * 1024);
// The kernel writes each record's fields and name (with its NUL) but not the padding after
// it up to d_reclen: the buffer is kept zeroed where the last listing was, so the padding
// of the next one reads as zeros and equal listings give equal bytes.
let dentsUsed = 0;

/**
 * The raw linux_dirent64 records of an open folder (d_ino u64, d_off s64, d_reclen u16,
 * d_type u8, NUL-terminated name), read to the end. The slice stays valid until the next
 * call, padding zeroed. Null on a read error. With rewind (for an fd that may have been
 * read before), from the start.
 */
export function readDirents(fd: number, rewind = true): Buffer | null {
  dentsBuf.fill(0, 0, dentsUsed);
  dentsUsed = 0;
  if (rewind && Number(cLseek(fd, 0, 0)) < 0) return null;
  let used = 0;
  for (;;) {
    if (dentsBuf.length - used < 32 * 1024) {
      const bigger = Buffer.alloc(dentsBuf.length * 2);
      dentsBuf.copy(bigger, 0, 0, used);
      dentsBuf = bigger;
    }
    const n = Number(cGetdents(fd, dentsBuf.subarray(used), dentsBuf.length - used));
    if (n < 0) {
      dentsUsed = dentsBuf.length; // what a failed call wrote is unknown
      return null;
    }
    dentsUsed = used + n;
    if (n === 0) break;
    used += n;
  }
  return dentsBuf.subarray(0, used);
}

/** What the tree walk and the quick file's capture compare a listing by (SHA-1: no tenant can make another listing match). */
export const listingDigest = (dents: Buffer): string => crypto.createHash('sha1').update(dents).digest('base64');

/** Calls fn for each entry of a getdents buffer except '.' and '..'; fn returns false to stop. */
export function forEachDirent(buf: Buffer, fn: (ino: number, type: number, nameOff: number, nameEnd: number) => boolean): boolean {
  let off = 0;
  while (off < buf.length) {
    const reclen = buf.readUInt16LE(off + 16);
    const nameOff = off + 19;
    const nameEnd = buf.indexOf(0, nameOff);
    const dot = buf[nameOff] === 0x2e && (nameEnd === nameOff + 1 || (nameEnd === nameOff + 2 && buf[nameOff + 1] === 0x2e));
    if (!dot && !fn(buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * 2 ** 32, buf[off + 18], nameOff, nameEnd)) return false;
    off += reclen;
  }
  return true;
}

/** d_type values of linux_dirent64. */
export const DT_UNKNOWN = 0;
export const DT_DIR = 4;
export const DT_REG = 8;

/** The struct stat buffer statRawAt fills, with the offsets of its fields on this machine. */
export const rawStat = { buf: Buffer.alloc(256), layout: LAYOUT };

/**
 * fstatat (no symlink followed) of a NUL-terminated name into rawStat.buf, with no object
 * made: for checks of thousands of files against recorded values. False on any error.
 */
export function statRawAt(dirFd: number, nameZ: Buffer): boolean {
  return cFstatat(dirFd, nameZ, rawStat.buf, AT_SYMLINK_NOFOLLOW) === 0;
}

const cFcntl = libc.func('int fcntl(int fd, int cmd, int arg)');
const F_SETLEASE = 1024;
const F_GETLEASE = 1025;
const F_RDLCK = 0;
let sigioHandled = false;

/**
 * A read lease on an open (read-only) file: refused with EAGAIN while anyone holds the inode
 * open for writing; once held, every new write-open or truncate of the inode, under any
 * name, waits until the lease goes (closing fd drops it) or lease-break-time passes. The
 * kernel signals such an attempt with SIGIO, whose default action would end the process.
 */
export function takeReadLease(fd: number): void {
  if (!sigioHandled) {
    process.on('SIGIO', () => undefined);
    sigioHandled = true;
  }
  if (cFcntl(fd, F_SETLEASE, F_RDLCK) < 0) throw sysError('fcntl(F_SETLEASE)');
}

/** False once someone tried to open the leased inode for writing (the break is pending, or done). */
export function leaseIntact(fd: number): boolean {
  const r = cFcntl(fd, F_GETLEASE, 0);
  if (r < 0) throw sysError('fcntl(F_GETLEASE)');
  return r === F_RDLCK;
}

/** FS_APPEND_FL, FS_NODUMP_FL, FS_NOATIME_FL...: lsattr's 'a', 'd', 'A'. */
export const FS_APPEND_FL = 0x20;

const cStatx = libc.func('int statx(int dirfd, const uint8_t *path, int flags, unsigned int mask, _Out_ uint8_t *buf)');
const STATX_INO = 0x100;
const STATX_ATTR_IMMUTABLE = 0x10;
const statxBuf = Buffer.alloc(256);

/**
 * The immutable attribute of a name in an open folder, without opening the file (statx's
 * stx_attributes; no symlink followed). Null when the name does not exist; the inode number
 * comes along so the caller can tell it is the inode it means.
 */
export function immutableAt(dirFd: number, name: string): { ino: bigint; immutable: boolean; nlink: number } | null {
  const z = Buffer.from(name + '\0', 'latin1');
  if (cStatx(dirFd, z, AT_SYMLINK_NOFOLLOW, STATX_INO, statxBuf) < 0) {
    const err = sysError('statx');
    if (err.code === 'ENOENT') return null;
    throw err;
  }
  const attrs = statxBuf.readBigUInt64LE(8);
  const mask = statxBuf.readBigUInt64LE(56);
  if ((mask & BigInt(STATX_ATTR_IMMUTABLE)) === 0n) throw new Error('statx: this filesystem does not report the immutable attribute');
  return { ino: statxBuf.readBigUInt64LE(32), immutable: (attrs & BigInt(STATX_ATTR_IMMUTABLE)) !== 0n, nlink: statxBuf.readUInt32LE(16) };
}

const cMadvise = libc.func('int madvise(uintptr_t addr, size_t length, int advice)');
const MADV_DONTNEED = 4;

/**
 * Drops this process's page mappings of a mapped file (the index's LMDB map): the pages stay
 * in the page cache and come back on the next touch, but stop counting in this process's
 * resident memory, which otherwise grows with every index page a run has read. Returns the
 * bytes of mappings advised (0 when the file is not mapped).
 */
export function releaseMappedFile(file: string): number {
  // Reading /proc/self/maps costs ~280 µs (it lists every mapping of the process); a run
  // releases every few hundred index reads, so the file's ranges are kept and each is checked
  // with one readlink of /proc/self/map_files (~17 µs in all) before it is advised: a range
  // unmapped or reused since is never advised, and the maps are read again.
  let ranges = mappedRanges.get(file);
  if (ranges === undefined || ranges.length === 0 || !ranges.every((r) => stillMaps(r, file))) {
    ranges = findMappings(file);
    mappedRanges.set(file, ranges);
  }
  let total = 0;
  for (const r of ranges) if (cMadvise(r.start, r.len, MADV_DONTNEED) === 0) total += Number(r.len);
  return total;
}

interface MappedRange { start: bigint; len: bigint; name: string }
const mappedRanges = new Map<string, MappedRange[]>();

function findMappings(file: string): MappedRange[] {
  let maps: string;
  try {
    maps = fs.readFileSync('/proc/self/maps', 'latin1');
  } catch {
    return [];
  }
  const out: MappedRange[] = [];
  for (const line of maps.split('\n')) {
    // start-end perms offset dev inode   pathname
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \d+\s+(.*)$/.exec(line);
    if (!m || m[3] !== file) continue;
    const start = BigInt(`0x${m[1]}`);
    const end = BigInt(`0x${m[2]}`);
    // map_files names carry no zero padding, unlike the maps' addresses
    out.push({ start, len: end - start, name: `${start.toString(16)}-${end.toString(16)}` });
  }
  return out;
}

function stillMaps(r: MappedRange, file: string): boolean {
  try {
    return fs.readlinkSync(`/proc/self/map_files/${r.name}`, 'latin1') === file;
  } catch {
    return false; // unmapped, or map_files not readable (not root): read the maps again
  }
}
