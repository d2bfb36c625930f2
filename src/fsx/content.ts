// Reading file contents: the BLAKE3 content address and the byte-for-byte comparison
// that guards every link. Both read through open fds in large chunks.
import fs from 'node:fs';
import { Blake3Hasher } from '@napi-rs/blake-hash';

const CHUNK = 1 << 20;

function readAt(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((res, rej) =>
    fs.read(fd, buf, 0, buf.length, pos, (err, n) => (err ? rej(err) : res(n))),
  );
}

/** BLAKE3 of the whole file behind fd, as hex; also returns the bytes read. */
export async function hashFd(fd: number): Promise<{ hash: string; bytes: number }> {
  const hasher = new Blake3Hasher();
  const buf = Buffer.allocUnsafe(CHUNK);
  let pos = 0;
  for (;;) {
    const n = await readAt(fd, buf, pos);
    if (n === 0) break;
    hasher.update(n === buf.length ? buf : buf.subarray(0, n));
    pos += n;
  }
  return { hash: hasher.digest('hex'), bytes: pos };
}

/** True when both fds hold the same bytes (and the same length). */
export async function sameBytes(fdA: number, fdB: number): Promise<boolean> {
  const a = Buffer.allocUnsafe(CHUNK);
  const b = Buffer.allocUnsafe(CHUNK);
  let pos = 0;
  for (;;) {
    const [na, nb] = await Promise.all([readAt(fdA, a, pos), readAt(fdB, b, pos)]);
    if (na !== nb) return false;
    if (na === 0) return true;
    if (a.compare(b, 0, nb, 0, na) !== 0) return false;
    pos += na;
  }
}

function writeAt(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((res, rej) =>
    fs.write(fd, buf, off, len, pos, (err, n) => (err ? rej(err) : res(n))),
  );
}

/** Copies every byte of src into dst (both open fds), from offset 0; returns the length. */
export async function copyFd(src: number, dst: number): Promise<number> {
  const buf = Buffer.allocUnsafe(CHUNK);
  let pos = 0;
  for (;;) {
    const n = await readAt(src, buf, pos);
    if (n === 0) return pos;
    for (let off = 0; off < n; ) off += await writeAt(dst, buf, off, n - off, pos + off);
    pos += n;
  }
}
