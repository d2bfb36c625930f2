// Limits and exact undo: a shared inode that reaches the filesystem's link limit (real
// EMLINK on ext4, 65,000 links), undo restoring metadata that differs from the shared copy's,
// and a farm of more folders than the process may hold open.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installRpms, makeRoot, makeRpmFarm, removeFarm, rpmVerify, type Farm } from './builders/rpmfarm.js';
import { folderFdBudget } from '../src/fsx/rootdir.js';
import { CLI, lsattrHasImmutable, snapshot, vunify } from './helpers/tree.js';

let farm: Farm;
let env: NodeJS.ProcessEnv;
const LIB = 'usr/lib/vu/libvu.so.1';
const ino = (s: string, p = LIB) => fs.statSync(path.join(farm.root(s), p)).ino;

beforeAll(async () => {
  farm = await makeRpmFarm();
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: path.join(farm.base, 'index') };
  makeRoot(farm.root('s4'));
  installRpms(farm.root('s4'), ['vu-base-1.0-1.noarch.rpm', 'vu-extra-1.0-1.noarch.rpm'].map((f) => path.join(farm.rpmDir, f)));
});
afterAll(async () => {
  if (farm) {
    execFileSync('chattr', ['-i', path.join(farm.root('ref'), LIB)]);
    fs.rmSync(path.join(farm.base, 'links'), { recursive: true, force: true });
    await removeFarm(farm);
  }
});

describe('the link limit', () => {
  it('a full inode (EMLINK) makes the next server copy a second shared copy', () => {
    // Fill the reference's inode up to one free link (ext4 allows 65,000).
    const links = path.join(farm.base, 'links');
    fs.mkdirSync(links);
    const lib = path.join(farm.root('ref'), LIB);
    for (let i = fs.statSync(lib).nlink; i < 64_999; i++) fs.linkSync(lib, path.join(links, String(i)));
    expect(fs.statSync(lib).nlink).toBe(64_999);
    const verifyS2 = rpmVerify(farm.root('s2'), ['vu-base']);
    const r = vunify(['unify', '--json', '-v', 'ref', 's1', 's2', 's4', '--', 'vu-base'], env);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.totals.skipped.linkLimit).toBe(1);
    expect(rep.files.find((f: { server: string; path: string }) => f.server === 's2' && f.path === `/${LIB}`).action).toBe('skip:linkLimit');
    expect(ino('s1')).toBe(ino('ref'));
    expect(ino('s2')).not.toBe(ino('ref'));
    expect(ino('s4')).toBe(ino('s2')); // linked to the second shared copy
    expect(lsattrHasImmutable(path.join(farm.root('s2'), LIB))).toBe(true);
    expect(fs.statSync(lib).nlink).toBe(65_000);
    // Other files of s2 were linked to the reference as usual.
    expect(ino('s2', 'usr/bin/vu-tool')).toBe(ino('ref', 'usr/bin/vu-tool'));
    // A rescan changes nothing, and undo makes every copy private again.
    const again = JSON.parse(vunify(['unify', '--json', 'ref', 's1', 's2', 's4', '--', 'vu-base'], env).stdout);
    expect(again.totals.unified).toBe(0);
    const u = vunify(['undo', '--json', 'ref', 's1', 's2', 's4', '--', 'vu-base'], env);
    expect(u.status, u.stderr).toBe(0);
    expect(new Set(['s1', 's2', 's4'].map((s) => ino(s))).size).toBe(3);
    expect(lsattrHasImmutable(path.join(farm.root('s2'), LIB))).toBe(false);
    expect(rpmVerify(farm.root('s2'), ['vu-base'])).toBe(verifyS2);
    // The reference's inode still has the 64,998 links of this test: still shared, still immutable.
    expect(lsattrHasImmutable(lib)).toBe(true);
    execFileSync('chattr', ['-i', lib]);
    fs.rmSync(links, { recursive: true });
  });

  it('a second shared copy written after its comparison is shared with no one', () => {
    const links = path.join(farm.base, 'links');
    fs.mkdirSync(links);
    const lib = path.join(farm.root('ref'), LIB);
    for (let i = fs.statSync(lib).nlink; i < 64_999; i++) fs.linkSync(lib, path.join(links, String(i)));
    const s4 = fs.readFileSync(path.join(farm.root('s4'), LIB));
    // s2's copy, about to become the second shared copy, is written right after the comparison.
    const r = vunify(['unify', '--json', '-vv', 'ref', 's1', 's2', 's4', '--', 'vu-base'], { ...env, VUNIFY_TEST_WRITE_AFTER_VERIFY: path.join(farm.root('s2'), LIB) });
    const rep = JSON.parse(r.stdout);
    const action = (s: string) => rep.files.find((f: { server: string; path: string }) => f.server === s && f.path === `/${LIB}`).action;
    expect(action('s2')).toBe('skip:linkLimit');
    expect(action('s4')).not.toBe('linked');
    expect(r.status).toBe(1);
    expect(ino('s4')).not.toBe(ino('s2'));
    expect(fs.readFileSync(path.join(farm.root('s4'), LIB))).toEqual(s4);
    expect(vunify(['undo', '-q', 'ref', 's1', 's2', 's4', '--', 'vu-base'], env).status).toBe(0);
    execFileSync('chattr', ['-i', lib]);
    fs.rmSync(links, { recursive: true });
  });
});

