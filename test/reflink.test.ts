// --method reflink (issue 19) on real filesystems: loop-mounted XFS (reflink=1) and btrfs,
// and ext4, which is refused. Checked on the filesystem itself: statfs's used blocks,
// filefrag's shared extents, every file's inode and metadata, lsattr.
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { usedBytes } from '../src/fsx/reflink.js';
import { writeXattr } from '../src/fsx/sys.js';
import { snapshot, strayTemps, vunify, type FileSnap } from './helpers/tree.js';
import { errLines, removeTree } from './helpers/treefarm.js';

const base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-reflink-'));
const mounts: string[] = [];
afterAll(() => removeTree(base, mounts));

/** A fresh loop-mounted filesystem; throws a clear error when it cannot be made. */
function loopMount(type: 'xfs' | 'btrfs' | 'ext4', name: string = type): string {
  const img = path.join(base, `${name}.img`);
  const dir = path.join(base, name);
  fs.mkdirSync(dir);
  fs.closeSync(fs.openSync(img, 'w'));
  fs.truncateSync(img, 512 << 20);
  const mkfs = { xfs: ['mkfs.xfs', '-q', '-m', 'reflink=1', img], btrfs: ['mkfs.btrfs', '-q', img], ext4: ['mkfs.ext4', '-q', '-F', img] }[type];
  for (const cmd of [mkfs, ['mount', '-o', 'loop', img, dir]]) {
    const r = spawnSync(cmd[0], cmd.slice(1), { encoding: 'utf8' });
    if (r.status !== 0) {
      throw new Error(`cannot make a ${type} loop mount for this test (${cmd.join(' ')}: ${r.error?.message ?? r.stderr.trim()}); it needs root, loop devices and ${mkfs[0]} (.ci/run installs xfsprogs and btrfs-progs)`);
    }
  }
  mounts.push(dir);
  return dir;
}

const MiB = 1 << 20;
const rand = (n: number) => crypto.randomBytes(n);
/** Identical in every root: what reflink mode must share (20 MiB: more than one 16 MiB call). */
const SAME: Record<string, Buffer> = { 'usr/lib/big': rand(20 * MiB), 'usr/lib/mid': rand(3 * MiB), 'usr/share/tail': rand(100_001) };
const SWAP = 'usr/lib/swapme';
const WRITE = 'usr/lib/writeme';
const T0 = new Date('2024-01-02T03:04:05Z');

/** ref, s1, s2 below dir/vs: files written one by one (private extents), metadata differing in the servers. */
function makeFarm(dir: string): string {
  const vs = path.join(dir, 'vs');
  const extra = { [SWAP]: rand(MiB), [WRITE]: rand(MiB), 'etc/conf': rand(64 * 1024) };
  for (const root of ['ref', 's1', 's2']) {
    const files = { ...SAME, ...extra, 'usr/lib/own': rand(MiB) };
    for (const [rel, data] of Object.entries(files)) {
      const p = path.join(vs, root, rel);
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.writeFileSync(p, data);
      fs.utimesSync(p, T0, root === 'ref' ? T0 : new Date(T0.getTime() + 1000 * rel.length));
    }
  }
  // Metadata need not match: the inode stays private.
  fs.chmodSync(path.join(vs, 's1/usr/lib/big'), 0o600);
  fs.chownSync(path.join(vs, 's2/usr/lib/mid'), 1234, 5678);
  const fd = fs.openSync(path.join(vs, 's2/usr/lib/big'), 'r');
  writeXattr(fd, 'user.tenant', Buffer.from('mine'));
  fs.closeSync(fd);
  execFileSync('sync');
  return vs;
}

/** filefrag -v: each extent's physical start and whether it is shared. */
function extents(file: string): Array<{ physical: number; shared: boolean }> {
  const out = execFileSync('filefrag', ['-v', file], { encoding: 'utf8' });
  return [...out.matchAll(/^\s*\d+:\s+\d+\.\.\s*\d+:\s+(\d+)\.\.\s*\d+:\s+\d+:.*$/gm)].map((m) => ({ physical: Number(m[1]), shared: /shared/.test(m[0]) }));
}
const sharedWith = (a: string, b: string) => {
  const ea = extents(a);
  const eb = extents(b);
  return eb.length > 0 && eb.every((e) => e.shared) && JSON.stringify(ea.map((e) => e.physical)) === JSON.stringify(eb.map((e) => e.physical));
};
const noneShared = (f: string) => extents(f).every((e) => !e.shared);

