// The index is safe to trust and cheap to lose: locked runs, other schema versions,
// corrupt files and a deleted index each end clearly, and nothing in the farm is lost.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { open } from 'lmdb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tryLock } from '../src/fsx/sys.js';
import { makeRpmFarm, removeFarm, rpmVerify, type Farm } from './builders/rpmfarm.js';
import { snapshot, vunify } from './helpers/tree.js';

let farm: Farm;
let db: string;
let env: NodeJS.ProcessEnv;
const ARGS = ['ref', 's1', 's2', '--', 'vu-base', 'vu-extra'];

beforeAll(async () => {
  farm = await makeRpmFarm();
  db = path.join(farm.base, 'index');
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: db };
});
afterAll(async () => { if (farm) await removeFarm(farm); });

describe('the index', () => {
  it('a second concurrent run exits at once with code 3 and changes nothing', () => {
    fs.mkdirSync(path.dirname(db), { recursive: true });
    const fd = fs.openSync(`${db}.run-lock`, 'a');
    try {
      expect(tryLock(fd)).toBe(true);
      const before = snapshot(farm.root('s1'));
      const r = vunify(ARGS, env);
      expect(r.status).toBe(3);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/another vunify run is using this index/);
      expect(snapshot(farm.root('s1'))).toEqual(before);
    } finally {
      fs.closeSync(fd); // closing releases the lock
    }
    expect(vunify(['-q', ...ARGS], env).status).toBe(0);
  });

  it('an index of another schema version is refused, and --rebuild-index starts anew', async () => {
    const env2 = { ...env, VUNIFY_DB: path.join(farm.base, 'index-v99') };
    const raw = open({ path: env2.VUNIFY_DB });
    await raw.openDB<number, string>({ name: 'meta' }).put('schema', 99);
    await raw.close();
    const r = vunify(['plan', ...ARGS], env2);
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toMatch(/index-v99: index schema 99 is not the supported 2; run with --rebuild-index/);
    const ok = vunify(['plan', '--rebuild-index', '--json', ...ARGS], env2);
    expect(ok.status, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).totals.alreadyUnified).toBe(20);
    expect(fs.readdirSync(farm.base).some((n) => n.startsWith('index-v99.broken-'))).toBe(true);
  });

  it('a corrupt index is reported in one line, and can be rebuilt', () => {
    const bad = path.join(farm.base, 'index-bad');
    fs.mkdirSync(bad);
    fs.writeFileSync(path.join(bad, 'data.mdb'), Buffer.alloc(65536, 0x5a));
    const env3 = { ...env, VUNIFY_DB: bad };
    const r = vunify(['plan', ...ARGS], env3);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/index-bad: .*--rebuild-index/);
    expect(vunify(['plan', '--rebuild-index', ...ARGS], env3).status).toBe(0);
  });

  it('deleting the index loses nothing but time: undo still restores every server', () => {
    const verify = rpmVerify(farm.root('s1'), ['vu-base', 'vu-extra']);
    fs.rmSync(db, { recursive: true });
    const r = vunify(['undo', '--json', ...ARGS], env);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).totals.restored).toBe(20);
    expect(rpmVerify(farm.root('s1'), ['vu-base', 'vu-extra'])).toBe(verify);
    const ref = snapshot(farm.root('ref'));
    for (const [p, f] of snapshot(farm.root('s1'))) if (f.type === 'file') expect(f.ino, p).not.toBe(ref.get(p)?.ino);
  });
});

describe('a full disk under the index', () => {
  let base: string;
  let small: string;
  beforeAll(() => {
    base = fs.mkdtempSync(path.join(path.dirname(farm.base), 'vu-enospc-'));
    for (const r of ['ref', 's1']) fs.mkdirSync(path.join(base, 'vs', r, 'usr/lib'), { recursive: true });
    for (let i = 0; i < 300; i++) {
      const body = `file ${i} ${'x'.repeat(200 + i)}\n`;
      for (const r of ['ref', 's1']) {
        fs.writeFileSync(path.join(base, 'vs', r, 'usr/lib', `f${i}`), body);
        fs.utimesSync(path.join(base, 'vs', r, 'usr/lib', `f${i}`), 1.7e9, 1.7e9); // equal metadata
      }
    }
    small = path.join(base, 'small');
    fs.mkdirSync(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=128k', 'tmpfs', small]);
  });
  afterAll(() => {
    if (!base) return;
    spawnSync('umount', [small]);
    spawnSync('chattr', ['-R', '-i', base]);
    fs.rmSync(base, { recursive: true, force: true });
  });

  it('stops with one line and exit 2, changes no file, and the next run after space is freed completes', () => {
    const env4 = { VUNIFY_VSERVERS_DIR: path.join(base, 'vs'), VUNIFY_DB: path.join(small, 'index') };
    const s1 = path.join(base, 'vs', 's1');
    const before = snapshot(s1);
    const r = vunify(['ref', 's1', '--all-files'], env4);
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/small\/index: a write to the index failed \(.*errno \d+\); .*check the space/);
    expect(snapshot(s1)).toEqual(before); // same inodes, contents, times: nothing linked, no temporary
    expect(fs.existsSync(`${env4.VUNIFY_DB}.write-failed`)).toBe(false); // a full disk does not damage it
    execFileSync('mount', ['-o', 'remount,size=16m', small]);
    const ok = vunify(['ref', 's1', '--all-files', '--json'], env4);
    expect(ok.status, ok.stderr).toBe(0);
    const totals = JSON.parse(ok.stdout).totals;
    expect(totals.unified).toBe(300);
  });

  it('an index whose write failed inside LMDB is refused until --rebuild-index moves it aside', () => {
    const db2 = path.join(base, 'index2');
    const env5 = { VUNIFY_VSERVERS_DIR: path.join(base, 'vs'), VUNIFY_DB: db2 };
    expect(vunify(['plan', 'ref', 's1', '--all-files'], env5).status).toBe(0);
    // What Index writes when a commit fails with one of LMDB's own codes (MDB_BAD_TXN seen once).
    fs.writeFileSync(`${db2}.write-failed`, '2026-11-29T00:00:00.000Z MDB_BAD_TXN: Transaction must abort\n');
    const r = vunify(['plan', 'ref', 's1', '--all-files'], env5);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/index2: a write to the index failed earlier \(2026-11-29T00:00:00.000Z MDB_BAD_TXN.*\); run with --rebuild-index/);
    const ok = vunify(['plan', '--rebuild-index', 'ref', 's1', '--all-files'], env5);
    expect(ok.status, ok.stderr).toBe(0);
    const aside = fs.readdirSync(base).filter((n) => n.startsWith('index2.broken-'));
    expect(aside.some((n) => n.endsWith('.write-failed'))).toBe(true);
    expect(fs.existsSync(`${db2}.write-failed`)).toBe(false);
  });
});
