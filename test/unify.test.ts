// End to end on a real RPM farm: real rpmbuild packages installed with rpm --root, real
// hard links, the real immutable attribute, a real LMDB index, the real CLI.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeXattr } from '../src/fsx/sys.js';
import { installRpms, makeRoot, makeRpmFarm, removeFarm, rpmVerify, type Farm } from './builders/rpmfarm.js';
import { lsattrHasImmutable, snapshot, strayTemps, vunify, type FileSnap } from './helpers/tree.js';

const PKGS = ['vu-base', 'vu-extra'];
const SERVERS = ['s1', 's2', 's3'];

// What each server should get, from how the farm is made (see beforeAll): every regular,
// non-empty, non-config file of the packages, minus the ones made different on purpose.
const LINKABLE = [
  'usr/bin/vu-tool', 'usr/bin/vu-suid', 'usr/bin/vu-ping', 'usr/lib/vu/libvu.so.1',
  'usr/share/vu/data.txt', 'usr/share/doc/vu-base/README',
  'usr/share/vu-extra/a.txt', 'usr/share/vu-extra/b.txt', 'usr/share/vu-extra/same-as-a.txt',
  'usr/share/vu-extra/with space.txt',
];
const KEPT_PRIVATE: Record<string, Record<string, string>> = {
  s1: { 'usr/share/vu-extra/a.txt': 'metadataDiffers' }, // an extra xattr
  s2: { 'usr/share/vu-extra/b.txt': 'contentDiffers', 'usr/share/doc/vu-base/README': 'metadataDiffers' },
  s3: { 'usr/bin/vu-tool': 'contentDiffers', 'usr/lib/vu/libvu.so.1': 'contentDiffers' }, // vu-base 2.0
};
const expectedLinked = (s: string) => LINKABLE.filter((p) => !(p in KEPT_PRIVATE[s]));

let farm: Farm;
let env: NodeJS.ProcessEnv;
let before: Map<string, Map<string, FileSnap>>;
let verifyBefore: Map<string, string>;

const root = (s: string) => farm.root(s);
const run = (...args: string[]) => vunify(args, env);
const snapAll = () => new Map(['ref', ...SERVERS].map((s) => [s, snapshot(root(s))]));

beforeAll(async () => {
  farm = await makeRpmFarm();
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: path.join(farm.base, 'index') };
  fs.appendFileSync(path.join(root('s2'), 'usr/share/vu-extra/b.txt'), 'local change\n');
  fs.chmodSync(path.join(root('s2'), 'usr/share/doc/vu-base/README'), 0o600);
  const fd = fs.openSync(path.join(root('s1'), 'usr/share/vu-extra/a.txt'), 'r');
  writeXattr(fd, 'user.vunify-test', Buffer.from('x'));
  fs.closeSync(fd);
  verifyBefore = new Map(['ref', ...SERVERS].map((s) => [s, rpmVerify(root(s), PKGS)]));
  before = snapAll();
});

afterAll(async () => {
  if (farm) await removeFarm(farm);
});

