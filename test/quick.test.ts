// The quick rescan: after a complete unify, a rescan of the unchanged farm gives exactly the
// report a full rescan gives, and any change it depends on (content, attribute, a new or
// replaced file, a folder, the package database, a mount, the options, the index) makes
// the run a full one.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Index } from '../src/store/index-db.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as farmLib from '../native-free-bench/farm.mjs';
import { makeRpmFarm, removeFarm, type Farm } from './builders/rpmfarm.js';
import { vunify } from './helpers/tree.js';

type Rep = Record<string, unknown> & { unchangedSince?: string; totals: { unified: number; alreadyUnified: number; filesHashed: number }; durationMs: number };

function run(env: NodeJS.ProcessEnv, args: string[], extra: NodeJS.ProcessEnv = {}): Rep {
  const r = vunify([...args.slice(0, 1), '--json', ...args.slice(1)], { VUNIFY_TRACE: '1', ...env, ...extra });
  expect(r.status, r.stderr).toBe(0);
  const rep = JSON.parse(r.stdout) as Rep;
  // Why a run was not quick, for failure messages.
  Object.defineProperty(rep, 'why', { value: r.stderr.split('\n').filter((l) => / quick| settled|vanished/.test(l)).join('; '), enumerable: false });
  return rep;
}
const why = (r: Rep) => (r as unknown as { why: string }).why;
const expectQuick = (r: Rep) => expect(r.unchangedSince, why(r));
/** What two reports of the same farm state must agree on. */
const outcome = (r: Rep) => {
  const { durationMs: _d, unchangedSince: _u, ...rest } = r;
  return rest;
};
/** The decisions alone: a run that reads files records their hashes, and the next reads less. */
const decisions = (r: Rep) => JSON.parse(JSON.stringify(outcome(r), (k, v) => (k === 'filesHashed' || k === 'bytesHashed' ? undefined : v)));

function rpm(root: string, ...args: string[]): void {
  const r = spawnSync('rpm', ['--root', root, '--dbpath', '/var/lib/rpm', '--define', '_db_backend sqlite', '--force-debian', '--nodeps', '--noscripts', '--notriggers', ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`rpm ${args.join(' ')}: ${r.stderr}`);
}
const sh = (cmd: string, ...args: string[]) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
};

