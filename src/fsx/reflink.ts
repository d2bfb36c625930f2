// Extent sharing (reflink mode): FIDEDUPERANGE, FIEMAP and what a filesystem supports.
// All on file descriptors, never paths, like sys.ts.
import { createRequire } from 'node:module';
import os from 'node:os';
import { sysError } from './sys.js';

const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
const libc = koffi.load('libc.so.6');

const cIoctlBuf = libc.func('int ioctl(int fd, unsigned long req, _Inout_ uint8_t *arg)');
const cFstatfs = libc.func('int fstatfs(int fd, _Out_ uint8_t *buf)');


export const XFS_MAGIC = 0x58465342;
export const BTRFS_MAGIC = 0x9123683e;
const NAMES = new Map<number, string>([
  [XFS_MAGIC, 'xfs'], [BTRFS_MAGIC, 'btrfs'], [0xef53, 'ext4'], [0x01021994, 'tmpfs'], [0x794c7630, 'overlayfs'],
  [0x6969, 'nfs'], [0x2fc12fc1, 'zfs'], [0xf2f52010, 'f2fs'],
]);

/** statfs's f_type (the first field, a long on x86_64 and arm64). */
export function fsMagic(fd: number): number {
  const buf = Buffer.alloc(128);
  if (cFstatfs(fd, buf) < 0) throw sysError('fstatfs');
  return Number(buf.readBigUInt64LE(0) & 0xffffffffn);
}

/** statfs's used bytes: (f_blocks - f_bfree) * f_bsize. For tests and the bench. */
export function usedBytes(fd: number): number {
  const buf = Buffer.alloc(128);
  if (cFstatfs(fd, buf) < 0) throw sysError('fstatfs');
  const bsize = Number(buf.readBigInt64LE(8));
  return (Number(buf.readBigUInt64LE(16)) - Number(buf.readBigUInt64LE(24))) * bsize;
}

// XFS_IOC_FSGEOMETRY_V1: _IOR('X', 100, struct xfs_fsop_geom_v1), 112 bytes; flags at 92.
const XFS_IOC_FSGEOMETRY_V1 = 0x80705864;
const XFS_FSOP_GEOM_FLAGS_REFLINK = 0x100000;

export interface FsMethods { fs: string; reflink: boolean }

/**
 * Whether the filesystem of fd can share extents between inodes. No file is created: btrfs
 * always can; XFS says so in its geometry (mkfs.xfs -m reflink=1, the default since 5.1).
 */
export function fsMethods(fd: number): FsMethods {
  const magic = fsMagic(fd);
  const fs = NAMES.get(magic) ?? `0x${magic.toString(16)}`;
  if (magic === BTRFS_MAGIC) return { fs, reflink: true };
  if (magic !== XFS_MAGIC) return { fs, reflink: false };
  const geom = Buffer.alloc(112);
  if (cIoctlBuf(fd, XFS_IOC_FSGEOMETRY_V1, geom) < 0) return { fs, reflink: false };
  return { fs, reflink: (geom.readUInt32LE(92) & XFS_FSOP_GEOM_FLAGS_REFLINK) !== 0 };
}

// FIDEDUPERANGE: _IOWR(0x94, 54, struct file_dedupe_range) (24 bytes), with one
// file_dedupe_range_info (32 bytes) after it.
const FIDEDUPERANGE = 0xc0189436;
const FILE_DEDUPE_RANGE_DIFFERS = 1;
/** Bytes per call: btrfs caps a call at 16 MiB, and a call holds both inodes locked. */
export const DEDUPE_CHUNK = 16 << 20;

/**
 * Shares dst's [off, off+len) with src's same range if the kernel finds them equal (it
 * compares under both inodes' locks). Returns the bytes shared, or 'differs'.
 */
export function dedupeRange(srcFd: number, dstFd: number, off: number, len: number): number | 'differs' {
  const b = Buffer.alloc(56);
  b.writeBigUInt64LE(BigInt(off), 0);
  b.writeBigUInt64LE(BigInt(len), 8);
  b.writeUInt16LE(1, 16);
  b.writeBigInt64LE(BigInt(dstFd), 24);
  b.writeBigUInt64LE(BigInt(off), 32);
  if (cIoctlBuf(srcFd, FIDEDUPERANGE, b) < 0) throw sysError('ioctl(FIDEDUPERANGE)');
  const status = b.readInt32LE(48);
  if (status === FILE_DEDUPE_RANGE_DIFFERS) return 'differs';
  if (status < 0) {
    const code = Object.entries(os.constants.errno).find(([, v]) => v === -status)?.[0] ?? `E${-status}`;
    const err = new Error(`${code}: ioctl(FIDEDUPERANGE) failed`) as NodeJS.ErrnoException;
    err.code = code;
    err.errno = status;
    throw err;
  }
  return Number(b.readBigUInt64LE(40));
}