describe('unify on a real RPM farm', () => {
  it('the farm starts with the local modifications rpm -V can see', () => {
    expect(verifyBefore.get('ref')).toBe('');
    expect(verifyBefore.get('s2')).toMatch(/S\.5\.\.\.\.T\.\s+\/usr\/share\/vu-extra\/b\.txt/);
    expect(verifyBefore.get('s2')).toMatch(/\.M\.\.\.\.\.\.\.\s+d?\s*\/usr\/share\/doc\/vu-base\/README/);
  });

  it('plan (dry run) reports the links and changes nothing in any server', () => {
    const r = run('plan', '--json', 'ref', ...SERVERS, '--', ...PKGS);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.dryRun).toBe(true);
    for (const s of SERVERS) {
      expect(rep.servers[s].unified).toBe(expectedLinked(s).length);
      expect(rep.servers[s].skipped.config).toBe(2);
    }
    const after = snapAll();
    for (const s of ['ref', ...SERVERS]) expect(after.get(s)).toEqual(before.get(s));
    const dry = run('--dry-run', '--json', 'ref', ...SERVERS, '--', ...PKGS);
    expect(dry.status).toBe(0);
    expect(JSON.parse(dry.stdout).totals.unified).toBe(rep.totals.unified);
    expect(snapAll()).toEqual(after);
  });

  it('unify links exactly the identical non-config files and makes them immutable', () => {
    const r = run('--json', 'ref', ...SERVERS, '--', ...PKGS);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    const after = snapAll();
    const ref = after.get('ref')!;
    for (const s of SERVERS) {
      const snap = after.get(s)!;
      const linked = [...snap].filter(([p, f]) => f.type === 'file' && ref.get(p)?.ino === f.ino).map(([p]) => p).sort();
      expect(linked).toEqual(expectedLinked(s).sort());
      expect(rep.servers[s].unified).toBe(linked.length);
      for (const [p, reason] of Object.entries(KEPT_PRIVATE[s])) {
        expect(snap.get(p)).toEqual(before.get(s)!.get(p)); // untouched, ctime included
        expect(rep.servers[s].skipped[reason]).toBeGreaterThanOrEqual(1);
      }
      // Config files, the symlink and the empty file stay exactly as they were.
      for (const p of ['etc/vu/vu.conf', 'etc/vu-extra.conf', 'usr/share/vu/link', 'usr/share/vu/empty']) {
        expect(snap.get(p)).toEqual(before.get(s)!.get(p));
      }
      // Content, mode (setuid included), owner and mtime of every file are what they were.
      for (const [p, f] of before.get(s)!) {
        if (f.type !== 'file') continue;
        const g = snap.get(p)!;
        expect({ p, sha: g.sha, mode: g.mode, uid: g.uid, gid: g.gid, mtime: g.mtimeNs }).toEqual({ p, sha: f.sha, mode: f.mode, uid: f.uid, gid: f.gid, mtime: f.mtimeNs });
      }
    }
    expect(ref.get('usr/bin/vu-suid')!.mode & 0o7777).toBe(0o4755);
    expect(ref.get('usr/share/vu/data.txt')!.uid).toBe(1234);
    const bytes = SERVERS.reduce((a, s) => a + expectedLinked(s).reduce((b, p) => b + Number(before.get(s)!.get(p)!.size), 0), 0);
    expect(rep.totals.bytesSaved).toBe(bytes);
    expect(lsattrHasImmutable(path.join(root('ref'), 'usr/bin/vu-tool'))).toBe(true);
    expect(lsattrHasImmutable(path.join(root('s1'), 'usr/lib/vu/libvu.so.1'))).toBe(true);
    expect(lsattrHasImmutable(path.join(root('s3'), 'usr/bin/vu-tool'))).toBe(false);
    expect(() => fs.appendFileSync(path.join(root('s1'), 'usr/bin/vu-tool'), 'x')).toThrow(/EPERM/);
    expect(() => fs.unlinkSync(path.join(root('s2'), 'usr/share/vu/data.txt'))).toThrow(/EPERM/);
    for (const s of ['ref', ...SERVERS]) {
      expect(rpmVerify(root(s), PKGS)).toBe(verifyBefore.get(s));
      expect(strayTemps(root(s))).toEqual([]);
    }
  });

  it('a second unify finds everything already unified and reads no file', () => {
    const r = run('--json', 'ref', ...SERVERS, '--', ...PKGS);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.totals.unified).toBe(0);
    expect(rep.totals.alreadyUnified).toBe(SERVERS.reduce((a, s) => a + expectedLinked(s).length, 0));
    expect(rep.totals.filesHashed).toBe(0);
  });

  it('undo (seed syntax) gives every server private copies with the original metadata', () => {
    const r = run('--undo', 'ref', ...SERVERS, '--', ...PKGS);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/restored/);
    const after = snapAll();
    for (const s of ['ref', ...SERVERS]) {
      for (const [p, f] of before.get(s)!) {
        if (p.startsWith('var/lib/rpm/')) continue; // rpm -V of this test writes there
        const g = after.get(s)!.get(p)!;
        expect(g, p).toBeDefined();
        expect({ p, type: g.type, sha: g.sha, mode: g.mode, uid: g.uid, gid: g.gid, mtime: g.mtimeNs, nlink: g.nlink, xattrs: g.xattrs, link: g.link })
          .toEqual({ p, type: f.type, sha: f.sha, mode: f.mode, uid: f.uid, gid: f.gid, mtime: f.mtimeNs, nlink: f.nlink, xattrs: f.xattrs, link: f.link });
        if (f.type === 'file') expect(lsattrHasImmutable(path.join(root(s), p))).toBe(false);
      }
      expect([...after.get(s)!.keys()].sort()).toEqual([...before.get(s)!.keys()].sort());
      expect(rpmVerify(root(s), PKGS)).toBe(verifyBefore.get(s));
      expect(strayTemps(root(s))).toEqual([]);
    }
    // File capabilities come back too.
    expect(after.get('s1')!.get('usr/bin/vu-ping')!.xattrs).toEqual(before.get('s1')!.get('usr/bin/vu-ping')!.xattrs);
    expect(Object.keys(before.get('s1')!.get('usr/bin/vu-ping')!.xattrs!)).toContain('security.capability');
  });

  it('--no-immutable links without the attribute and warns', () => {
    const r = run('unify', '--no-immutable', 'ref', 's1', '--', 'vu-extra');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/warning: --no-immutable/);
    const refB = fs.statSync(path.join(root('ref'), 'usr/share/vu-extra/b.txt'));
    expect(fs.statSync(path.join(root('s1'), 'usr/share/vu-extra/b.txt')).ino).toBe(refB.ino);
    expect(lsattrHasImmutable(path.join(root('ref'), 'usr/share/vu-extra/b.txt'))).toBe(false);
    const u = run('undo', 'ref', 's1', '--', 'vu-extra');
    expect(u.status, u.stderr).toBe(0);
    expect(fs.statSync(path.join(root('s1'), 'usr/share/vu-extra/b.txt')).ino).not.toBe(refB.ino);
  });
});