describe('quick rescan, packages mode (RPM farm)', () => {
  let farm: Farm;
  let env: NodeJS.ProcessEnv;
  let db: string;
  const ARGS = ['unify', 'ref', 's1', 's2', 's3', '--', 'vu-base', 'vu-extra'];
  beforeAll(async () => {
    farm = await makeRpmFarm();
    db = path.join(farm.base, 'index');
    env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: db };
  });
  afterAll(async () => {
    spawnSync('umount', [path.join(farm.root('s1'), 'usr/share/mnt')], { stdio: 'ignore' });
    if (farm) await removeFarm(farm);
  });

  /**
   * The next run is a full one; the run after it is quick again and agrees with a full rescan
   * of the same state.
   */
  const expectFullThenQuick = (reason: string): Rep => {
    // What the full run takes over from the last one (files still linked, unchanged) gives
    // the plan a full scan gives.
    const dry = run(env, ['plan', ...ARGS.slice(1)]);
    expect(dry.unchangedSince, reason).toBeUndefined();
    expect(decisions(dry), reason).toEqual(decisions(run(env, ['plan', '--full', ...ARGS.slice(1)])));
    const full = run(env, ARGS);
    expect(full.unchangedSince, `${reason}: the run after the change must be full`).toBeUndefined();
    const quick = run(env, ARGS);
    expect(quick.unchangedSince, `${reason}: the run after that is quick again (${why(quick)})`).toBeDefined();
    const again = run(env, [ARGS[0], '--full', ...ARGS.slice(1)]);
    expect(outcome(quick), reason).toEqual(outcome(again));
    expect(why(again), reason).toMatch(/quick file written/);
    return full;
  };

  it('a rescan after unify is quick, reads nothing, and equals a full rescan', () => {
    const first = run(env, ARGS);
    expect(first.totals.unified).toBeGreaterThan(0);
    expect(first.unchangedSince).toBeUndefined();
    expect(fs.existsSync(`${db}.quick`)).toBe(true);
    const st = JSON.parse(vunify(['status', '--json'], env).stdout);
    expect(st.quick).toMatchObject({ roots: ['ref', 's1', 's2', 's3'].map((s) => fs.realpathSync(farm.root(s))) });
    expect(st.quick.inodes).toBeGreaterThan(10);
    const quick = run(env, ARGS);
    expect(quick.unchangedSince).toBeDefined();
    expect(quick.totals.alreadyUnified).toBe(first.totals.unified + first.totals.alreadyUnified);
    expect(quick.totals.filesHashed).toBe(0);
    const full = run(env, [...ARGS.slice(0, 1), '--full', ...ARGS.slice(1)]);
    expect(full.unchangedSince).toBeUndefined();
    expect(outcome(quick)).toEqual(outcome(full));
    // The dry run may use it too, and says it is one.
    const dry = run(env, ['plan', ...ARGS.slice(1)]);
    expect(dry.unchangedSince).toBeDefined();
    expect(dry).toMatchObject({ command: 'plan', dryRun: true, totals: { unified: 0, alreadyUnified: quick.totals.alreadyUnified } });
    // Every decision (-vv) needs the full run.
    expect(run(env, [...ARGS.slice(0, 1), '-vv', ...ARGS.slice(1)]).unchangedSince).toBeUndefined();
  });

  it('a changed file (same size and mtime) makes the run full', () => {
    const f = path.join(farm.root('s3'), 'usr/bin/vu-tool'); // vu-base 2.0 there: not linked
    const st = fs.statSync(f);
    const buf = fs.readFileSync(f);
    buf[100] ^= 1;
    fs.writeFileSync(f, buf);
    fs.utimesSync(f, st.atime, st.mtime);
    // The changed file is read again (by the first run after the change: here a dry run).
    expect(run(env, ['plan', ...ARGS.slice(1)]).totals.filesHashed).toBeGreaterThan(0);
    expectFullThenQuick('content');
  });

  it('an attribute cleared on a shared inode makes the run full', () => {
    sh('chattr', '-i', path.join(farm.root('ref'), 'usr/share/vu/data.txt'));
    expectFullThenQuick('attribute');
    sh('chattr', '+i', path.join(farm.root('ref'), 'usr/share/vu/data.txt'));
    expectFullThenQuick('attribute back');
  });

  it('a file replaced by a copy (same name, content and times) makes the run full, and is linked again', () => {
    const f = path.join(farm.root('s2'), 'usr/share/vu-extra/b.txt');
    const tmp = path.join(farm.root('s2'), 'usr/share/vu-extra/b.txt.new');
    sh('chattr', '-i', f);
    sh('cp', '-a', f, tmp);
    fs.renameSync(tmp, f); // replaces one name of the shared inode
    sh('chattr', '+i', path.join(farm.root('ref'), 'usr/share/vu-extra/b.txt'));
    const full = expectFullThenQuick('replaced');
    expect(full.totals.unified).toBe(1);
  });

  it('a folder replaced by a copy makes the run full', () => {
    const d = path.join(farm.root('s3'), 'usr/share/doc');
    sh('cp', '-a', d, `${d}.copy`);
    sh('chattr', '-R', '-i', d);
    fs.rmSync(d, { recursive: true });
    fs.renameSync(`${d}.copy`, d);
    const full = expectFullThenQuick('folder');
    expect(full.totals.unified).toBe(1);
  });

  it('a folder swapped for a symlink to an identical copy outside the farm makes the run full; nothing outside is touched', () => {
    const d = path.join(farm.root('s3'), 'usr/share/vu-extra');
    const outside = path.join(farm.base, 'outside-copy');
    sh('cp', '-a', d, outside);
    sh('chattr', '-R', '-i', outside);
    const before = spawnSync('find', [outside, '-printf', '%p %i %s %T@ %C@\n'], { encoding: 'utf8' }).stdout;
    expectQuick(run(env, ARGS)).toBeDefined();
    sh('chattr', '-R', '-i', d);
    fs.renameSync(d, `${d}.real`);
    fs.symlinkSync(outside, d);
    const full = run(env, ARGS);
    expect(full.unchangedSince).toBeUndefined();
    expect((full.servers as Record<string, { skipped: { symlinkInPath: number } }>).s3.skipped.symlinkInPath).toBeGreaterThan(0);
    expectQuick(run(env, ARGS)).toBeDefined();
    expect(spawnSync('find', [outside, '-printf', '%p %i %s %T@ %C@\n'], { encoding: 'utf8' }).stdout).toBe(before);
    fs.unlinkSync(d);
    fs.renameSync(`${d}.real`, d);
    expectFullThenQuick('folder back');
  });

  it('queries of a package database keep the quick rescan; a package removed from it makes the run full and changes the outcome', () => {
    const before = run(env, ARGS);
    expect(before.unchangedSince).toBeDefined();
    // rpm -qa and -V only read, though SQLite rewrites its -shm and truncates its -wal.
    for (const args of [['-qa'], ['-V', 'vu-base', 'vu-extra']]) {
      spawnSync('rpm', ['--root', farm.root('s1'), '--dbpath', '/var/lib/rpm', '--define', '_db_backend sqlite', ...args], { stdio: 'ignore' });
    }
    expectQuick(run(env, ARGS)).toBeDefined();
    rpm(farm.root('s2'), '-e', '--justdb', 'vu-extra');
    const full = expectFullThenQuick('rpm -e');
    expect(outcome(full)).not.toEqual(outcome(before));
  });

  it('a mount inside a root makes the run full, and so does its unmount', () => {
    fs.mkdirSync(path.join(farm.root('s1'), 'usr/share/mnt'));
    expectFullThenQuick('mkdir');
    sh('mount', '-t', 'tmpfs', 'none', path.join(farm.root('s1'), 'usr/share/mnt'));
    expectFullThenQuick('mount');
    sh('umount', path.join(farm.root('s1'), 'usr/share/mnt'));
    expectFullThenQuick('umount');
  });

  it('other options, another server list, or a new index make the run full', () => {
    expectQuick(run(env, ARGS)).toBeDefined();
    const fewer = run(env, ['unify', 'ref', 's1', '--', 'vu-base', 'vu-extra']);
    expect(fewer.unchangedSince).toBeUndefined();
    expect(Object.keys(fewer.servers as object)).toEqual(['s1']);
    expect(run(env, ARGS).unchangedSince).toBeUndefined(); // the quick file was the other run's
    expectQuick(run(env, ARGS)).toBeDefined();
    expect(run(env, [...ARGS.slice(0, 1), '--no-immutable', ...ARGS.slice(1)]).unchangedSince).toBeUndefined();
    expect(run(env, ARGS).unchangedSince).toBeUndefined();
    // A damaged quick file (torn write, a flipped byte, garbage) is no quick file.
    const qf = `${db}.quick`;
    const good = fs.readFileSync(qf);
    for (const bad of [good.subarray(0, good.length >> 1), Buffer.from(good).fill(0x41, 100, 101), Buffer.from('garbage')]) {
      fs.writeFileSync(qf, bad);
      const r = run(env, ARGS);
      expect(r.unchangedSince).toBeUndefined();
      expect(why(r)).toMatch(/no quick file/);
    }
    // A deleted index.
    fs.rmSync(db, { recursive: true, force: true });
    const fresh = run(env, ARGS);
    expect(fresh.unchangedSince).toBeUndefined();
    expect(why(fresh) + JSON.stringify(fresh.totals)).toMatch(/quick file written/);
    expectQuick(run(env, ARGS)).toBeDefined();
  });

  it('a run that left work (a file changed under way, or killed) leaves no quick file', () => {
    // A private copy again, so the next run has something to link; a write right after the
    // byte comparison changes it under the run.
    const victim = path.join(farm.root('s1'), 'usr/share/vu-extra/a.txt');
    const refA = path.join(farm.root('ref'), 'usr/share/vu-extra/a.txt');
    sh('chattr', '-i', victim);
    fs.rmSync(victim);
    sh('cp', '-p', refA, victim);
    const raced = run(env, [ARGS[0], '-v', ...ARGS.slice(1)], { VUNIFY_TEST_WRITE_AFTER_VERIFY: victim });
    expect(raced.files).toContainEqual(expect.objectContaining({ server: 's1', path: '/usr/share/vu-extra/a.txt', action: 'skip:changed' }));
    expect(fs.existsSync(`${db}.quick`)).toBe(false);
    expect(run(env, ARGS).unchangedSince).toBeUndefined();
    expect(fs.existsSync(`${db}.quick`)).toBe(true);
    // Killed at its first change point: the quick file went before anything changed.
    const k = vunify(['undo', '--json', ...ARGS.slice(1)], { ...env, VUNIFY_FAULT_AFTER: '1' });
    expect(k.signal).toBe('SIGKILL');
    expect(fs.existsSync(`${db}.quick`)).toBe(false);
    expect(run(env, ['undo', ...ARGS.slice(1)]).unchangedSince).toBeUndefined();
    expectFullThenQuick('after undo');
  });
});

