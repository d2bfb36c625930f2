// Slices (issue 18): a run takes the farm a few folders at a time. The same farm unified in
// slices of a few files (VUNIFY_SLICE_FILES) and at once must come out the same: links,
// counters, listed files, the quick file after it, twins at other paths in other slices,
// and a server inode whose names lie in two slices.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cutSlices } from '../src/slices.js';
import { buildDeb, installDebs, makeDpkgRoot } from './builders/dpkgfarm.js';
import { attributeSweep, lsattrHasImmutable, snapshot, vunify } from './helpers/tree.js';

describe('cutSlices', () => {
  it('keeps folders whole, in order, every path once, about size server files each', () => {
    const ref = ['a/1', 'a/2', 'only-ref/x', 'b/1'];
    const s1 = ['a/1', 'a/2', 'b/1', 'b/2', 'b/3', 'c/1', 'c/d/1'];
    const s2 = ['a/1', 'b/1', 'c/1', 'c/d/1', 'e/1'];
    const slices = cutSlices(ref, [s1, s2], 4);
    const folders = slices.map((s) => [...new Set([...s.refPaths, ...s.serverPaths.flat()].map((k) => path.dirname(k)))].sort());
    expect(folders).toEqual([['a'], ['b'], ['c', 'c/d'], ['e', 'only-ref']]);
    expect(slices.flatMap((s) => s.serverPaths[0]).sort()).toEqual([...s1].sort());
    expect(slices.flatMap((s) => s.serverPaths[1]).sort()).toEqual([...s2].sort());
    expect(slices.flatMap((s) => s.refPaths).sort()).toEqual([...ref].sort());
    // A folder larger than the size is one slice of its own.
    expect(cutSlices([], [['big/1', 'big/2', 'big/3', 'small/1']], 2).map((s) => s.serverPaths[0])).toEqual([['big/1', 'big/2', 'big/3'], ['small/1']]);
    expect(cutSlices([], [[]], 10)).toEqual([]);
  });
});

