// Small files are read in place when the page cache holds them, and in libuv's pool when
// not: both ways must give the same bytes, comparisons and hashes (src/fsx/content.ts).
import crypto from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Blake3Hasher } from '../src/fsx/blake3.js';
import { IN_PLACE_MAX, hashFd, readWhole, releaseWhole, resetMisses, sameAsBuffer, sameBytes, smallReads } from '../src/fsx/content.js';
import { readCached } from '../src/fsx/sys.js';

const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
const fadvise = koffi.load('libc.so.6').func('int posix_fadvise(int fd, int64_t offset, int64_t len, int advice)');
const POSIX_FADV_DONTNEED = 4;

let base: string;
beforeAll(() => { base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-content-')); });
afterAll(() => fs.rmSync(base, { recursive: true, force: true }));

const blake3 = (b: Buffer) => { const h = new Blake3Hasher(); h.update(b); return h.digest('hex'); };

/** A file with these bytes, open for reading; `cold` evicts its pages from the cache first. */
function fileWith(name: string, bytes: Buffer, cold = false): number {
  const p = path.join(base, name);
  fs.writeFileSync(p, bytes);
  const fd = fs.openSync(p, 'r');
  if (cold) {
    fs.fsyncSync(fd); // dirty pages cannot be dropped
    expect(fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)).toBe(0);
  }
  return fd;
}

describe('reading small files in place (cached) and in the pool (not cached)', () => {
  const content = crypto.randomBytes(IN_PLACE_MAX - 100);
  const other = Buffer.from(content);
  other[other.length - 1] ^= 1; // differs in the last byte only

  it('reads a cached file in place, with the bytes the file holds', () => {
    const fd = fileWith('warm', content);
    const buf = Buffer.alloc(content.length + 10);
    expect(readCached(fd, buf, 0, buf.length, 0)).toBe(content.length);
    expect(buf.subarray(0, content.length).equals(content)).toBe(true);
    expect(readCached(fd, buf, 5, 100, 1000)).toBe(100); // at an offset in the buffer and the file
    expect(buf.subarray(5, 105).equals(content.subarray(1000, 1100))).toBe(true);
    expect(readCached(fd, buf, 0, 10, content.length)).toBe(0); // end of file
    fs.closeSync(fd);
  });

  /** a and b hold `content`, c holds `other`: every reader must tell them apart. */
  async function expectRightAnswers(a: number, b: number, c: number) {
    expect(await sameAsBuffer(b, content)).toBe(true);
    expect(await sameAsBuffer(c, content)).toBe(false);
    expect((await sameBytes(a, b, undefined, content.length)).same).toBe(true);
    expect((await sameBytes(a, c, undefined, content.length)).same).toBe(false);
    expect((await hashFd(c, other.length)).hash).toBe(blake3(other));
    const whole = await readWhole(a, content.length);
    expect(whole.equals(content)).toBe(true);
    releaseWhole(whole);
    for (const fd of [a, b, c]) fs.closeSync(fd);
  }

  it('compares and hashes cached files in place correctly', async () => {
    await expectRightAnswers(fileWith('a-warm', content), fileWith('b-warm', content), fileWith('c-warm', other));
  });

  it('a file cached only in part reads whole: two copies of the same bytes compare equal', async () => {
    const a = fileWith('a-part', content);
    const b = fileWith('b-part', content, true);
    /** Only b's first 16 KiB in the cache (reading them brings more in: those go again). */
    const halfCached = () => {
      expect(fadvise(b, 0, 0, POSIX_FADV_DONTNEED)).toBe(0);
      expect(fs.readSync(b, Buffer.alloc(16384), 0, 16384, 0)).toBe(16384);
      expect(fadvise(b, 16384, 0, POSIX_FADV_DONTNEED)).toBe(0);
    };
    halfCached();
    expect((await sameBytes(a, b, undefined, content.length)).same).toBe(true);
    halfCached();
    expect(readCached(b, Buffer.alloc(content.length), 0, content.length, 0)).toBe(16384); // what the compare met
    for (const fd of [a, b]) fs.closeSync(fd);
  });

  it('one miss leaves the next cached files read in place; a run of misses sends the next reads to the pool', async () => {
    resetMisses();
    const warm = Array.from({ length: 20 }, (_, i) => fileWith(`w${i}`, content));
    const cold = Array.from({ length: 8 }, (_, i) => fileWith(`k${i}`, content, true));
    const counts = () => ({ ...smallReads });
    // One file not cached (a cached file's readahead mark fails in place the same way).
    let before = counts();
    expect(await sameAsBuffer(cold[0], content)).toBe(true);
    expect(smallReads.pool - before.pool).toBe(1);
    before = counts();
    for (const fd of warm.slice(0, 10)) expect(await sameAsBuffer(fd, content)).toBe(true);
    expect(smallReads.inPlace - before.inPlace).toBe(10); // not paused by the one miss
    // Eight misses in a row (a cold cache): the next reads go to the pool without trying.
    for (const fd of cold) {
      expect(fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)).toBe(0);
      expect(await sameAsBuffer(fd, content)).toBe(true);
    }
    before = counts();
    for (const fd of warm.slice(10)) expect(await sameAsBuffer(fd, content)).toBe(true);
    expect(smallReads.inPlace - before.inPlace).toBe(0);
    expect(smallReads.pool - before.pool).toBe(10);
    for (const fd of [...warm, ...cold]) fs.closeSync(fd);
    resetMisses();
  });

  it('does not read a file that is not cached in place (-1), and the pool reads it right', async () => {
    const fd = fileWith('cold', content, true);
    expect(readCached(fd, Buffer.alloc(4096), 0, 4096, 0)).toBe(-1);
    // The next small reads go through the pool: the same answers.
    await expectRightAnswers(fileWith('a-cold', content, true), fd, fileWith('c-cold', other, true));
  });
});
