import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  buildRpm,
  clearImmutableTree,
  makeRpmFarm,
  removeFarm,
  rpmVerify,
  sampleSpecs,
  SOURCE_DATE_EPOCH,
  type Farm,
} from './builders/rpmfarm.js';
import { has, isRoot, missing } from './helpers/needs.js';

// rpm chroots to install and sets owners and xattrs: only meaningful as root.
const skip = missing('test/rpmfarm.test.ts', { root: isRoot, rpm: has('rpm'), rpmbuild: has('rpmbuild'), chattr: has('chattr'), getcap: has('getcap') });

function fileTable(root: string, pkg: string): Map<string, string> {
  const r = spawnSync(
    'rpm',
    ['--root', root, '--dbpath', '/var/lib/rpm', '-q', '--qf', '[%{FILENAMES}\t%{FILEFLAGS:fflags}\n]', pkg],
    { encoding: 'utf8' },
  );
  expect(r.status).toBe(0);
  return new Map(
    r.stdout
      .split('\n')
      .filter(Boolean)
      .map((l) => l.split('\t') as [string, string]),
  );
}

describe.skipIf(skip)('rpm farm', () => {
  let farm: Farm;
  const p = (server: string, file: string): string => path.join(farm.root(server), file);

  beforeAll(async () => {
    farm = await makeRpmFarm();
  });

  afterAll(async () => {
    if (farm) await removeFarm(farm);
    if (farm) expect(fs.existsSync(farm.base)).toBe(false);
  });

  it('has the expected layout', () => {
    expect(farm.servers).toEqual(['ref', 's1', 's2', 's3']);
    expect(farm.packages).toEqual(['vu-base', 'vu-extra']);
    expect(fs.readdirSync(farm.vserversDir).sort()).toEqual(['ref', 's1', 's2', 's3']);
    expect(fs.readdirSync(farm.rpmDir).sort()).toEqual([
      'vu-base-1.0-1.noarch.rpm',
      'vu-base-2.0-1.noarch.rpm',
      'vu-extra-1.0-1.noarch.rpm',
    ]);
  });

  it('installs modes including setuid', () => {
    const mode = (f: string): number => fs.statSync(p('ref', f)).mode & 0o7777;
    expect(mode('usr/bin/vu-tool')).toBe(0o755);
    expect(mode('usr/bin/vu-suid')).toBe(0o4755);
    expect(mode('usr/lib/vu/libvu.so.1')).toBe(0o755);
    expect(mode('usr/share/vu/data.txt')).toBe(0o644);
    expect(fs.statSync(p('ref', 'usr/bin/vu-tool')).size).toBeGreaterThanOrEqual(20_000);
    expect(fs.statSync(p('ref', 'usr/lib/vu/libvu.so.1')).size).toBeGreaterThanOrEqual(200_000);
    expect(fs.statSync(p('ref', 'usr/share/vu/empty')).size).toBe(0);
  });

  it('resolves %attr owners inside the root', () => {
    const st = fs.statSync(p('ref', 'usr/share/vu/data.txt'));
    expect(st.uid).toBe(1234);
    expect(st.gid).toBe(1234);
    const tool = fs.statSync(p('ref', 'usr/bin/vu-tool'));
    expect([tool.uid, tool.gid]).toEqual([0, 0]);
  });

  it('gives the same file the same mtime in every root', () => {
    for (const f of ['usr/bin/vu-tool', 'usr/lib/vu/libvu.so.1', 'etc/vu/vu.conf', 'usr/share/vu-extra/with space.txt']) {
      const a = fs.statSync(p('ref', f));
      const b = fs.statSync(p('s1', f));
      expect(b.mtimeMs).toBe(a.mtimeMs);
      expect(a.mtimeMs).toBe(SOURCE_DATE_EPOCH * 1000);
    }
  });

  it('makes symlinks, spaces and duplicate contents', () => {
    const link = p('ref', 'usr/share/vu/link');
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.readlinkSync(link)).toBe('data.txt');
    expect(fs.existsSync(p('ref', 'usr/share/vu-extra/with space.txt'))).toBe(true);
    const a = fs.readFileSync(p('ref', 'usr/share/vu-extra/a.txt'));
    expect(fs.readFileSync(p('ref', 'usr/share/vu-extra/same-as-a.txt')).equals(a)).toBe(true);
    expect(fs.readFileSync(p('ref', 'usr/share/vu-extra/b.txt')).equals(a)).toBe(false);
  });

  it('installs vu-base 2.0 in s3 with changed content only where intended', () => {
    const same = (f: string): boolean => fs.readFileSync(p('ref', f)).equals(fs.readFileSync(p('s3', f)));
    expect(same('usr/lib/vu/libvu.so.1')).toBe(false);
    expect(same('usr/bin/vu-tool')).toBe(false);
    expect(same('usr/bin/vu-suid')).toBe(true);
    expect(same('usr/share/vu/data.txt')).toBe(true);
    expect(same('usr/share/vu-extra/a.txt')).toBe(true);
    expect(fs.readFileSync(p('ref', 'usr/lib/vu/libvu.so.1')).equals(fs.readFileSync(p('s1', 'usr/lib/vu/libvu.so.1')))).toBe(true);
  });

  it('lists the config files with the c flag', () => {
    const base = fileTable(farm.root('ref'), 'vu-base');
    expect(base.get('/etc/vu/vu.conf')).toMatch(/c/);
    expect(base.get('/usr/bin/vu-tool')).toBe('');
    expect(fileTable(farm.root('ref'), 'vu-extra').get('/etc/vu-extra.conf')).toMatch(/c/);
  });

  it('sets file capabilities from %caps', () => {
    const f = p('ref', 'usr/bin/vu-ping');
    expect(fs.existsSync(f)).toBe(true);
    const r = spawnSync('getcap', [f], { encoding: 'utf8' });
    expect(r.stdout).toMatch(/cap_net_raw[=+]ep/);
  });

  it('verifies clean after a fresh install', () => {
    for (const s of farm.servers) {
      expect(rpmVerify(farm.root(s))).toBe('');
      expect(rpmVerify(farm.root(s), farm.packages)).toBe('');
    }
  });

  it('rpmVerify reports a changed file (sorted, without throwing)', () => {
    const f = p('s2', 'usr/share/vu-extra/b.txt');
    const st = fs.statSync(f);
    fs.writeFileSync(f, 'changed\n');
    fs.chmodSync(p('s2', 'usr/bin/vu-tool'), 0o700);
    try {
      const out = rpmVerify(farm.root('s2')).split('\n');
      expect(out).toHaveLength(2);
      expect(out).toEqual([...out].sort());
      expect(out.find((l) => l.endsWith(' /usr/share/vu-extra/b.txt'))).toMatch(/^S\.5/);
      expect(out.find((l) => l.endsWith(' /usr/bin/vu-tool'))).toMatch(/^\.M/);
    } finally {
      fs.writeFileSync(f, fs.readFileSync(p('ref', 'usr/share/vu-extra/b.txt')));
      fs.utimesSync(f, st.atime, st.mtime);
      fs.chmodSync(p('s2', 'usr/bin/vu-tool'), 0o755);
    }
    expect(rpmVerify(farm.root('s2'))).toBe('');
  });

  it('builds deterministically', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-rpmbuild-'));
    try {
      const spec = sampleSpecs().v1[1]!;
      const again = buildRpm(spec, dir);
      const first = path.join(farm.rpmDir, path.basename(again));
      expect(fs.readFileSync(again).equals(fs.readFileSync(first))).toBe(true);
      expect(fs.statSync(again).mtimeMs).toBe(fs.statSync(first).mtimeMs);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('removeFarm clears the immutable attribute first', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-imm-'));
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-out-'));
    try {
      fs.mkdirSync(path.join(dir, 'd'));
      fs.writeFileSync(path.join(dir, 'd/f'), 'x');
      fs.writeFileSync(path.join(outside, 'g'), 'y');
      fs.symlinkSync(path.join(outside, 'g'), path.join(dir, 'd/lnk'));
      expect(spawnSync('chattr', ['+i', path.join(dir, 'd/f'), path.join(dir, 'd'), path.join(outside, 'g')]).status).toBe(0);
      await removeFarm(dir);
      expect(fs.existsSync(dir)).toBe(false);
      // The symlink's target outside the tree keeps its attribute.
      const lsattr = spawnSync('lsattr', [path.join(outside, 'g')], { encoding: 'utf8' });
      expect(lsattr.stdout.split(' ')[0]).toMatch(/i/);
    } finally {
      clearImmutableTree(outside);
      clearImmutableTree(dir);
      fs.rmSync(outside, { recursive: true, force: true });
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