describe('exact undo', () => {
  it('restores each file\'s own atime and mtime (ns), mode and xattrs, even when the shared copy differs by then', () => {
    const before = snapshot(farm.root('s1'));
    // Without the attribute, the shared copy's metadata can change after linking.
    expect(vunify(['unify', '-q', '--no-immutable', 'ref', 's1', '--', 'vu-extra'], env).status).toBe(0);
    const shared = path.join(farm.root('ref'), 'usr/share/vu-extra/b.txt');
    expect(fs.statSync(path.join(farm.root('s1'), 'usr/share/vu-extra/b.txt')).ino).toBe(fs.statSync(shared).ino);
    fs.chmodSync(shared, 0o600);
    fs.utimesSync(shared, 1_600_000_000, 1_600_000_000);
    const u = vunify(['undo', '-q', 'ref', 's1', '--', 'vu-extra'], env);
    expect(u.status, u.stderr).toBe(0);
    const after = snapshot(farm.root('s1'));
    for (const p of ['usr/share/vu-extra/a.txt', 'usr/share/vu-extra/b.txt', 'usr/share/vu-extra/with space.txt']) {
      const [b, a] = [before.get(p)!, after.get(p)!];
      expect({ mode: a.mode, uid: a.uid, mtime: a.mtimeNs, atime: a.atimeNs, xattrs: a.xattrs, sha: a.sha })
        .toEqual({ mode: b.mode, uid: b.uid, mtime: b.mtimeNs, atime: b.atimeNs, xattrs: b.xattrs, sha: b.sha });
      expect(a.ino).not.toBe(fs.statSync(path.join(farm.root('ref'), p)).ino);
    }
  });
});