function used(dir: string, type: string): number {
  if (type === 'btrfs') execFileSync('btrfs', ['filesystem', 'sync', dir]);
  execFileSync('sync', ['-f', dir]);
  const fd = fs.openSync(dir, 'r');
  try {
    return usedBytes(fd);
  } finally {
    fs.closeSync(fd);
  }
}

const meta = (s: FileSnap) => ({ ino: s.ino, mode: s.mode, uid: s.uid, gid: s.gid, size: s.size, atimeNs: s.atimeNs, mtimeNs: s.mtimeNs, ctimeNs: s.ctimeNs, sha: s.sha, xattrs: s.xattrs });
const files = (snap: Map<string, FileSnap>) => new Map([...snap].filter(([, s]) => s.type === 'file').map(([k, s]) => [k, meta(s)]));

function noImmutable(dir: string): void {
  const r = spawnSync('sh', ['-c', 'find "$1" -type f -exec lsattr {} +', 'sh', dir], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  const lines = r.stdout.split('\n').filter(Boolean);
  expect(lines.length).toBeGreaterThan(10);
  expect(lines.filter((l) => l.split(/\s+/)[0].includes('i'))).toEqual([]);
}

describe.each(['xfs', 'btrfs'] as const)('--method reflink on %s', (type) => {
  let dir = '';
  let vs = '';
  let args: string[] = [];
  let setupError: unknown = null;
  const ready = () => { if (setupError) throw setupError; };
  let shared = 0;
  beforeAll(() => {
    try {
      dir = loopMount(type);
      vs = makeFarm(dir);
      args = ['--vservers-dir', vs, '--db', path.join(dir, 'index'), '--all-files', '--method', 'reflink', 'ref', 's1', 's2'];
    } catch (err) {
      setupError = err;
    }
  });
  const at = (root: string, rel: string) => path.join(vs, root, rel);

  it('plan says the filesystem supports both methods and what would be shared, and changes nothing', () => {
    ready();
    const before = snapshot(vs);
    const r = vunify(['plan', '--json', ...args]);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.method).toBe('reflink');
    expect(rep.filesystems.map((f: { fs: string; methods: string[] }) => [f.fs, f.methods])).toEqual(Array(3).fill([type, ['link', 'reflink']]));
    // big, mid, tail, swapme, writeme in each server; /etc and own stay out.
    expect(rep.totals.unified).toBe(10);
    expect(rep.totals.skipped.metadataDiffers).toBe(0);
    expect(snapshot(vs)).toEqual(before);
  });

  it('unify shares the identical files: used blocks drop by their size, filefrag shows shared extents, every inode and its metadata unchanged, nothing immutable', () => {
    ready();
    const before = files(snapshot(vs));
    const usedBefore = used(dir, type);
    const r = vunify(['unify', '--json', '-vv', ...args], {
      // Between the scan and the dedupe: s2's swapme becomes another file (another inode,
      // other bytes); s1's writeme is rewritten in place right before the ioctl.
      VUNIFY_TEST_BEFORE_DEDUPE: `swap:${at('s2', SWAP)}\nwrite:${at('s1', WRITE)}`,
    });
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    const action = (server: string, rel: string) => rep.files.find((f: { server: string; path: string }) => f.server === server && f.path === `/${rel}`)?.action;
    expect(action('s2', SWAP)).toBe('skip:changed');
    expect(action('s1', WRITE)).toBe('skip:contentDiffers'); // the kernel's own comparison
    expect(rep.totals.unified).toBe(8);
    const identical = 2 * Object.values(SAME).reduce((a, b) => a + b.length, 0) + MiB * 2; // + s1 swapme, s2 writeme
    expect(rep.totals.bytesSaved).toBe(identical);
    const usedAfter = used(dir, type);
    shared = rep.totals.diskSaved;
    // Blocks, not bytes: the 100,001-byte file frees whole blocks.
    expect(shared).toBeGreaterThanOrEqual(identical);
    expect(shared).toBeLessThan(identical + 8 * 65536);
    expect(Math.abs(usedBefore - usedAfter - shared), `df: ${usedBefore} -> ${usedAfter}, report ${shared}`).toBeLessThan(2 * MiB);
    for (const s of ['s1', 's2']) {
      for (const rel of Object.keys(SAME)) expect(sharedWith(at('ref', rel), at(s, rel)), `${s}/${rel}`).toBe(true);
      expect(noneShared(at(s, 'usr/lib/own'))).toBe(true);
      expect(noneShared(at(s, 'etc/conf'))).toBe(true); // excluded (config): stays out
    }
    expect(noneShared(at('s2', SWAP))).toBe(true);
    expect(noneShared(at('s1', WRITE))).toBe(true);
    expect(sharedWith(at('ref', SWAP), at('s1', SWAP))).toBe(true);
    const after = files(snapshot(vs));
    for (const [k, m] of before) {
      if (k === `s2/${SWAP}` || k === `s1/${WRITE}`) continue; // changed by the test's hook
      expect(after.get(k), k).toEqual(m);
    }
    noImmutable(vs);
  });

  it('a second run shares nothing new and reads nothing', () => {
    ready();
    const before = files(snapshot(vs));
    const usedBefore = used(dir, type);
    for (const round of [1, 2]) {
      const r = vunify(['unify', '--json', ...args]);
      expect(r.status, r.stderr).toBe(0);
      const rep = JSON.parse(r.stdout);
      expect(rep.totals.unified, `round ${round}`).toBe(0);
      expect(rep.totals.alreadyUnified).toBe(8);
      expect(rep.totals.diskSaved).toBe(0);
      // The first rescan compares the two files the hooks changed (new signatures) and
      // records their hashes; then nothing is read.
      if (round === 2) expect([rep.totals.filesHashed, rep.totals.bytesHashed]).toEqual([0, 0]);
    }
    expect(Math.abs(used(dir, type) - usedBefore)).toBeLessThan(MiB);
    expect(files(snapshot(vs))).toEqual(before);
  });

  it('an append in one server leaves the reference and the other server as they were; verify calls it diverged, not drift', () => {
    ready();
    const before = snapshot(vs);
    fs.appendFileSync(at('s1', 'usr/lib/mid'), 'tenant upgrade\n');
    const after = snapshot(vs);
    expect(after.get('ref/usr/lib/mid')!.sha).toBe(before.get('ref/usr/lib/mid')!.sha);
    expect(after.get('s2/usr/lib/mid')!.sha).toBe(before.get('s2/usr/lib/mid')!.sha);
    expect(after.get('s1/usr/lib/mid')!.sha).not.toBe(before.get('s1/usr/lib/mid')!.sha);
    expect(sharedWith(at('ref', 'usr/lib/mid'), at('s2', 'usr/lib/mid'))).toBe(true);
    const v = vunify(['verify', '--json', '--db', path.join(dir, 'index')]);
    expect(v.status, v.stderr).toBe(0);
    const rep = JSON.parse(v.stdout);
    expect(rep.drifts).toEqual([]);
    expect(rep.reflinked.checked).toBe(8);
    expect(rep.reflinked.diverged.map((d: { server: string; path: string }) => `${d.server}:${d.path}`)).toEqual(['s1:/usr/lib/mid']);
  });

  it('undo gives every reflinked file private extents again, with its content, mode, owner, times and xattrs', () => {
    ready();
    const before = files(snapshot(vs));
    const usedBefore = used(dir, type);
    const r = vunify(['undo', '--json', ...args.filter((a, i) => a !== '--method' && args[i - 1] !== '--method')]);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).totals.restored).toBe(8);
    // Every shared byte is private again (s1's mid kept its shared blocks through the append);
    // XFS's delayed allocation and preallocation trimming blur df by a few MiB.
    const grown = used(dir, type) - usedBefore;
    expect(Math.abs(grown - shared), `grew ${grown}, shared ${shared}`).toBeLessThan(shared / 10);
    for (const s of ['s1', 's2']) for (const rel of Object.keys(SAME)) expect(noneShared(at(s, rel)), `${s}/${rel}`).toBe(true);
    expect(noneShared(at('ref', 'usr/lib/big'))).toBe(true);
    const after = files(snapshot(vs));
    for (const [k, m] of before) {
      const { ino: _i, ctimeNs: _c, ...kept } = m; // a new copy: new inode, new ctime
      const { ino: _i2, ctimeNs: _c2, ...now } = after.get(k)!;
      expect(now, k).toEqual(kept);
    }
    noImmutable(vs);
    const v = JSON.parse(vunify(['verify', '--json', '--db', path.join(dir, 'index')]).stdout);
    expect(v.reflinked).toBeUndefined();
  });
});