describe('bad input: one line, exit code 2, nothing changed', () => {
  let snap: Map<string, Map<string, FileSnap>>;
  beforeAll(async () => {
    fs.mkdirSync(path.join(farm.vserversDir, 'nodb'), { recursive: true });
    // A server on another filesystem, with a real RPM database.
    const other = path.join(farm.vserversDir, 'other');
    fs.mkdirSync(other);
    execFileSync('mount', ['-t', 'tmpfs', 'vunify-test', other]);
    makeRoot(other);
    installRpms(other, [path.join(farm.rpmDir, 'vu-base-1.0-1.noarch.rpm')]);
    snap = snapAll();
  });
  afterAll(() => {
    spawnSync('umount', [path.join(farm.vserversDir, 'other')]);
  });

  const cases: Array<[string, string[], NodeJS.ProcessEnv, RegExp]> = [
    ['an unknown server', ['ref', 's1', 'nosuch', '--', 'vu-base'], {}, /nosuch: no such server/],
    ['the reference named as a server', ['ref', 's1', 'ref', '--', 'vu-base'], {}, /ref: is the reference/],
    ['a server named twice', ['ref', 's1', 's1', '--', 'vu-base'], {}, /s1: is named twice/],
    ['a package not installed in the reference', ['ref', 's1', '--', 'vu-base', 'no-such-pkg'], {}, /no-such-pkg: not installed in the reference/],
    ['a root without a package database', ['ref', 's1', 'nodb', '--', 'vu-base'], {}, /nodb: no package database .*use --all-files/],
    ['a server on another filesystem', ['ref', 's1', 'other', '--', 'vu-base'], {}, /other: is on another filesystem/],
    ['no rpm program', ['ref', 's1', '--', 'vu-base'], { PATH: '/nonexistent' }, /cannot run 'rpm' \(ENOENT\)/],
    ['no packages', ['ref', 's1'], {}, /name packages after --/],
    ['a missing server argument', ['ref'], {}, /missing required argument/],
    ['an unknown option', ['--frobnicate', 'ref', 's1', '--', 'vu-base'], {}, /unknown option '--frobnicate'/],
  ];
  for (const [what, args, extra, message] of cases) {
    it(what, () => {
      const r = vunify(args, { ...env, ...extra });
      expect(r.status).toBe(2);
      const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('(run vunify --help'));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(message);
      expect(r.stdout).toBe('');
      expect(snapAll()).toEqual(snap);
    });
  }
});