const PARAMS = { servers: 3, filesPerServer: 300, largeMin: 65536, largeMax: 262144, seed: 3 };

describe('quick rescan, tree mode', () => {
  let base: string;
  let env: NodeJS.ProcessEnv;
  let ARGS: string[];
  beforeAll(() => {
    base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-quick-'));
    const m = farmLib.writeFarm(path.join(base, 'farm'), farmLib.farmParams(PARAMS));
    fs.mkdirSync(path.join(m.vserversDir, 's1', 'etc'));
    fs.writeFileSync(path.join(m.vserversDir, 's1', 'etc', 'hosts'), '127.0.0.1 localhost\n');
    env = { VUNIFY_VSERVERS_DIR: m.vserversDir, VUNIFY_DB: path.join(base, 'index') };
    ARGS = ['unify', '--all-files', 's0', 's1', 's2'];
  });
  afterAll(() => {
    spawnSync('chattr', ['-R', '-i', base], { stdio: 'ignore' });
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('is quick after unify, agrees with a full rescan, and sees a file added deep down', () => {
    const first = run(env, ARGS);
    expect(first.totals.unified).toBeGreaterThan(200);
    const quick = run(env, ARGS);
    expect(quick.unchangedSince).toBeDefined();
    const full = run(env, [ARGS[0], '--full', ...ARGS.slice(1)]);
    expect(outcome(quick)).toEqual(outcome(full));
    // Excluded folders (the default list has /etc) are not part of the outcome.
    fs.writeFileSync(path.join(env.VUNIFY_VSERVERS_DIR!, 's1', 'etc', 'hosts'), '127.0.0.1 other\n');
    expectQuick(run(env, ARGS)).toBeDefined();
    // A new file, identical to a reference file, in an existing folder.
    const vd = env.VUNIFY_VSERVERS_DIR!;
    const some = spawnSync('find', [path.join(vd, 's0', 'usr'), '-type', 'f', '-size', '+2k'], { encoding: 'utf8' }).stdout.split('\n')[0];
    const rel = path.relative(path.join(vd, 's0'), some);
    const copy = path.join(vd, 's2', path.dirname(rel), 'brand-new');
    sh('cp', '-p', some, copy);
    const after = run(env, ARGS);
    expect(after.unchangedSince).toBeUndefined();
    expect(after.totals.unified).toBe(1); // linked to the reference's file of that content, at another path
    fs.mkdirSync(path.join(vd, 's2', 'usr', 'new-dir'));
    expect(run(env, ARGS).unchangedSince).toBeUndefined();
    expectQuick(run(env, ARGS)).toBeDefined();
    sh('chattr', '-i', copy);
    fs.renameSync(copy, path.join(vd, 's2', rel + '.moved'));
    expect(run(env, ARGS).unchangedSince).toBeUndefined();
  });

  it('after a package upgrade in every root, a run that takes the unchanged files over decides as a full one', () => {
    const vd = env.VUNIFY_VSERVERS_DIR!;
    run(env, ARGS);
    expectQuick(run(env, ARGS)).toBeDefined();
    const p = farmLib.farmParams(PARAMS);
    const picked = farmLib.changedIndexes(p, 5, 1);
    const paths = [0, 1, 2].flatMap((s) => picked.map((i: number) => path.join(vd, `s${s}`, farmLib.fileSpec(p, i).rel)));
    sh('chattr', '-i', ...paths);
    farmLib.changeFarm(vd, p, picked, 1);
    const dry = run(env, ['plan', ...ARGS.slice(1)]);
    expect(dry.unchangedSince).toBeUndefined();
    // Most files were taken over, not scanned again.
    expect(Number(/settled: (\d+)/.exec(why(dry))?.[1])).toBeGreaterThan(dry.totals.alreadyUnified * 0.8);
    expect(dry.totals.unified).toBe(2 * picked.length);
    expect(decisions(dry)).toEqual(decisions(run(env, ['plan', '--full', ...ARGS.slice(1)])));
    // The changed files are spread over the farm: their links go a few at a time (CHUNK_LINKS).
    const raw = vunify([ARGS[0], '--json', ...ARGS.slice(1)], { ...env, VUNIFY_TRACE: '1', VUNIFY_CHUNK_LINKS: '4' });
    expect(raw.status, raw.stderr).toBe(0);
    const r = JSON.parse(raw.stdout) as Rep;
    expect(r.totals.unified).toBe(2 * picked.length);
    expect(raw.stderr.match(/trace: journal /g)?.length).toBeGreaterThanOrEqual(Math.ceil(2 * picked.length / 4));
    expect(decisions(r)).toEqual(decisions({ ...dry, command: 'unify', dryRun: false } as Rep));
    const quick = run(env, ARGS);
    expectQuick(quick).toBeDefined();
    expect(outcome(quick)).toEqual(outcome(run(env, [ARGS[0], '--full', ...ARGS.slice(1)])));
  });
  it('files that differ from the reference are taken over as skips, as a full run decides; a new reference twin still gets one linked', () => {
    const vd = env.VUNIFY_VSERVERS_DIR!;
    const p = farmLib.farmParams(PARAMS);
    run(env, ARGS);
    expectQuick(run(env, ARGS)).toBeDefined();
    const picked = farmLib.changedIndexes(p, 5, 2);
    sh('chattr', '-i', ...[0, 1, 2].flatMap((s) => picked.map((i: number) => path.join(vd, `s${s}`, farmLib.fileSpec(p, i).rel))));
    farmLib.changeFarm(vd, p, picked, 2);
    const dry = run(env, ['plan', ...ARGS.slice(1)]);
    const skips = dry.totals as unknown as { skipped: Record<string, number> };
    const differ = skips.skipped.contentDiffers + skips.skipped.metadataDiffers;
    expect(differ).toBeGreaterThan(10);
    expect(Number(/settled: (\d+) skips/.exec(why(dry))?.[1]), why(dry)).toBeGreaterThan(differ * 0.8);
    expect(decisions(dry)).toEqual(decisions(run(env, ['plan', '--full', ...ARGS.slice(1)])));
    run(env, ARGS);
    expectQuick(run(env, ARGS)).toBeDefined();
    // A server file one byte off its reference twin gets a new reference twin elsewhere, with
    // its bytes and metadata: a settled skip would miss it.
    const i = Array.from({ length: p.filesPerServer }, (_, k) => k).find((k) => farmLib.variantOf(p, 1, k) === 'oneByte' && !picked.includes(k))!;
    const own = path.join(vd, 's1', farmLib.fileSpec(p, i).rel);
    sh('cp', '-p', own, path.join(vd, 's0', path.dirname(farmLib.fileSpec(p, i).rel), 'new-twin'));
    const plan = run(env, ['plan', ...ARGS.slice(1)]);
    expect(plan.totals.unified, why(plan)).toBe(1);
    expect(decisions(plan)).toEqual(decisions(run(env, ['plan', '--full', ...ARGS.slice(1)])));
    const after = run(env, ARGS);
    expect(after.totals.unified).toBe(1);
    expect(fs.statSync(own).ino).toBe(fs.statSync(path.join(vd, 's0', path.dirname(farmLib.fileSpec(p, i).rel), 'new-twin')).ino);
  });

  it('times before 1970 and after 2106, and a file over 4 GiB, survive the quick file: quick equals full, and a change is seen', () => {
    const vd = env.VUNIFY_VSERVERS_DIR!;
    const odd = [['old', '1960-03-01 12:00:00.123456789'], ['late', '2200-01-01 00:00:00.000000001']];
    for (const s of ['s0', 's1', 's2']) {
      fs.mkdirSync(path.join(vd, s, 'usr', 'odd'), { recursive: true });
      for (const [name, when] of odd) {
        fs.writeFileSync(path.join(vd, s, 'usr', 'odd', name), `${name} times\n`);
        sh('touch', '-h', '-d', when, path.join(vd, s, 'usr', 'odd', name));
      }
    }
    // Sparse, and in one root only: no partner, so it is recorded but never read.
    sh('truncate', '-s', '5G', path.join(vd, 's1', 'usr', 'odd', 'huge'));
    const first = run(env, ARGS);
    expect(first.unchangedSince).toBeUndefined();
    const quick = run(env, ARGS);
    expectQuick(quick).toBeDefined();
    expect(outcome(quick)).toEqual(outcome(run(env, [ARGS[0], '--full', ...ARGS.slice(1)])));
    expectQuick(run(env, ARGS)).toBeDefined();
    // One nanosecond later on the pre-1970 file of a server: seen, and it no longer matches.
    const f = path.join(vd, 's2', 'usr', 'odd', 'old');
    sh('chattr', '-i', f);
    sh('touch', '-h', '-d', '1960-03-01 12:00:00.123456790', f);
    const after = run(env, ARGS);
    expect(after.unchangedSince).toBeUndefined();
    expect(after.servers.s2.skipped.metadataDiffers).toBeGreaterThan(0);
    sh('truncate', '-s', '6G', path.join(vd, 's1', 'usr', 'odd', 'huge'));
    expect(run(env, ARGS).unchangedSince).toBeUndefined();
    expectQuick(run(env, ARGS)).toBeDefined();
  });
  it('a file replaced between the walk and the scan leaves no quick file, or one the next check rejects; the next run sees the new inode', async () => {
    const vd = env.VUNIFY_VSERVERS_DIR!;
    fs.mkdirSync(path.join(vd, 's1', 'usr', 'race'), { recursive: true });
    const victim = path.join(vd, 's1', 'usr', 'race', 'victim');
    fs.writeFileSync(victim, 'a file of s1 alone\n');
    const quickFile = `${env.VUNIFY_DB}.quick`;
    const before = fs.statSync(victim).ino;
    const raced = run(env, ARGS, { VUNIFY_TEST_REPLACE_AFTER_WALK: victim });
    expect(fs.statSync(victim).ino).not.toBe(before);
    // The capture reads the folder again, and its listing is no longer the one the walk read.
    expect(why(raced)).toMatch(/quick file not written: \/usr\/race\/ changed during the run/);
    expect(fs.existsSync(quickFile)).toBe(false);
    const next = run(env, ARGS);
    expect(next.unchangedSince).toBeUndefined();
    expect(fs.existsSync(quickFile)).toBe(true);
    const quick = run(env, ARGS);
    expectQuick(quick).toBeDefined();
    expect(outcome(quick)).toEqual(outcome(run(env, [ARGS[0], '--full', ...ARGS.slice(1)])));
    // Again, with the folder in the quick file: a change elsewhere makes the run a full one
    // over the survey, whose listing of the folder the walk and the capture take. The quick
    // file is written, and the next check sees the replacement.
    fs.mkdirSync(path.join(vd, 's2', 'usr', 'elsewhere'));
    fs.writeFileSync(path.join(vd, 's2', 'usr', 'elsewhere', 'new'), 'new\n');
    const inoBefore = fs.statSync(victim).ino;
    const raced2 = run(env, ARGS, { VUNIFY_TEST_REPLACE_AFTER_WALK: victim });
    expect(raced2.unchangedSince).toBeUndefined();
    expect(fs.statSync(victim).ino).not.toBe(inoBefore);
    expect(why(raced2)).toMatch(/quick file written/);
    const next2 = run(env, ARGS);
    expect(next2.unchangedSince, why(next2)).toBeUndefined();
    expect(why(next2)).toMatch(/quick: not used: a (file|folder listing) changed in \S*s1/);
    const index = await Index.open(env.VUNIFY_DB!);
    try {
      expect(index.getFile(fs.realpathSync(path.join(vd, 's1')), 'usr/race/victim')?.ino).toBe(String(fs.statSync(victim).ino));
    } finally {
      await index.close();
    }
    expectQuick(run(env, ARGS)).toBeDefined();
  });
  it('a file gone since the last complete run loses its record; the search for such files is skipped only when none can be gone', async () => {
    const vd = env.VUNIFY_VSERVERS_DIR!;
    const dir = path.join(vd, 's2', 'usr', 'gone');
    fs.mkdirSync(dir, { recursive: true });
    for (const n of ['a', 'b']) fs.writeFileSync(path.join(dir, n), `only in s2: ${n}\n`);
    const s2 = fs.realpathSync(path.join(vd, 's2'));
    const recordOf = async (rel: string) => {
      const index = await Index.open(env.VUNIFY_DB!);
      try {
        return index.getFile(s2, rel);
      } finally {
        await index.close();
      }
    };
    run(env, ARGS);
    expectQuick(run(env, ARGS)).toBeDefined();
    expect(await recordOf('usr/gone/b')).toBeDefined();
    // Nothing removed: the search is skipped.
    fs.writeFileSync(path.join(dir, 'a'), 'only in s2: a, changed\n');
    expect(why(run(env, ARGS))).toMatch(/s2: .*no search for vanished files needed/);
    // A file removed: searched, and its record goes.
    fs.rmSync(path.join(dir, 'b'));
    const after = run(env, ARGS);
    expect(why(after)).not.toMatch(/s2: .*no search for vanished files needed/);
    expect(await recordOf('usr/gone/b')).toBeUndefined();
    expect(await recordOf('usr/gone/a')).toBeDefined();
    // A dry run wrote to the index after the capture: no skipping on its word.
    fs.writeFileSync(path.join(dir, 'c'), 'only in s2: c\n');
    run(env, ['plan', ...ARGS.slice(1)]);
    fs.rmSync(path.join(dir, 'c'));
    fs.writeFileSync(path.join(dir, 'a'), 'only in s2: a, changed again\n');
    const later = run(env, ARGS);
    expect(why(later)).not.toMatch(/s2: .*no search for vanished files needed/);
    expect(await recordOf('usr/gone/c')).toBeUndefined();
    expect(decisions(later)).toEqual(decisions({ ...run(env, ['plan', '--full', ...ARGS.slice(1)]), command: 'unify', dryRun: false } as Rep));
  });
});
