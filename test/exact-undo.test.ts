// Undo is exact: each server file gets back its own atime and mtime to the nanosecond, and
// the xattrs recorded when it was linked, even after the shared copy's xattrs, mode and
// times were changed (attribute lifted with chattr -i, setfattr, chattr +i). Tree mode, a
// few files, real tools (touch -d with nanoseconds, setfattr, chattr).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeTree } from './helpers/treefarm.js';
import { lsattrHasImmutable, snapshot, strayTemps, vunify, type FileSnap } from './helpers/tree.js';

const SERVERS = ['s1', 's2'];
const FILES = ['f0', 'f1', 'f2'];
let base: string;
let vs: string;
let args: string[];
const file = (r: string, f: string) => path.join(vs, r, 'usr/share/t', f);
const sh = (cmd: string, ...a: string[]) => execFileSync(cmd, a, { encoding: 'utf8' });

beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-exact-undo-'));
  vs = path.join(base, 'vs');
  for (const r of ['ref', ...SERVERS]) {
    fs.mkdirSync(path.join(vs, r, 'usr/share/t'), { recursive: true });
    for (const [i, f] of FILES.entries()) {
      fs.writeFileSync(file(r, f), `content of ${f}\n`.repeat(10 + i));
      sh('setfattr', '-n', 'user.origin', '-v', 'packaged', file(r, f));
      // The same mtime everywhere (a link needs it), below the second; each root its own atime.
      sh('touch', '-m', '-d', '2023-05-06 07:08:09.123456789', file(r, f));
    }
  }
  sh('touch', '-a', '-d', '2024-01-02 03:04:05.987654321', ...FILES.map((f) => file('s1', f)));
  sh('touch', '-a', '-d', '2024-02-03 04:05:06.000000007', ...FILES.map((f) => file('s2', f)));
  args = ['--all-files', '--vservers-dir', vs, '--db', path.join(base, 'index')];
});
afterAll(() => { if (base) removeTree(base); });

const kept = (f: FileSnap) => ({ sha: f.sha, mode: f.mode, uid: f.uid, gid: f.gid, mtimeNs: f.mtimeNs, atimeNs: f.atimeNs, xattrs: f.xattrs });

describe('undo after the shared copy changed', () => {
  it('gives each server file its own ns times and its recorded xattrs, not the shared copy\'s', () => {
    const before = new Map(SERVERS.map((s) => [s, snapshot(path.join(vs, s))]));
    const f0 = before.get('s1')!.get('usr/share/t/f0')!;
    expect(f0.mtimeNs % 1_000_000_000n).toBe(123_456_789n); // the fixture really is below the second
    expect(f0.atimeNs % 1_000_000_000n).toBe(987_654_321n);
    const u = vunify(['unify', '--json', ...args, 'ref', ...SERVERS]);
    expect(u.status, u.stderr).toBe(0);
    expect(JSON.parse(u.stdout).totals.unified).toBe(SERVERS.length * FILES.length);
    const shared = file('ref', 'f1');
    expect(fs.statSync(file('s1', 'f1')).ino).toBe(fs.statSync(shared).ino);
    expect(lsattrHasImmutable(shared)).toBe(true);
    // The shared inode's xattrs, mode and times change (the host's root, lifting the attribute).
    sh('chattr', '-i', shared);
    sh('setfattr', '-n', 'user.origin', '-v', 'changed later', shared);
    sh('setfattr', '-n', 'user.added', '-v', 'x', shared);
    fs.chmodSync(shared, 0o600);
    sh('touch', '-d', '2022-01-01 00:00:00.5', shared);
    sh('chattr', '+i', shared);
    expect(sh('getfattr', '--absolute-names', '-n', 'user.origin', '--only-values', file('s2', 'f1'))).toBe('changed later');

    const r = vunify(['undo', ...args, 'ref', ...SERVERS]);
    expect(r.status, r.stderr).toBe(0);
    for (const s of SERVERS) {
      const after = snapshot(path.join(vs, s));
      for (const f of FILES) {
        const p = `usr/share/t/${f}`;
        expect(kept(after.get(p)!), `${s}/${p}`).toEqual(kept(before.get(s)!.get(p)!));
        expect(after.get(p)!.nlink, `${s}/${p}`).toBe(1n);
        expect(lsattrHasImmutable(file(s, f))).toBe(false);
      }
      expect(strayTemps(path.join(vs, s))).toEqual([]);
    }
  });
});