let base: string;
beforeAll(() => { base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-slices-')); });
afterAll(() => {
  for (const name of fs.readdirSync(base)) {
    if (name.endsWith('.idx') || name.endsWith('.quick') || name.endsWith('-lock') || name === 'debs') continue;
    vunify(['undo', '--all-files', '--no-default-excludes', '--vservers-dir', path.join(base, name), '--db', path.join(base, `${name}.idx`), 'ref', 's1', 's2']);
  }
  spawnSync('chattr', ['-R', '-i', base]);
  fs.rmSync(base, { recursive: true, force: true });
});

const T = 1_700_000_000;
function put(vs: string, rel: string, content: string, mode = 0o644): void {
  const p = path.join(vs, rel);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
  fs.chmodSync(p, mode);
  fs.utimesSync(p, T, T);
}

/** Ten folders of three files in ref, s1 and s2, with the cases slices must not break. */
function treeFarm(name: string): string {
  const vs = path.join(base, name);
  for (const r of ['ref', 's1', 's2']) {
    for (let f = 0; f < 10; f++) for (let i = 0; i < 3; i++) put(path.join(vs, r), `f${f}/file${i}`, `${f}/${i}\n`.repeat(50 + f));
  }
  // A twin at another path, in a folder of another slice.
  put(path.join(vs, 'ref'), 'f1/orig', 'moved content\n'.repeat(40));
  put(path.join(vs, 's1'), 'f8/moved', 'moved content\n'.repeat(40));
  // One s2 inode with names in two slices, as in the reference. (Names of one server inode
  // that go to two reference inodes race in apply, in slices or not: the second may be
  // skipped as changed, and linked by the next run.)
  put(path.join(vs, 'ref'), 'f2/h1', 'two names\n'.repeat(40));
  fs.linkSync(path.join(vs, 'ref/f2/h1'), path.join(vs, 'ref/f9/h2'));
  put(path.join(vs, 's2'), 'f2/h1', 'two names\n'.repeat(40));
  fs.linkSync(path.join(vs, 's2/f2/h1'), path.join(vs, 's2/f9/h2'));
  // Files that stay private: content and mode differ.
  put(path.join(vs, 's1'), 'f4/file1', 'changed\n');
  fs.chmodSync(path.join(vs, 's2/f6/file2'), 0o600);
  return vs;
}

function unify(vs: string, slice: number, ...extra: string[]) {
  const r = vunify(['unify', '--json', '--all-files', '--no-default-excludes', '--vservers-dir', vs, '--db', `${vs}.idx`, ...extra, 'ref', 's1', 's2'],
    { VUNIFY_SLICE_FILES: String(slice), VUNIFY_TRACE: '1' });
  expect(r.status, r.stderr).toBe(0);
  const rep = JSON.parse(r.stdout);
  return { rep, trace: r.stderr };
}

/** Per file: which other roots' files share its inode (inode numbers differ between farms). */
function shape(vs: string): Record<string, string> {
  const out: Record<string, string> = {};
  const byIno = new Map<bigint, string[]>();
  const snaps = ['ref', 's1', 's2'].map((r) => [r, snapshot(path.join(vs, r))] as const);
  for (const [r, snap] of snaps) for (const [k, s] of snap) if (s.type === 'file') byIno.set(s.ino, [...(byIno.get(s.ino) ?? []), `${r}/${k}`]);
  for (const names of byIno.values()) for (const n of names) out[n] = names.join(' ');
  return out;
}

/** The counters, without the roots' paths (the two farms are in two folders). */
const counters = (rep: { servers: Record<string, { root?: string }>; totals: unknown }) =>
  ({ servers: Object.fromEntries(Object.entries(rep.servers).map(([k, v]) => [k, { ...v, root: undefined }])), totals: rep.totals });

describe('a tree farm in slices', () => {
  it('links what the whole-farm run links, lists the same files, and leaves a quick file', () => {
    const whole = treeFarm('whole');
    const sliced = treeFarm('sliced');
    // Server folders keep their times, also one that a slice and the last slice both change (s2/f2).
    const dirs = ['s1', 's2'].flatMap((r) => Array.from({ length: 10 }, (_, f) => path.join(sliced, r, `f${f}`)));
    for (const d of dirs) fs.utimesSync(d, T - 1000, T - 1000);
    const a = unify(whole, 1_000_000, '-vv');
    const b = unify(sliced, 4, '-vv');
    for (const d of dirs) expect(fs.statSync(d).mtimeMs, d).toBe((T - 1000) * 1000);
    expect(a.trace).toMatch(/slice 1 of 2:/); // one slice, and the one of files with other names
    expect(b.trace).toMatch(/slice 1 of \d\d?:/);
    expect(Number(/slice 1 of (\d+)/.exec(b.trace)![1])).toBeGreaterThan(5);
    expect(b.trace).toMatch(/\(files with other names\): 2 server files/);
    expect(counters(b.rep)).toEqual(counters(a.rep));
    expect(b.rep.files).toEqual(a.rep.files);
    expect(shape(sliced)).toEqual(shape(whole));
    // The cases themselves: the twin elsewhere and both names of the s2 inode are linked.
    const ino = (vs: string, rel: string) => fs.statSync(path.join(vs, rel)).ino;
    expect(ino(sliced, 's1/f8/moved')).toBe(ino(sliced, 'ref/f1/orig'));
    expect(ino(sliced, 's2/f2/h1')).toBe(ino(sliced, 'ref/f2/h1'));
    expect(ino(sliced, 's2/f9/h2')).toBe(ino(sliced, 'ref/f9/h2'));
    expect(b.rep.servers.s1.skipped.contentDiffers).toBe(1);
    expect(b.rep.servers.s2.skipped.metadataDiffers).toBe(1);
    // The quick file from the index's records: the next run reads nothing and agrees.
    expect(b.trace).toMatch(/quick file written/);
    const again = unify(sliced, 4);
    expect(again.rep.unchangedSince, again.trace).toBeDefined();
    expect(again.rep.totals.filesHashed).toBe(0);
    expect(again.rep.totals.alreadyUnified).toBe(b.rep.totals.unified);
    const full = unify(sliced, 4, '--full');
    expect(full.rep.totals.alreadyUnified).toBe(b.rep.totals.unified);
    expect(full.rep.totals.unified).toBe(0);
    // Undo leaves no immutable file, the reference's inode with two names of its own included.
    const undo = vunify(['undo', '--json', '--all-files', '--no-default-excludes', '--vservers-dir', sliced, '--db', `${sliced}.idx`, 'ref', 's1', 's2']);
    expect(undo.status, undo.stderr).toBe(0);
    expect(JSON.parse(undo.stdout).totals.restored).toBe(b.rep.totals.unified);
    // (The reference's own two names of one inode are its business: writable, as before unify.)
    expect(attributeSweep(sliced)).toEqual({ writableShared: ['ref/f2/h1', 'ref/f9/h2'], loneImmutable: [] });
    expect(lsattrHasImmutable(path.join(sliced, 'ref/f2/h1'))).toBe(false);
  });

  it('a dry run in slices predicts what the whole-farm dry run predicts', () => {
    const built = new Map<number, Record<string, string>>();
    const plan = (slice: number) => {
      const vs = treeFarm(`dry-${slice}`);
      built.set(slice, shape(vs));
      const r = vunify(['plan', '--json', '--all-files', '--no-default-excludes', '--vservers-dir', vs, '--db', `${vs}.idx`, 'ref', 's1', 's2'], { VUNIFY_SLICE_FILES: String(slice) });
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout);
    };
    const a = plan(1_000_000);
    const b = plan(3);
    expect(counters(b)).toEqual(counters(a));
    expect(b.totals.unified).toBe(61);
    expect(b.totals.bytesSaved).toBeGreaterThan(0);
    expect(shape(path.join(base, 'dry-3'))).toEqual(built.get(3)); // nothing linked
  });

  it('drops the records of files gone since, once every slice is done', () => {
    const vs = treeFarm('vanish');
    for (const f of ['f7/file1', 'f7/file2']) put(path.join(vs, 's1'), f, `private ${f}\n`); // stay private: removable
    unify(vs, 4);
    const files = () => {
      const r = vunify(['status', '--json', '--db', `${vs}.idx`]);
      expect(r.status, r.stderr).toBe(0);
      return Object.fromEntries((JSON.parse(r.stdout).roots as Array<{ name: string; files: number }>).map((x) => [x.name, x.files]));
    };
    const before = files();
    for (const f of ['f4/file1', 'f7/file1', 'f7/file2']) {
      fs.rmSync(path.join(vs, 's1', f));
    }
    const after = unify(vs, 4, '--full');
    expect(after.trace).toMatch(/s1: \d+ paths in slices, 3 vanished record\(s\) dropped/);
    expect(files()).toEqual({ ...before, s1: before.s1 - 3 });
  });
});

describe('a dpkg farm in slices', () => {
  it('counts the reference packages a server lacks once, as the whole-farm run does', () => {
    const debs = path.join(base, 'debs');
    const pkg = (name: string, folders: string[]) => buildDeb({
      name, version: '1.0-1',
      files: folders.flatMap((f) => [0, 1, 2].map((i) => ({ path: `/usr/share/${f}/${name}-${i}`, content: `${name} ${f} ${i}\n`.repeat(30) })))
        .concat([{ path: `/etc/${name}.conf`, content: 'conf\n', conffile: true } as never]),
    }, debs);
    const one = pkg('vu-one', ['a', 'b', 'c']);
    const two = pkg('vu-two', ['d', 'e', 'f']);
    const farms = ['pkg-whole', 'pkg-sliced'].map((name) => {
      const vs = path.join(base, name);
      for (const r of ['ref', 's1', 's2']) makeDpkgRoot(path.join(vs, r));
      installDebs(path.join(vs, 'ref'), [one, two]);
      installDebs(path.join(vs, 's1'), [one, two]);
      installDebs(path.join(vs, 's2'), [one]);
      return vs;
    });
    const run = (vs: string, slice: number) => {
      const r = vunify(['unify', '--json', '-vv', '--vservers-dir', vs, '--db', `${vs}.idx`, 'ref', 's1', 's2', '--', 'vu-one', 'vu-two'], { VUNIFY_SLICE_FILES: String(slice) });
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout);
    };
    const a = run(farms[0], 1_000_000);
    const b = run(farms[1], 3);
    expect(counters(b)).toEqual(counters(a));
    expect(b.files).toEqual(a.files);
    expect(b.servers.s2.skipped.packageMissing).toBe(9);
    expect(b.servers.s1.unified).toBe(18);
    expect(b.servers.s1.skipped.config).toBe(2);
  });
});
