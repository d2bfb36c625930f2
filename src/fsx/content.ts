// Reading file contents: the BLAKE3 content address and the byte-for-byte comparison
// that guards every link. Both read through open fds in large chunks.
import fs from 'node:fs';
import { Blake3Hasher } from './blake3.js';
import { readCached } from './sys.js';

const CHUNK = 1 << 20;

// Read buffers are reused: a fresh 1 MiB buffer per file costs more in GC than the read.
const pool: Buffer[] = [];
const take = () => pool.pop() ?? Buffer.allocUnsafeSlow(CHUNK);
const give = (...bufs: Buffer[]) => { for (const b of bufs) if (pool.length < 16) pool.push(b); };

function readAt(fd: number, buf: Buffer, pos: number, len = buf.length, off = 0): Promise<number> {
  return new Promise((res, rej) =>
    fs.read(fd, buf, off, len, pos, (err, n) => (err ? rej(err) : res(n))),
  );
}

/**
 * Files up to this size are read in place when the page cache holds them: a trip through
 * libuv's pool (a thread woken, then the main thread) costs more than copying such a file
 * (measured on the default bench farm: compare 1.49-1.67 s against 1.90-2.11 s). A file not
 * cached is read in the pool, where reads wait on the disk together.
 */
export const IN_PLACE_MAX = 64 << 10;

/**
 * After MISS_RUN misses in a row, this many small reads go to the pool before the next try in
 * place: a miss still starts the disk's readahead from the main thread (measured on a cold
 * cache, trying every file made the default farm's compare 0.9-1.1 s slower). One miss alone
 * says little: a cached file whose page carries the readahead mark of an earlier sequential
 * read (`cat`, a program reading it) fails in place until that readahead is done. Measured
 * here after `cat` of 5,000 cached files: 22% missed, and missed again when retried at once;
 * a pause after each miss sent most of a warm farm's reads to the pool.
 */
const MISS_PAUSE = 256;
const MISS_RUN = 8;
let pauseLeft = 0;
let missRun = 0;
/** Small reads made in place and in the pool (for tests). */
export const smallReads = { inPlace: 0, pool: 0 };
/** Forgets past misses (tests start from a known state). */
export function resetMisses(): void {
  pauseLeft = 0;
  missRun = 0;
}

/**
 * readAt, in place when `small` and the bytes are cached. Like pread on a file, it reads all
 * of len unless the file ends first: an in-place read stops where the cached pages stop, so
 * the rest is asked for again, and read in the pool if it is not cached (sameBytes takes two
 * files' counts differing for their contents differing).
 */
function readSmall(fd: number, buf: Buffer, pos: number, small: boolean, len = buf.length, off = 0): Promise<number> | number {
  let got = 0;
  if (small && pauseLeft > 0) pauseLeft--;
  else if (small) {
    for (;;) {
      const n = readCached(fd, buf, off + got, len - got, pos + got);
      if (n < 0) break;
      got += n;
      if (n === 0 || got === len) {
        missRun = 0;
        smallReads.inPlace++;
        return got;
      }
    }
    if (++missRun >= MISS_RUN) {
      pauseLeft = MISS_PAUSE;
      missRun = 0;
    }
  }
  if (small) smallReads.pool++;
  const rest = readAt(fd, buf, pos + got, len - got, off + got);
  return got === 0 ? rest : rest.then((k) => got + k);
}

/** BLAKE3 of the whole file behind fd, as hex; also returns the bytes read. */
export async function hashFd(fd: number, size?: number): Promise<{ hash: string; bytes: number }> {
  const hasher = new Blake3Hasher();
  const buf = take();
  const small = size !== undefined && size <= IN_PLACE_MAX;
  let pos = 0;
  try {
    for (;;) {
      const n = await readSmall(fd, buf, pos, small);
      if (n === 0) break;
      hasher.update(n === buf.length ? buf : buf.subarray(0, n));
      pos += n;
    }
  } finally {
    give(buf);
  }
  return { hash: hasher.digest('hex'), bytes: pos };
}

/** BLAKE3 of no bytes: the hash of every empty file, known without reading. */
export const EMPTY_HASH = new Blake3Hasher().digest('hex');