/** Shares all of dst (size bytes) with src, chunk by chunk; 'differs' at the first unequal chunk. */
export function dedupeWhole(srcFd: number, dstFd: number, size: number): 'shared' | 'differs' {
  for (let off = 0; off < size; ) {
    const got = dedupeRange(srcFd, dstFd, off, Math.min(DEDUPE_CHUNK, size - off));
    if (got === 'differs') return 'differs';
    if (got <= 0) throw new Error(`ioctl(FIDEDUPERANGE) shared nothing at offset ${off}`);
    off += got;
  }
  return 'shared';
}

// FS_IOC_FIEMAP: _IOWR('f', 11, struct fiemap) (32 bytes), then 56-byte extents.
const FS_IOC_FIEMAP = 0xc020660b;
const FIEMAP_FLAG_SYNC = 1;
const FIEMAP_EXTENT_LAST = 0x1;
const FIEMAP_EXTENT_UNKNOWN = 0x2;
const FIEMAP_EXTENT_DELALLOC = 0x4;
export const FIEMAP_EXTENT_SHARED = 0x2000;
const BATCH = 256;
const fiemapBuf = Buffer.alloc(32 + 56 * BATCH); // reused: one call at a time (synchronous)

export interface Extent { logical: number; physical: number; length: number; flags: number }

/** The file's extents (FIEMAP, after writing back pending data). */
export function extentsOf(fd: number): Extent[] {
  const out: Extent[] = [];
  const b = fiemapBuf;
  let start = 0n;
  for (;;) {
    b.fill(0);
    b.writeBigUInt64LE(start, 0);
    b.writeBigUInt64LE(0xffffffffffffffffn - start, 8);
    b.writeUInt32LE(FIEMAP_FLAG_SYNC, 16);
    b.writeUInt32LE(BATCH, 24);
    if (cIoctlBuf(fd, FS_IOC_FIEMAP, b) < 0) throw sysError('ioctl(FS_IOC_FIEMAP)');
    const n = b.readUInt32LE(20);
    if (n === 0) return out;
    let last = false;
    for (let i = 0; i < n; i++) {
      const o = 32 + 56 * i;
      const e = { logical: Number(b.readBigUInt64LE(o)), physical: Number(b.readBigUInt64LE(o + 8)), length: Number(b.readBigUInt64LE(o + 16)), flags: b.readUInt32LE(o + 40) };
      out.push(e);
      last = (e.flags & FIEMAP_EXTENT_LAST) !== 0;
    }
    const e = out[out.length - 1];
    if (last) return out;
    start = BigInt(e.logical + e.length);
  }
}

/**
 * True when every byte of the server file below size lies in the reference's own extents at
 * the same offset: shared, same physical place. A hole or pending data is not shared.
 */
export function sameExtents(ref: Extent[], srv: Extent[], size: number): boolean {
  const bad = FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC;
  let pos = 0;
  for (const s of srv) {
    if (s.logical > pos || (s.flags & bad) || !(s.flags & FIEMAP_EXTENT_SHARED)) return false;
    // Each piece of s must sit in a reference extent with the same logical-to-physical offset.
    let p = Math.max(pos, s.logical);
    const end = s.logical + s.length;
    while (p < end && p < size) {
      const r = ref.find((x) => x.logical <= p && p < x.logical + x.length);
      if (!r || (r.flags & bad) || r.physical - r.logical !== s.physical - s.logical) return false;
      p = Math.min(end, r.logical + r.length);
    }
    pos = end;
    if (pos >= size) return true;
  }
  return pos >= size;
}

/** Bytes of extents that nothing else shares: what giving them up frees. */
export function privateBytes(ext: Extent[]): number {
  let n = 0;
  for (const e of ext) if (!(e.flags & (FIEMAP_EXTENT_SHARED | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_UNKNOWN))) n += e.length;
  return n;
}

/** Each root's filesystem and the methods it supports (plan's report). */
export function filesystemsOf(roots: Array<{ name: string; root: string; fd: number }>): Array<{ name: string; root: string; fs: string; methods: Array<'link' | 'reflink'> }> {
  return roots.map((r) => {
    const m = fsMethods(r.fd);
    return { name: r.name, root: r.root, fs: m.fs, methods: m.reflink ? ['link', 'reflink'] : ['link'] };
  });
}
