// Attributes and temporary names across interruptions and odd inodes (issue 16, items 2, 3,
// 7, 9 and append-only files): a shared inode is never left writable, no temporary name
// outlives a run, undo leaves no lone immutable file, and other inode flags are kept.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clearImmutableTree } from './builders/rpmfarm.js';
import { lsattrHasImmutable, snapshot, strayTemps, vunify } from './helpers/tree.js';

const ROOTS = ['ref', 's1', 's2', 's3'];
let base: string;
const mounts: string[] = [];

function makeFarm(on: string, files = 30, roots = ROOTS): { vs: string; db: string; args: string[] } {
  const vs = fs.mkdtempSync(path.join(on, 'farm-'));
  const mtime = new Date('2023-05-06T07:08:09.123Z');
  for (const r of roots) {
    for (let i = 0; i < files; i++) {
      const d = path.join(vs, r, 'opt/app', `d${i % 3}`);
      fs.mkdirSync(d, { recursive: true });
      const f = path.join(d, `f${i}`);
      fs.writeFileSync(f, `content ${i} `.repeat(40 + i));
      fs.utimesSync(f, mtime, mtime);
    }
  }
  const db = path.join(base, `${path.basename(vs)}.index`);
  return { vs, db, args: ['--all-files', '--vservers-dir', vs, '--db', db] };
}

/** lsattr's flag letters of one file. */
const lsattr = (f: string) => execFileSync('lsattr', ['-d', f], { encoding: 'utf8' }).split(/\s+/)[0];

/** Every regular file of the farm: shared ones must carry the attribute, lone ones must not. */
function sweep(vs: string): { writableShared: string[]; loneImmutable: string[] } {
  const out = { writableShared: [] as string[], loneImmutable: [] as string[] };
  for (const [rel, s] of snapshot(vs)) {
    if (s.type !== 'file') continue;
    const p = path.join(vs, rel);
    const imm = lsattrHasImmutable(p);
    if (s.nlink > 1n && !imm) out.writableShared.push(rel);
    if (s.nlink === 1n && imm) out.loneImmutable.push(rel);
  }
  return out;
}

