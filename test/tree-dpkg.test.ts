// Debian vservers, mixed farms and package-less trees: real dpkg roots (dpkg-deb -b,
// dpkg --root -i), tree mode with its exclude lists, on real files and links.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDeb, installDebs, makeDpkgRoot } from './builders/dpkgfarm.js';
import { makeRpmFarm, removeFarm, sampleSpecs, type Farm } from './builders/rpmfarm.js';
import { lsattrHasImmutable, vunify } from './helpers/tree.js';

let farm: Farm;
let env: NodeJS.ProcessEnv;
const ino = (root: string, p: string) => fs.statSync(path.join(root, p)).ino;
const run = (...args: string[]) => {
  const r = vunify(args, env);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
};

beforeAll(async () => {
  farm = await makeRpmFarm();
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: path.join(farm.base, 'index') };
  // vu-extra as a .deb with the same files as the rpm (same bytes, modes, mtimes); its
  // /etc file is a conffile.
  const extra = sampleSpecs().v1.find((p) => p.name === 'vu-extra')!;
  const deb = buildDeb({
    name: 'vu-extra', version: '1.0-1',
    files: extra.files.map((f) => ({ path: f.path, content: f.content, mode: f.mode, conffile: f.config })),
  }, path.join(farm.base, 'debs'));
  for (const d of ['d1', 'd2']) {
    makeDpkgRoot(farm.root(d));
    installDebs(farm.root(d), [deb]);
  }
  // Package-less trees: usr/ identical, etc/ and home/ and key material identical too.
  for (const t of ['t1', 't2']) {
    const r = farm.root(t);
    for (const [p, c] of Object.entries({
      'usr/lib/x/libx.so': 'x'.repeat(5000), 'usr/share/x/data': 'data\n', 'usr/share/skip/this': 'skipped\n',
      'usr/share/x/.ssh/id_rsa': 'KEY\n', 'etc/x.conf': 'conf\n', 'home/u/notes': 'notes\n',
      [`usr/share/x/only-${t}`]: `only ${t}\n`, 'usr/share/x/differs': `differs ${t}\n`,
    })) {
      fs.mkdirSync(path.dirname(path.join(r, p)), { recursive: true });
      fs.writeFileSync(path.join(r, p), c);
      fs.utimesSync(path.join(r, p), 1_700_000_000, 1_700_000_000);
    }
  }
});
afterAll(async () => { if (farm) await removeFarm(farm); });

describe('dpkg roots', () => {
  it('unify two Debian vservers: conffiles stay private, the rest is linked', () => {
    const rep = run('unify', '--json', 'd1', 'd2', '--', 'vu-extra');
    expect(rep.servers.d2.unified).toBe(4);
    expect(rep.servers.d2.skipped.config).toBe(1);
    expect(ino(farm.root('d2'), 'usr/share/vu-extra/with space.txt')).toBe(ino(farm.root('d1'), 'usr/share/vu-extra/with space.txt'));
    expect(ino(farm.root('d2'), 'etc/vu-extra.conf')).not.toBe(ino(farm.root('d1'), 'etc/vu-extra.conf'));
    expect(lsattrHasImmutable(path.join(farm.root('d1'), 'usr/share/vu-extra/a.txt'))).toBe(true);
    expect(run('undo', '--json', 'd1', 'd2', '--all-packages').totals.restored).toBe(4);
  });

  it('a mixed farm: an RPM reference and a Debian server share a package by name', () => {
    const rep = run('unify', '--json', 'ref', 'd1', '--', 'vu-extra');
    expect(rep.servers.d1.unified).toBe(4);
    expect(ino(farm.root('d1'), 'usr/share/vu-extra/b.txt')).toBe(ino(farm.root('ref'), 'usr/share/vu-extra/b.txt'));
    const bad = vunify(['plan', '--package-manager', 'dpkg', 'ref', 'd1', '--', 'vu-extra'], env);
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim()).toMatch(/ref: no dpkg database/);
    expect(run('undo', '--json', 'ref', 'd1', '--', 'vu-extra').totals.restored).toBe(4);
  });
});

describe('tree mode (--all-files)', () => {
  it('takes every regular file but the default and given excludes', () => {
    fs.writeFileSync(path.join(farm.base, 'excludes'), '# from a file\n/usr/share/x/differs\n');
    const rep = run('unify', '--json', '-vv', '--all-files', '--exclude', '/usr/share/skip', '--exclude-from', path.join(farm.base, 'excludes'), 't1', 't2');
    const actions = Object.fromEntries(rep.files.map((f: { path: string; action: string }) => [f.path, f.action]));
    expect(actions).toEqual({
      '/usr/lib/x/libx.so': 'linked',
      '/usr/share/x/data': 'linked',
      '/usr/share/x/only-t2': 'skip:notInReference',
    });
    expect(ino(farm.root('t2'), 'usr/lib/x/libx.so')).toBe(ino(farm.root('t1'), 'usr/lib/x/libx.so'));
    for (const p of ['etc/x.conf', 'home/u/notes', 'usr/share/x/.ssh/id_rsa', 'usr/share/skip/this']) {
      expect(ino(farm.root('t2'), p), p).not.toBe(ino(farm.root('t1'), p));
    }
    expect(run('undo', '--json', '--all-files', 't1', 't2').totals.restored).toBe(2);
  });

  it('keeps the config files of a root with a package database out, even under --no-default-excludes', () => {
    const rep = run('plan', '--json', '-vv', '--all-files', '--no-default-excludes', 'ref', 's1');
    const action = (p: string) => rep.files.find((f: { path: string }) => f.path === p)?.action;
    expect(action('/etc/vu/vu.conf')).toBe('skip:config');
    expect(action('/usr/lib/vu/libvu.so.1')).toBe('would-link');
    // Files no package lists are candidates too (here: rpm's own database, written at other times).
    expect(action('/var/lib/rpm/rpmdb.sqlite')).toMatch(/^skip:(content|metadata)Differs$/);
  });

  it('refuses a package list with --all-files', () => {
    const r = vunify(['plan', '--all-files', 't1', 't2', '--', 'vu-extra'], env);
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toMatch(/--all-files takes every file/);
  });
});