describe('files vunify must leave alone', () => {
  it('a file immutable before vunify came stays as it is, in a server or the reference', () => {
    const srvFile = path.join(farm.root('s1'), 'usr/share/vu-extra/a.txt');
    const refFile = path.join(farm.root('ref'), 'usr/share/vu-extra/with space.txt');
    execFileSync('chattr', ['+i', srvFile, refFile]);
    try {
      const r = vunify(['unify', '--json', '-v', 'ref', 's1', 's2', '--', 'vu-extra'], env);
      expect(r.status, r.stderr).toBe(0);
      const rep = JSON.parse(r.stdout);
      const action = (s: string, p: string) => rep.files.find((f: { server: string; path: string }) => f.server === s && f.path === p)?.action;
      expect(action('s1', '/usr/share/vu-extra/a.txt')).toBe('skip:immutable');
      expect(action('s1', '/usr/share/vu-extra/with space.txt')).toBe('skip:immutable');
      expect(action('s2', '/usr/share/vu-extra/with space.txt')).toBe('skip:immutable');
      expect(action('s2', '/usr/share/vu-extra/a.txt')).toBe('linked');
      expect(fs.statSync(srvFile).ino).not.toBe(fs.statSync(path.join(farm.root('ref'), 'usr/share/vu-extra/a.txt')).ino);
      const u = vunify(['undo', '-q', 'ref', 's1', 's2', '--', 'vu-extra'], env);
      expect(u.status, u.stderr).toBe(0);
      // Attributes vunify did not set are still there after undo.
      expect(lsattrHasImmutable(srvFile)).toBe(true);
      expect(lsattrHasImmutable(refFile)).toBe(true);
    } finally {
      execFileSync('chattr', ['-i', srvFile, refFile]);
    }
  });

  it('files on another filesystem mounted inside a server are skipped, untouched', () => {
    const mnt = path.join(farm.root('s2'), 'usr/share/doc');
    const saved = fs.readFileSync(path.join(mnt, 'vu-base/README'));
    const mtime = fs.statSync(path.join(mnt, 'vu-base/README')).mtime;
    execFileSync('mount', ['-t', 'tmpfs', 'vunify-test', mnt]);
    try {
      fs.mkdirSync(path.join(mnt, 'vu-base'));
      fs.writeFileSync(path.join(mnt, 'vu-base/README'), saved);
      fs.utimesSync(path.join(mnt, 'vu-base/README'), mtime, mtime);
      const r = vunify(['plan', '--json', '-vv', 'ref', 's2', '--', 'vu-base'], env);
      expect(r.status, r.stderr).toBe(0);
      const rep = JSON.parse(r.stdout);
      expect(rep.files.find((f: { path: string }) => f.path === '/usr/share/doc/vu-base/README').action).toBe('skip:otherFilesystem');
      const before = fs.statSync(path.join(mnt, 'vu-base/README'), { bigint: true });
      expect(vunify(['unify', '-q', 'ref', 's2', '--', 'vu-base'], env).status).toBe(0);
      const after = fs.statSync(path.join(mnt, 'vu-base/README'), { bigint: true });
      expect([after.ino, after.ctimeNs, after.nlink]).toEqual([before.ino, before.ctimeNs, before.nlink]);
      expect(vunify(['undo', '-q', 'ref', 's2', '--', 'vu-base'], env).status).toBe(0);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});

describe('the process fd limit', () => {
  it('folder fds are shared out among the roots: 5 roots of 150 folders unify under a limit of 256 fds', () => {
    expect(folderFdBudget('Max open files            256                  256                  files\n')).toBe(64);
    expect(folderFdBudget('Max open files            1048576              1048576              files\n')).toBe(2048);
    const base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-fds-'));
    try {
      const vd = path.join(base, 'vservers');
      for (const r of ['s0', 's1', 's2', 's3', 's4']) {
        for (let f = 0; f < 150; f++) {
          const dir = path.join(vd, r, 'usr', `d${f}`);
          fs.mkdirSync(dir, { recursive: true });
          for (let i = 0; i < 2; i++) {
            fs.writeFileSync(path.join(dir, `f${i}`), `${f}/${i}\n`.repeat(20));
            fs.utimesSync(path.join(dir, `f${i}`), 1_700_000_000, 1_700_000_000);
          }
        }
      }
      // Each root alone may keep 512 folders open: five would need 750 here.
      const r = spawnSync('prlimit', ['--nofile=256:256', process.execPath, CLI, 'unify', '--json', '--all-files', '--vservers-dir', vd, '--db', path.join(base, 'index'), 's0', 's1', 's2', 's3', 's4'], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).totals.unified).toBe(4 * 150 * 2);
    } finally {
      spawnSync('chattr', ['-R', '-i', base]);
      fs.rmSync(base, { recursive: true, force: true });
    }
  });
});