beforeAll(() => { base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-attr-')); });
afterAll(() => {
  if (!base) return;
  for (const m of mounts) { try { execFileSync('mount', ['-o', 'remount,rw', m]); } catch { /* already rw */ } }
  clearImmutableTree(base);
  for (const m of mounts) execFileSync('umount', [m]);
  fs.rmSync(base, { recursive: true, force: true });
});

describe('kill -9 at many points of unify and undo', () => {
  it('after recover every shared inode is immutable, no temporary is left, and undo leaves no lone immutable file', () => {
    const { vs, db, args } = makeFarm(base);
    const servers = ['ref', 's1', 's2', 's3'];
    let killed = 0;
    for (const n of [1, 3, 8, 21, 55, 89, 130]) {
      const r = vunify(['unify', ...args, ...servers], { VUNIFY_FAULT_AFTER: String(n) });
      if (r.signal === 'SIGKILL') killed++;
      const rec = vunify(['recover', '--db', db]);
      expect(rec.status, rec.stderr).toBe(0);
      expect(sweep(vs).writableShared, `after a kill at point ${n} of unify and recover`).toEqual([]);
      expect(strayTemps(vs)).toEqual([]);
      // Undo, killed at the same point, then recovered and finished.
      vunify(['undo', ...args, ...servers], { VUNIFY_FAULT_AFTER: String(n) });
      expect(vunify(['recover', '--db', db]).status).toBe(0);
      expect(sweep(vs).writableShared, `after a kill at point ${n} of undo and recover`).toEqual([]);
      const u = vunify(['undo', ...args, ...servers]);
      expect(u.status, u.stderr).toBe(0);
      expect(sweep(vs), `after undo (point ${n})`).toEqual({ writableShared: [], loneImmutable: [] });
      expect(strayTemps(vs)).toEqual([]);
    }
    expect(killed).toBeGreaterThan(5);
  });
});

describe('an attribute that went missing', () => {
  it('is put back by the next unify, which does not report the inode as simply already unified', () => {
    const { vs, args } = makeFarm(base, 6, ['ref', 's1']);
    expect(vunify(['unify', ...args, 'ref', 's1']).status).toBe(0);
    const f = path.join(vs, 'ref/opt/app/d0/f0');
    expect(lsattrHasImmutable(f)).toBe(true);
    execFileSync('chattr', ['-i', f]); // as a crash or a failed chattr would leave it
    const again = vunify(['unify', ...args, 'ref', 's1']);
    expect(again.status, again.stderr).toBe(0);
    expect(lsattrHasImmutable(f)).toBe(true);
    expect(sweep(vs).writableShared).toEqual([]);
  });
});

describe('undo with another index', () => {
  it('leaves no lone immutable file behind', () => {
    const { vs, args } = makeFarm(base, 8, ['ref', 's1', 's2']);
    expect(vunify(['unify', ...args, 'ref', 's1', 's2']).status).toBe(0);
    const other = [...args.slice(0, -1), path.join(base, 'another.index')];
    const u = vunify(['undo', ...other, 'ref', 's1', 's2']);
    expect(u.status, u.stderr).toBe(0);
    expect(sweep(vs)).toEqual({ writableShared: [], loneImmutable: [] });
  });
});

describe('inode flags other than i and a', () => {
  it('a server file with nodump (d) is not linked to a reference without it; with d on both, undo gives it back', () => {
    const { vs, args } = makeFarm(base, 4, ['ref', 's1', 's2']);
    const rel = 'opt/app/d1/f1';
    execFileSync('chattr', ['+d', path.join(vs, 's1', rel)]);
    execFileSync('chattr', ['+d', path.join(vs, 'ref', rel), path.join(vs, 's2', rel)]);
    execFileSync('chattr', ['+A', path.join(vs, 's1', 'opt/app/d2/f2')]);
    const r = vunify(['unify', '--json', '-vv', ...args, 'ref', 's1', 's2']);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    const action = (s: string, p: string) => rep.files.find((x: { server: string; path: string }) => x.server === s && x.path === `/${p}`)?.action;
    // s1's f1 has d like the reference: linked; s1's f2 has A, the reference's has not: private.
    expect(action('s1', rel)).toBe('linked');
    expect(action('s2', rel)).toBe('linked');
    expect(action('s1', 'opt/app/d2/f2')).toBe('skip:metadataDiffers');
    expect(lsattr(path.join(vs, 's1', 'opt/app/d2/f2'))).toContain('A');
    const u = vunify(['undo', ...args, 'ref', 's1', 's2']);
    expect(u.status, u.stderr).toBe(0);
    for (const s of ['s1', 's2']) {
      expect(fs.statSync(path.join(vs, s, rel)).nlink).toBe(1);
      expect(lsattr(path.join(vs, s, rel)), `${s}: nodump given back by undo`).toContain('d');
    }
  });
});

describe('a file held open for writing', () => {
  it('is left private as inUse by unify (the reference) and by undo (a shared inode), never an internal error', () => {
    const { vs, args } = makeFarm(base, 4, ['ref', 's1', 's2']);
    const refFile = path.join(vs, 'ref/opt/app/d0/f0');
    let fd = fs.openSync(refFile, 'a'); // the reference's tenant writes to its file
    try {
      const r = vunify(['unify', '--json', '-vv', '--no-immutable', ...args, 'ref', 's1', 's2']);
      expect(r.status, r.stderr).toBe(0);
      const rep = JSON.parse(r.stdout);
      expect(rep.files.find((x: { server: string; path: string }) => x.server === 's1' && x.path === '/opt/app/d0/f0').action).toBe('skip:inUse');
      expect(fs.statSync(refFile).nlink).toBe(1);
    } finally {
      fs.closeSync(fd);
    }
    // Unified without the attribute: a tenant can hold the shared inode open for writing.
    expect(vunify(['unify', '-q', '--no-immutable', ...args, 'ref', 's1', 's2']).status).toBe(0);
    const shared = path.join(vs, 's2/opt/app/d1/f1');
    expect(fs.statSync(shared).nlink).toBe(3);
    fd = fs.openSync(shared, 'a');
    try {
      const u = vunify(['undo', '--json', '-vv', ...args, 'ref', 's1', 's2']);
      expect(u.stderr).not.toMatch(/internal error/);
      expect(u.status, u.stderr).toBe(0);
      const rep = JSON.parse(u.stdout);
      expect(rep.files.filter((x: { path: string }) => x.path === '/opt/app/d1/f1').map((x: { action: string }) => x.action)).toEqual(['skip:inUse', 'skip:inUse']);
    } finally {
      fs.closeSync(fd);
    }
    expect(vunify(['undo', '-q', ...args, 'ref', 's1', 's2']).status).toBe(0);
    expect(fs.statSync(shared).nlink).toBe(1);
  });
});

describe('append-only files and folders', () => {
  it('are skipped with a reason, every run, with no error and no temporary name left', () => {
    const { vs, args } = makeFarm(base, 6, ['ref', 's1']);
    const file = path.join(vs, 's1/opt/app/d0/f0');
    const dir = path.join(vs, 's1/opt/app/d1');
    execFileSync('chattr', ['+a', file, dir]);
    try {
      for (let run = 0; run < 2; run++) {
        const r = vunify(['unify', '--json', '-vv', ...args, 'ref', 's1']);
        expect(r.status, r.stderr + r.stdout).toBe(0);
        expect(r.stdout + r.stderr).not.toMatch(/proc\/self\/fd/);
        const rep = JSON.parse(r.stdout);
        const action = (p: string) => rep.files.find((x: { path: string }) => x.path === `/${p}`)?.action;
        expect(action('opt/app/d0/f0')).toBe('skip:appendOnly');
        expect(action('opt/app/d1/f1')).toBe('skip:appendOnly');
        expect(action('opt/app/d2/f2')).toBe(run === 0 ? 'linked' : 'already');
        expect(strayTemps(vs)).toEqual([]);
      }
    } finally {
      execFileSync('chattr', ['-a', file, dir]);
    }
  });
});

describe('a filesystem remounted read-only in the middle of a run', () => {
  it('leaves no temporary name once it is writable again, and the walk never takes one as a file', () => {
    const img = path.join(base, 'ro.img');
    const mnt = path.join(base, 'ro');
    fs.mkdirSync(mnt);
    execFileSync('truncate', ['-s', '64M', img]);
    execFileSync('mkfs.ext4', ['-q', img]);
    execFileSync('mount', ['-o', 'loop', img, mnt]);
    mounts.push(mnt);
    const { vs, db, args } = makeFarm(mnt, 10, ['ref', 's1']);
    const r = vunify(['unify', ...args, 'ref', 's1'], { VUNIFY_TEST_AFTER_TMP_LINK: `mount -o remount,ro ${mnt}` });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stdout + r.stderr).toMatch(/temporary name .* could not be removed/);
    expect(strayTemps(vs).length).toBe(1); // the name the remount caught
    execFileSync('mount', ['-o', 'remount,rw', mnt]);
    const rec = spawnSync(process.execPath, [path.join(__dirname, '../dist/cli.js'), 'recover', '--db', db], { encoding: 'utf8' });
    expect(rec.status, rec.stderr).toBe(0);
    expect(strayTemps(vs)).toEqual([]);
    const again = vunify(['unify', '--json', '-vv', ...args, 'ref', 's1']);
    expect(again.status, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).files.some((f: { path: string }) => f.path.includes('.vunify-tmp'))).toBe(false);
    expect(sweep(vs).writableShared).toEqual([]);
  });
});
