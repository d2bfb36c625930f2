// A name of an inode met earlier in the same scan takes that inode's record (its hash, its
// xattrs digest) without reading the file again, and only while the whole signature matches;
// on a rescan, the names share one record object.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RootDir } from '../src/fsx/rootdir.js';
import { hashFiles, scanRoot, type InodeCache, type ScanStats } from '../src/scan.js';
import { Index } from '../src/store/index-db.js';

let base: string;
let index: Index;
beforeAll(async () => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-twins-'));
  for (const r of ['a', 'b']) fs.mkdirSync(path.join(base, r, 'usr'), { recursive: true });
  fs.writeFileSync(path.join(base, 'a/usr/f'), 'shared content\n');
  fs.writeFileSync(path.join(base, 'a/usr/g'), 'other content\n');
  fs.linkSync(path.join(base, 'a/usr/f'), path.join(base, 'b/usr/f'));
  fs.linkSync(path.join(base, 'a/usr/g'), path.join(base, 'b/usr/g'));
  index = await Index.open(path.join(base, 'index'));
});
afterAll(async () => {
  await index?.close();
  fs.rmSync(base, { recursive: true, force: true });
});

describe('scanRoot', () => {
  it('gives a second name of an inode the first name\'s record when the signature still matches', async () => {
    const stats: ScanStats = { filesHashed: 0, bytesHashed: 0, filesStatted: 0 };
    const a = await RootDir.open(path.join(base, 'a'));
    const b = await RootDir.open(path.join(base, 'b'));
    const fake = 'ab'.repeat(32);
    const first = await scanRoot(a, ['usr/f', 'usr/g'], index, stats);
    // What a read would have learnt, written as the records of root a.
    const rec = (e: ReturnType<typeof first.get>) => (e?.kind === 'file' ? e.rec : null)!;
    await index.putFiles([[a.path, 'usr/f', { ...rec(first.get('usr/f')), hash: fake }], [a.path, 'usr/g', { ...rec(first.get('usr/g')), hash: fake }]]);
    const inodes: InodeCache = new Map();
    await scanRoot(a, ['usr/f', 'usr/g'], index, stats, { inodes });
    // g changes between the two scans: same inode, another signature.
    fs.appendFileSync(path.join(base, 'a/usr/g'), 'more\n');
    const second = await scanRoot(b, ['usr/f', 'usr/g'], index, stats, { inodes });
    expect(rec(second.get('usr/f'))).toMatchObject({ ino: rec(first.get('usr/f')).ino, hash: fake });
    expect(rec(second.get('usr/g')).ino).toBe(rec(first.get('usr/g')).ino);
    expect(rec(second.get('usr/g')).hash).toBe(''); // not the stale twin's: read later
    // scanRoot reads no content; the hashing step after it reads g only: f's hash is known.
    await hashFiles(b, second, ['usr/f', 'usr/g'], index, stats);
    expect(stats.filesHashed).toBe(1);
    expect(stats.bytesHashed).toBe(fs.statSync(path.join(base, 'b/usr/g')).size);
    expect(rec(second.get('usr/f')).hash).toBe(fake);
    expect(rec(second.get('usr/g')).hash).not.toBe('');
  });

  it('gives the names of one inode one record object on a rescan, and writes no unchanged record again', async () => {
    const stats: ScanStats = { filesHashed: 0, bytesHashed: 0, filesStatted: 0 };
    const a = await RootDir.open(path.join(base, 'a'));
    const b = await RootDir.open(path.join(base, 'b'));
    await scanRoot(a, ['usr/f'], index, stats);
    await scanRoot(b, ['usr/f'], index, stats);
    const written: string[] = [];
    index.trackFiles((root, rel) => written.push(`${root}:${rel}`));
    const inodes: InodeCache = new Map();
    const ra = (await scanRoot(a, ['usr/f'], index, stats, { inodes })).get('usr/f');
    const rb = (await scanRoot(b, ['usr/f'], index, stats, { inodes })).get('usr/f');
    expect(ra?.kind === 'file' && rb?.kind === 'file' && rb.rec === ra.rec).toBe(true);
    expect(written).toEqual([]);
    // A name whose record differs in any field keeps its own: here its package.
    const rc = (await scanRoot(b, ['usr/f'], index, stats, { inodes, pkgOf: () => 'other' })).get('usr/f');
    expect(rc?.kind === 'file' && ra?.kind === 'file' && rc.rec !== ra.rec && rc.rec.pkg === 'other').toBe(true);
    expect(written).toEqual([`${b.path}:usr/f`]);
  });
});
