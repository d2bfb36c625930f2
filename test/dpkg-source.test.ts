import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { RootDir } from '../src/fsx/rootdir.js';
import { DpkgSource, isInstalled, parseDiversions, parseStatus } from '../src/sources/dpkg.js';
import type { InstalledPackage } from '../src/sources/types.js';
import {
  addArchitecture,
  addDiversion,
  buildDeb,
  installDebs,
  makeDpkgRoot,
  removePackages,
} from './builders/dpkgfarm.js';
import { has, isRoot, missing } from './helpers/needs.js';

const skip = missing('test/dpkg-source.test.ts', { root: isRoot, dpkg: has('dpkg'), 'dpkg-deb': has('dpkg-deb'), 'dpkg-divert': has('dpkg-divert') });

const bin = (utf8: string): string => Buffer.from(utf8, 'utf8').toString('latin1');

describe('dpkg status parsing', () => {
  it('knows installed states', () => {
    expect(isInstalled('install ok installed')).toBe(true);
    expect(isInstalled('hold ok installed')).toBe(true);
    expect(isInstalled('deinstall ok installed')).toBe(true);
    expect(isInstalled('deinstall ok config-files')).toBe(false);
    expect(isInstalled('install reinstreq half-installed')).toBe(false);
    expect(isInstalled('purge ok not-installed')).toBe(false);
  });

  it('parses stanzas, continuation lines and conffiles with spaces and flags', () => {
    const { stanzas, badLines } = parseStatus(
      [
        'Package: a',
        'Status: install ok installed',
        'Version: 1:2.0-3',
        'Architecture: amd64',
        'Multi-Arch: same',
        'Conffiles:',
        ' /etc/a.conf 0123456789abcdef0123456789abcdef',
        ' /etc/with space.conf 0123456789abcdef0123456789abcdef obsolete',
        ' /etc/gone newconffile remove-on-upgrade',
        'Description: x',
        ' long text',
        '',
        'garbage line',
        'Package: b',
        'Status: hold ok installed',
        '',
      ].join('\n'),
    );
    expect(badLines).toBe(1);
    expect(stanzas).toEqual([
      {
        name: 'a', version: '1:2.0-3', arch: 'amd64', status: 'install ok installed', multiArchSame: true,
        conffiles: ['/etc/a.conf', '/etc/with space.conf', '/etc/gone'],
      },
      { name: 'b', version: '', arch: '', status: 'hold ok installed', multiArchSame: false, conffiles: [] },
    ]);
  });

  it('parses diversions and counts an incomplete record', () => {
    const { map, bad } = parseDiversions('/a\n/a.distrib\npkg\n/b\n/b.local\n:\n/c\n');
    expect([...map]).toEqual([
      ['/a', { to: '/a.distrib', by: 'pkg' }],
      ['/b', { to: '/b.local', by: ':' }],
    ]);
    expect(bad).toBe(1);
  });
});