describe('--method reflink on ext4', () => {
  it('is refused up front in one line, exit 2, nothing changed; plan names the methods it supports', () => {
    const dir = loopMount('ext4');
    const vs = makeFarm(dir);
    const db = path.join(dir, 'index');
    const before = snapshot(vs);
    for (const cmd of ['unify', 'plan', 'scan']) {
      const r = vunify([cmd, '--vservers-dir', vs, '--db', db, '--all-files', '--method', 'reflink', 'ref', 's1']);
      expect(r.status, `${cmd}: ${r.stderr}`).toBe(2);
      expect(errLines(r.stderr), cmd).toEqual([`vunify: error: ${path.join(vs, 'ref')}: is on ext4, which cannot share extents between files; --method reflink needs btrfs or XFS with reflink=1 (use --method link)`]);
    }
    expect(snapshot(vs)).toEqual(before);
    const p = vunify(['plan', '--json', '--vservers-dir', vs, '--db', db, '--all-files', 'ref', 's1']);
    expect(p.status, p.stderr).toBe(0);
    expect(JSON.parse(p.stdout).filesystems[0]).toMatchObject({ name: 'ref', fs: 'ext4', methods: ['link'] });
  });
});

describe('a killed reflink run (XFS)', () => {
  it('a kill after a dedupe leaves the file shared; the next run records it as already unified', () => {
    const dir = loopMount('xfs', 'xfs-kill');
    const vs = makeFarm(dir);
    const args = ['--vservers-dir', vs, '--db', path.join(dir, 'index'), '--all-files', '--method', 'reflink', 'ref', 's1', 's2'];
    const before = files(snapshot(vs));
    const killed = vunify(['unify', ...args], { VUNIFY_FAULT_AFTER: '1' });
    expect(killed.signal).toBe('SIGKILL');
    const r = vunify(['unify', '--json', ...args]);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.totals.alreadyUnified, JSON.stringify(rep.totals)).toBe(1);
    expect(rep.totals.unified).toBe(9);
    const v = JSON.parse(vunify(['verify', '--json', '--db', path.join(dir, 'index')]).stdout);
    expect(v.reflinked).toEqual({ checked: 10, diverged: [] });
    expect(files(snapshot(vs))).toEqual(before);

    // Undo killed after a copy (before its rename), then after a rename: recover leaves every
    // file with its content and metadata and no temporary name; the next undo finishes.
    const same = (m: ReturnType<typeof meta>) => { const { ino: _i, ctimeNs: _c, ...rest } = m; return rest; };
    const undoArgs = args.filter((a, i) => a !== '--method' && args[i - 1] !== '--method');
    for (const at of ['1', '3']) {
      expect(vunify(['undo', ...undoArgs], { VUNIFY_FAULT_AFTER: at }).signal, `kill at ${at}`).toBe('SIGKILL');
      const rec = vunify(['recover', '--db', path.join(dir, 'index')]);
      expect(rec.status, rec.stderr).toBe(0);
      expect(strayTemps(vs)).toEqual([]);
      const now = files(snapshot(vs));
      for (const [k, m] of before) expect(same(now.get(k)!), `${k} after a kill at ${at}`).toEqual(same(m));
    }
    const u = vunify(['undo', '--json', ...undoArgs]);
    expect(u.status, u.stderr).toBe(0);
    expect(JSON.parse(u.stdout).totals.restored).toBe(9); // one was finished before the second kill
    for (const s of ['s1', 's2']) for (const rel of [...Object.keys(SAME), SWAP, WRITE]) expect(noneShared(path.join(vs, s, rel)), `${s}/${rel}`).toBe(true);
    noImmutable(vs);
  });
});
