// One run finishes the job (issue 17, items 1, 2 and 5): the names of one inode inside a
// root are relinked together, so a first run leaves nothing `changed` and the next run is a
// quick rescan; and savings are reported as the disk counts them, predicted by the dry run.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildRpm, clearImmutableTree, installRpms, makeRoot, type PackageSpec } from './builders/rpmfarm.js';
import { vunify } from './helpers/tree.js';

let base: string;
beforeAll(() => { base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-groups-')); });
afterAll(() => { if (base) { clearImmutableTree(base); fs.rmSync(base, { recursive: true, force: true }); } });

/** Bytes du counts for the folders (each inode once, whatever its names). */
const du = (...dirs: string[]) => Number(execFileSync('du', ['-s', '-c', '-B1', ...dirs], { encoding: 'utf8' }).trim().split('\n').pop()!.split('\t')[0]);

/** Tree-mode roots: small files (a block each on disk, a few bytes apparent), and pairs of names of one inode. */
function treeFarm(): { vs: string; args: string[] } {
  const vs = fs.mkdtempSync(path.join(base, 'tree-'));
  for (const r of ['ref', 's1', 's2']) {
    const d = path.join(vs, r, 'usr/lib/x');
    fs.mkdirSync(d, { recursive: true });
    for (let i = 0; i < 40; i++) {
      fs.writeFileSync(path.join(d, `small${i}`), `tiny ${i}\n`);
      fs.utimesSync(path.join(d, `small${i}`), 1_700_000_000.25, 1_700_000_000.5);
    }
    for (let i = 0; i < 3; i++) {
      const a = path.join(d, `pair${i}`);
      fs.writeFileSync(a, `one inode, two names ${i}\n`.repeat(300));
      fs.utimesSync(a, 1_700_000_000, 1_700_000_000);
      fs.linkSync(a, path.join(d, `pair${i}.alias`));
    }
  }
  return { vs, args: ['--all-files', '--vservers-dir', vs, '--db', path.join(base, `${path.basename(vs)}.index`)] };
}

describe('names of one inode within a root, tree mode', () => {
  it('a first run relinks them together (0 changed), the second is quick, and disk savings match du', () => {
    const { vs, args } = treeFarm();
    const servers = ['s1', 's2'].map((s) => path.join(vs, s));
    const plan = JSON.parse(vunify(['plan', '--json', ...args, 'ref', 's1', 's2']).stdout);
    const before = du(...servers, path.join(vs, 'ref'));
    const r = vunify(['unify', '--json', ...args, 'ref', 's1', 's2']);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    const freed = before - du(...servers, path.join(vs, 'ref'));
    expect(rep.totals.skipped.changed).toBe(0);
    expect(rep.totals.unified).toBe(2 * 46);
    // Each server frees 40 small inodes and 3 pairs: one inode each, counted once.
    expect(rep.totals.diskSaved).toBe(freed);
    expect(plan.totals.diskSaved).toBe(freed);
    expect(plan.totals.bytesSaved).toBe(rep.totals.bytesSaved);
    expect(rep.servers.s1.diskSaved).toBeGreaterThan(rep.servers.s1.bytesSaved); // small files take whole blocks
    for (const s of servers) {
      expect(fs.statSync(path.join(s, 'usr/lib/x/pair0')).ino).toBe(fs.statSync(path.join(vs, 'ref/usr/lib/x/pair0')).ino);
      expect(fs.statSync(path.join(s, 'usr/lib/x/pair0.alias')).ino).toBe(fs.statSync(path.join(vs, 'ref/usr/lib/x/pair0')).ino);
    }
    const again = JSON.parse(vunify(['unify', '--json', ...args, 'ref', 's1', 's2']).stdout);
    expect(again.unchangedSince).toBeDefined();
    expect(again.totals.unified).toBe(0);
    // The text report leads with the disk figure; CSV carries it too.
    const text = vunify(['plan', ...args, 'ref', 's1', 's2', '--full']).stdout;
    expect(text).toMatch(/disk saved\s+apparent/);
    const csv = vunify(['unify', '--csv', ...args, 'ref', 's1', 's2']).stdout.split('\n');
    expect(csv[0].split(',').slice(0, 6)).toEqual(['server', 'unified', 'alreadyUnified', 'restored', 'diskSaved', 'bytesSaved']);
    expect(vunify(['undo', ...args, 'ref', 's1', 's2']).status).toBe(0);
  });

  it('one name of an inode left private keeps the other with it, with one reason', () => {
    const { vs, args } = treeFarm();
    // s1's pair1.alias is excluded: pair1 must stay private too.
    const r = vunify(['unify', '--json', '-vv', ...args, '--exclude', '/usr/lib/x/pair1.alias', 'ref', 's1', 's2']);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.totals.skipped.changed).toBe(0);
    const p = (s: string, n: string) => fs.statSync(path.join(vs, s, 'usr/lib/x', n));
    expect(p('s1', 'pair1').ino).toBe(p('s1', 'pair1.alias').ino);
    expect(p('s1', 'pair1').nlink).toBe(2);
    expect(vunify(['undo', ...args, 'ref', 's1', 's2']).status).toBe(0);
  });
});

describe('an RPM package that ships one inode under two names', () => {
  it('is relinked in one run: 0 changed, then a quick rescan that links nothing', () => {
    const spec: PackageSpec = {
      name: 'vu-hard', version: '1.0',
      files: [{ path: '/usr/bin/vu-hard', content: 'binary '.repeat(500), mode: 0o755 }],
      rawInstall: ['ln %{buildroot}/usr/bin/vu-hard %{buildroot}/usr/bin/vu-hard-alias'],
      rawFiles: ['/usr/bin/vu-hard-alias'],
    };
    const rpm = buildRpm(spec, path.join(base, 'rpms'));
    const vs = path.join(base, 'rpmfarm');
    for (const r of ['ref', 's1', 's2']) {
      makeRoot(path.join(vs, r));
      installRpms(path.join(vs, r), [rpm]);
    }
    const alias = path.join(vs, 's1/usr/bin/vu-hard-alias');
    expect(fs.statSync(alias).nlink).toBe(2); // rpm kept the hard link
    const args = ['--vservers-dir', vs, '--db', path.join(base, 'rpm.index')];
    const r = vunify(['unify', '--json', ...args, 'ref', 's1', 's2', '--', 'vu-hard']);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.totals.skipped.changed).toBe(0);
    expect(rep.totals.unified).toBe(4);
    expect(rep.servers.s1.diskSaved).toBe(fs.statSync(path.join(vs, 'ref/usr/bin/vu-hard')).blocks * 512);
    expect(fs.statSync(alias).ino).toBe(fs.statSync(path.join(vs, 'ref/usr/bin/vu-hard')).ino);
    const again = JSON.parse(vunify(['unify', '--json', ...args, 'ref', 's1', 's2', '--', 'vu-hard']).stdout);
    expect(again.unchangedSince).toBeDefined();
    expect(again.totals.unified).toBe(0);
    expect(vunify(['undo', ...args, 'ref', 's1', 's2', '--', 'vu-hard']).status).toBe(0);
  });
});