describe.skipIf(skip)('DpkgSource on real dpkg roots', () => {
  let base: string;
  let mainRoot: string;
  let native: string;
  let foreign: string;
  const opened: RootDir[] = [];
  const timings: Record<string, number> = {};

  const openRoot = async (p: string): Promise<RootDir> => {
    const r = await RootDir.open(p);
    opened.push(r);
    return r;
  };
  const sourceOf = async (p: string): Promise<DpkgSource> => {
    const src = await DpkgSource.open(await openRoot(p));
    expect(src).not.toBeNull();
    return src!;
  };
  const byName = (pkgs: InstalledPackage[], name: string, arch?: string): InstalledPackage => {
    const hit = pkgs.filter((p) => p.name === name && (arch === undefined || p.arch === arch));
    expect(hit).toHaveLength(1);
    return hit[0];
  };
  const paths = (p: InstalledPackage): string[] => p.files.map((f) => f.path);

  // A dpkg admin folder holding an installed package "vu-evil" with one listed file.
  const evilAdmin = (dir: string): void => {
    fs.mkdirSync(path.join(dir, 'info'), { recursive: true });
    fs.writeFileSync(
      path.join(dir, 'status'),
      'Package: vu-evil\nStatus: install ok installed\nArchitecture: all\nVersion: 6.6.6\n\n',
    );
    fs.writeFileSync(path.join(dir, 'info/vu-evil.list'), '/.\n/etc\n/etc/shadow\n');
  };

  beforeAll(() => {
    const t0 = performance.now();
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-dpkg-'));
    const debDir = path.join(base, 'debs');
    native = spawnSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).stdout.trim();
    foreign = native === 'i386' ? 'amd64' : 'i386';
    const lib = (arch: string) =>
      buildDeb(
        {
          name: 'vu-lib',
          version: '2.0-1',
          arch,
          multiArch: 'same',
          files: [
            { path: `/usr/lib/vu-${arch}/libvu.so.2`, mode: 0o755, content: `libvu for ${arch}\n` },
            { path: '/usr/share/doc/vu-lib/README', content: 'vu-lib: the same on every arch\n' },
          ],
        },
        debDir,
      );
    const debs = {
      conf: buildDeb(
        {
          name: 'vu-conf',
          version: '1.0-1',
          files: [
            { path: '/etc/vu-conf/main.conf', conffile: true, content: 'level = 3\n' },
            { path: '/usr/bin/vu-conf', mode: 0o755, content: '#!/bin/sh\necho vu-conf\n' },
            { path: '/usr/share/vu-conf/data.txt', content: 'vu-conf data\n' },
            { path: '/usr/share/vu-conf/link', symlinkTo: 'data.txt' },
            { path: '/usr/share/vu-conf/café.txt', content: 'non-ASCII name\n' },
            // Through the merged-/usr symlink bin -> usr/bin.
            { path: '/bin/vu-sh', mode: 0o755, content: '#!/bin/sh\n' },
          ],
        },
        debDir,
      ),
      libNative: lib(native),
      libForeign: lib(foreign),
      old: buildDeb(
        {
          name: 'vu-old',
          version: '0.9',
          files: [
            { path: '/etc/vu-old.conf', conffile: true, content: 'old = yes\n' },
            { path: '/usr/share/vu-old/x', content: 'x\n' },
          ],
        },
        debDir,
      ),
      divert: buildDeb(
        { name: 'vu-divert', version: '3', files: [{ path: '/usr/share/vu-conf/data.txt', content: 'vu-divert data\n' }] },
        debDir,
      ),
    };
    timings.buildDebsMs = performance.now() - t0;

    const t1 = performance.now();
    mainRoot = path.join(base, 'main');
    makeDpkgRoot(mainRoot, { mergedUsr: true });
    addArchitecture(mainRoot, foreign);
    installDebs(mainRoot, [debs.conf, debs.libNative, debs.libForeign, debs.old]);
    removePackages(mainRoot, ['vu-old']);
    // vu-divert takes over vu-conf's data.txt; vu-conf's copy moves aside.
    addDiversion(mainRoot, { path: '/usr/share/vu-conf/data.txt', divertTo: '/usr/share/vu-conf/data.txt.vu-conf', pkg: 'vu-divert' });
    installDebs(mainRoot, [debs.divert]);
    addDiversion(mainRoot, { path: '/usr/bin/vu-conf', divertTo: '/usr/bin/vu-conf.real' });
    timings.installRootMs = performance.now() - t1;
  });

  afterAll(async () => {
    for (const r of opened) await r.close().catch(() => {});
    if (base) fs.rmSync(base, { recursive: true, force: true });
    if (base) expect(fs.existsSync(base)).toBe(false);
    console.log('dpkg test timings (ms):', Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, Math.round(v)])));
  });

  it('dpkg really made the states the tests rely on', () => {
    const status = fs.readFileSync(path.join(mainRoot, 'var/lib/dpkg/status'), 'utf8');
    expect(status).toMatch(/Package: vu-old\nStatus: deinstall ok config-files/);
    expect(fs.existsSync(path.join(mainRoot, `var/lib/dpkg/info/vu-lib:${foreign}.list`))).toBe(true);
    expect(fs.readFileSync(path.join(mainRoot, 'usr/share/vu-conf/data.txt'), 'utf8')).toBe('vu-divert data\n');
    expect(fs.readFileSync(path.join(mainRoot, 'usr/share/vu-conf/data.txt.vu-conf'), 'utf8')).toBe('vu-conf data\n');
    expect(fs.existsSync(path.join(mainRoot, 'usr/bin/vu-conf.real'))).toBe(true);
    expect(fs.lstatSync(path.join(mainRoot, 'usr/bin/vu-sh')).isFile()).toBe(true);
    expect(fs.readFileSync(path.join(mainRoot, 'var/lib/dpkg/info/vu-conf.list'), 'utf8')).toMatch(/^\/bin\/vu-sh$/m);
    expect(fs.statSync(path.join(mainRoot, 'usr/bin/vu-conf.real')).mtimeMs).toBe(1_700_000_000_000);
  });

  it('reports kind and location', async () => {
    const src = await sourceOf(mainRoot);
    expect(src.kind).toBe('dpkg');
    expect(src.location).toBe('/var/lib/dpkg');
  });

  it('lists requested packages with versions, arches and missing names', async () => {
    const src = await sourceOf(mainRoot);
    const t = performance.now();
    const l = await src.list(['vu-conf', 'vu-lib', 'vu-old', 'vu-nope']);
    timings.listMs = performance.now() - t;
    expect(l.packages.map((p) => `${p.name}:${p.arch}=${p.version}`).sort()).toEqual(
      [`vu-conf:all=1.0-1`, `vu-lib:${native}=2.0-1`, `vu-lib:${foreign}=2.0-1`].sort(),
    );
    // vu-old was removed: only its conffiles are left, as "deinstall ok config-files".
    expect(l.missing).toEqual(['vu-old', 'vu-nope']);
    expect(l.rejectedPaths).toBe(0);
  });

  it('matches name:arch exactly', async () => {
    const src = await sourceOf(mainRoot);
    const l = await src.list([`vu-lib:${foreign}`, 'vu-lib:s390x', 'vu-conf:all']);
    expect(l.packages.map((p) => `${p.name}:${p.arch}`)).toEqual(['vu-conf:all', `vu-lib:${foreign}`]);
    expect(l.missing).toEqual(['vu-lib:s390x']);
    expect(paths(l.packages[1])).toContain(`usr/lib/vu-${foreign}/libvu.so.2`);
    expect(paths(l.packages[1])).not.toContain(`usr/lib/vu-${native}/libvu.so.2`);
  });

  it('lists files and directories, never /. , with conffiles flagged', async () => {
    const root = await openRoot(mainRoot);
    const src = (await DpkgSource.open(root))!;
    const conf = byName((await src.list(['vu-conf'])).packages, 'vu-conf');
    const ps = paths(conf);
    expect(ps).toContain('usr/share/vu-conf/link');
    expect(ps).toContain('usr');
    expect(ps).toContain('usr/share/vu-conf');
    expect(ps).toContain('etc/vu-conf');
    expect(ps).toContain(bin('usr/share/vu-conf/café.txt'));
    expect(ps.every((p) => p !== '' && p !== '.' && !p.startsWith('/'))).toBe(true);
    // Merged /usr: /bin/vu-sh is reported where it is, and /bin and /usr/bin collapse into one.
    expect(ps).toContain('usr/bin/vu-sh');
    expect(ps.filter((p) => p.startsWith('bin'))).toEqual([]);
    expect(new Set(ps).size).toBe(ps.length);
    const cfg = conf.files.filter((f) => f.config).map((f) => f.path);
    expect(cfg).toEqual(['etc/vu-conf/main.conf']);
    expect(conf.files.every((f) => f.ghost === false)).toBe(true);
    // Every listed path exists on disk as listed (diversions applied).
    for (const p of ps) expect(await root.lstat(p), p).not.toBeNull();
  });

  it('follows diversions: the diverted package owns the diverted-to path', async () => {
    const src = await sourceOf(mainRoot);
    const l = await src.list(['vu-conf', 'vu-divert']);
    const conf = paths(byName(l.packages, 'vu-conf'));
    const div = paths(byName(l.packages, 'vu-divert'));
    expect(conf).toContain('usr/share/vu-conf/data.txt.vu-conf');
    expect(conf).not.toContain('usr/share/vu-conf/data.txt');
    expect(div).toContain('usr/share/vu-conf/data.txt');
    // A local diversion moves the packaged file for every package.
    expect(conf).toContain('usr/bin/vu-conf.real');
    expect(conf).not.toContain('usr/bin/vu-conf');
  });

  it("list('all') gives every installed package", async () => {
    const src = await sourceOf(mainRoot);
    const l = await src.list('all');
    expect(l.packages.map((p) => p.name).sort()).toEqual(['vu-conf', 'vu-divert', 'vu-lib', 'vu-lib']);
    expect(l.missing).toEqual([]);
  });

  it('returns null for a root without a status file', async () => {
    const bare = path.join(base, 'bare');
    fs.mkdirSync(path.join(bare, 'var/lib'), { recursive: true });
    expect(await DpkgSource.open(await openRoot(bare))).toBeNull();
    fs.mkdirSync(path.join(bare, 'var/lib/dpkg/info'), { recursive: true });
    expect(await DpkgSource.open(await openRoot(bare))).toBeNull();
    const empty = path.join(base, 'empty');
    fs.mkdirSync(empty);
    expect(await DpkgSource.open(await openRoot(empty))).toBeNull();
  });

  it('never reads a database outside the root through symlinks', async () => {
    const outside = path.join(base, 'outside');
    evilAdmin(outside);

    // var/lib/dpkg itself is a symlink.
    const r1 = path.join(base, 'evil-admin');
    fs.mkdirSync(path.join(r1, 'var/lib'), { recursive: true });
    fs.symlinkSync(outside, path.join(r1, 'var/lib/dpkg'));
    expect(await DpkgSource.open(await openRoot(r1))).toBeNull();

    // var/lib/dpkg/status is a symlink.
    const r2 = path.join(base, 'evil-status');
    makeDpkgRoot(r2);
    fs.rmSync(path.join(r2, 'var/lib/dpkg/status'));
    fs.symlinkSync(path.join(outside, 'status'), path.join(r2, 'var/lib/dpkg/status'));
    expect(await DpkgSource.open(await openRoot(r2))).toBeNull();

    // The status is real, but info/ points outside: listing must fail, not read it.
    const r3 = path.join(base, 'evil-info');
    makeDpkgRoot(r3);
    fs.copyFileSync(path.join(outside, 'status'), path.join(r3, 'var/lib/dpkg/status'));
    fs.rmSync(path.join(r3, 'var/lib/dpkg/info'), { recursive: true });
    fs.symlinkSync(path.join(outside, 'info'), path.join(r3, 'var/lib/dpkg/info'));
    const src3 = await sourceOf(r3);
    await expect(src3.list('all')).rejects.toThrow(/symlink/);

    // Only the .list is a symlink.
    const r4 = path.join(base, 'evil-list');
    makeDpkgRoot(r4);
    fs.copyFileSync(path.join(outside, 'status'), path.join(r4, 'var/lib/dpkg/status'));
    fs.symlinkSync(path.join(outside, 'info/vu-evil.list'), path.join(r4, 'var/lib/dpkg/info/vu-evil.list'));
    await expect((await sourceOf(r4)).list(['vu-evil'])).rejects.toThrow(/symlink/);
  });

  it('skips unsafe names and paths of a hand-written database, counting them', async () => {
    const r = path.join(base, 'hand');
    makeDpkgRoot(r);
    const admin = path.join(r, 'var/lib/dpkg');
    fs.writeFileSync(
      path.join(admin, 'status'),
      [
        'Package: held', 'Status: hold ok installed', 'Architecture: all', 'Version: 1', '',
        'Package: ../../../outside', 'Status: install ok installed', 'Architecture: all', 'Version: 1', '',
        'Package: half', 'Status: install reinstreq half-installed', 'Architecture: all', 'Version: 1', '',
        'Package: nolist', 'Status: install ok installed', 'Architecture: all', 'Version: 1', '',
      ].join('\n'),
    );
    fs.writeFileSync(path.join(admin, 'info/held.list'), '/.\n/usr\n/usr/../etc/shadow\nrelative\n/usr/held\n/etc/held.conf\n/etc/held-old.conf\n/lib/held.so\n/sbin/held-tool\n');
    // lib -> /usr/lib is the merged-/usr layout; sbin -> usr/local/sbin is not and stays as listed.
    fs.mkdirSync(path.join(r, 'usr/lib'), { recursive: true });
    fs.mkdirSync(path.join(r, 'usr/local/sbin'), { recursive: true });
    fs.symlinkSync('/usr/lib', path.join(r, 'lib'));
    fs.symlinkSync('usr/local/sbin', path.join(r, 'sbin'));
    // Conffiles known only from info/ (no Conffiles field), one with a flag before the path.
    fs.writeFileSync(path.join(admin, 'info/held.conffiles'), '/etc/held.conf\nremove-on-upgrade /etc/held-old.conf\n');
    fs.writeFileSync(path.join(admin, 'info/half.list'), '/.\n/usr\n');
    const l = await (await sourceOf(r)).list('all');
    expect(l.packages.map((p) => p.name)).toEqual(['held', 'nolist']);
    expect(paths(l.packages[0])).toEqual(['usr', 'usr/held', 'etc/held.conf', 'etc/held-old.conf', 'usr/lib/held.so', 'sbin/held-tool']);
    expect(l.packages[0].files.filter((f) => f.config).map((f) => f.path)).toEqual(['etc/held.conf', 'etc/held-old.conf']);
    expect(l.packages[1].files).toEqual([]);
    // One bad package name, two bad paths.
    expect(l.rejectedPaths).toBe(3);
    const named = await (await sourceOf(r)).list(['half', 'held']);
    expect(named.missing).toEqual(['half']);
  });
});
