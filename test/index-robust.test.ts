// The index is safe to trust and cheap to lose: locked runs, other schema versions,
// corrupt files and a deleted index each end clearly, and nothing in the farm is lost.
import fs from 'node:fs';
import path from 'node:path';
import { open } from 'lmdb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tryLock } from '../src/fsx/sys.js';
import { makeRpmFarm, removeFarm, rpmVerify, type Farm } from '../src/testing/rpmfarm.js';
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
    expect(r.stderr.trim()).toMatch(/index-v99: index schema 99 is not the supported 1; run with --rebuild-index/);
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