/**
 * True when both fds hold the same bytes (and the same length). With a hasher, A's bytes
 * are hashed in the same pass (complete only when the result is true). With the expected
 * size, a short read at that size ends the loop without one more read for end of file
 * (the callers check the size and signature of both files around the comparison).
 */
export async function sameBytes(fdA: number, fdB: number, hashA?: Blake3Hasher, size?: number): Promise<{ same: boolean; bytes: number }> {
  const a = take();
  const b = take();
  const small = size !== undefined && size <= IN_PLACE_MAX;
  let pos = 0;
  try {
    for (;;) {
      if (size !== undefined && pos === size && pos > 0) return { same: true, bytes: pos };
      const ra = readSmall(fdA, a, pos, small);
      const rb = readSmall(fdB, b, pos, small);
      const [na, nb] = typeof ra === 'number' && typeof rb === 'number' ? [ra, rb] : await Promise.all([ra, rb]);
      if (na !== nb) return { same: false, bytes: pos + Math.max(na, nb) };
      if (na === 0) return { same: true, bytes: pos };
      if (a.compare(b, 0, nb, 0, na) !== 0) return { same: false, bytes: pos + na };
      hashA?.update(na === a.length ? a : a.subarray(0, na));
      pos += na;
    }
  } finally {
    give(a, b);
  }
}

function writeAt(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((res, rej) =>
    fs.write(fd, buf, off, len, pos, (err, n) => (err ? rej(err) : res(n))),
  );
}

/**
 * Copies every byte of src into dst (both open fds), from offset 0, or at most `limit` bytes
 * (a file a tenant keeps appending to then cannot make the copy endless); returns the length.
 */
export async function copyFd(src: number, dst: number, limit = Infinity): Promise<number> {
  const buf = take();
  let pos = 0;
  try {
    for (;;) {
      const n = pos < limit ? await readAt(src, buf, pos, Math.min(buf.length, limit - pos)) : 0;
      if (n === 0) return pos;
      for (let off = 0; off < n; ) off += await writeAt(dst, buf, off, n - off, pos + off);
      pos += n;
    }
  } finally {
    give(buf);
  }
}

/** The largest file readWhole holds; its buffers are this size. */
export const WHOLE_MAX = 8 << 20;

// Buffers that hold whole files, reused: a fresh multi-megabyte buffer per file is a fresh
// mapping for malloc, faulted in page by page and unmapped again by the GC (measured: a
// default-farm compare phase 1.55-1.67 s with fresh buffers, 0.99-1.36 s with these).
const wholePool: Buffer[] = [];

/** A buffer readWhole returned, no longer used: kept for the next call. */
export function releaseWhole(buf: Buffer): void {
  if (buf.buffer.byteLength === WHOLE_MAX && wholePool.length < 8) wholePool.push(Buffer.from(buf.buffer, 0, WHOLE_MAX));
}

/**
 * The whole content of a file of at most WHOLE_MAX bytes, in a reused buffer: hand it back
 * with releaseWhole when done.
 */
export async function readWhole(fd: number, size: number): Promise<Buffer> {
  if (size > WHOLE_MAX) throw new RangeError(`readWhole: ${size} bytes is over ${WHOLE_MAX}`);
  const buf = (wholePool.pop() ?? Buffer.allocUnsafeSlow(WHOLE_MAX)).subarray(0, size);
  const small = size <= IN_PLACE_MAX;
  let pos = 0;
  while (pos < size) {
    const n = await readSmall(fd, buf, pos, small, size - pos, pos);
    if (n === 0) break;
    pos += n;
  }
  return pos === size ? buf : buf.subarray(0, pos);
}

/** True when the file behind fd holds exactly these bytes. */
export async function sameAsBuffer(fd: number, want: Buffer): Promise<boolean> {
  const b = take();
  const small = want.length <= IN_PLACE_MAX;
  let pos = 0;
  try {
    for (;;) {
      const n = await readSmall(fd, b, pos, small);
      if (n === 0) return pos === want.length;
      if (pos + n > want.length || b.compare(want, pos, pos + n, 0, n) !== 0) return false;
      pos += n;
      if (pos === want.length) return true; // size equality is checked by the caller's signatures
    }
  } finally {
    give(b);
  }
}
