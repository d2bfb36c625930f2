// Crash safety: the process is killed (SIGKILL, no cleanup) at many change points of
// unify and undo; after `vunify recover`, every file of every server has the content and
// metadata it had (or is a correct link to an identical file), and no temporary is left.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeRpmFarm, removeFarm, rpmVerify, type Farm } from './builders/rpmfarm.js';
import { attributeSweep, lsattrHasImmutable, snapshot, strayTemps, vunify, type FileSnap } from './helpers/tree.js';

const SERVERS = ['ref', 's1', 's2', 's3'];
const ARGS = ['ref', 's1', 's2', 's3', '--', 'vu-base', 'vu-extra'];
let farm: Farm;
let env: NodeJS.ProcessEnv;
let orig: Map<string, Map<string, FileSnap>>;
let verifyOrig: Map<string, string>;

const pick = (f: FileSnap) => ({ type: f.type, sha: f.sha, mode: f.mode, uid: f.uid, gid: f.gid, mtime: f.mtimeNs, xattrs: f.xattrs, link: f.link });

/**
 * Every path of every root as it was: same content and metadata; no temporary names; and an
 * lsattr sweep: every shared inode immutable, no lone file immutable (no attribute left that
 * looks as if someone else had set it).
 */
function expectIntact(when: string): void {
  for (const s of SERVERS) {
    const now = snapshot(farm.root(s));
    for (const [p, f] of orig.get(s)!) {
      // A folder's mtime may show the recovery (a temporary name came and went): files matter.
      if (p.startsWith('var/lib/rpm/') || f.type === 'dir') continue;
      const g = now.get(p);
      expect(g, `${when}: ${s}/${p} is missing`).toBeDefined();
      expect(pick(g!), `${when}: ${s}/${p}`).toEqual(pick(f));
    }
    expect(strayTemps(farm.root(s)), when).toEqual([]);
    expect(attributeSweep(farm.root(s)), `${when}: ${s}, lsattr`).toEqual({ writableShared: [], loneImmutable: [] });
  }
}

function killedAt(args: string[], n: number): boolean {
  const r = vunify(args, { ...env, VUNIFY_FAULT_AFTER: String(n) });
  if (r.status === 0) return false;
  expect(r.signal, `${args[0]} with fault ${n}: ${r.stderr}`).toBe('SIGKILL');
  return true;
}

function recoverOk(): string {
  const r = vunify(['recover'], env);
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

beforeAll(async () => {
  farm = await makeRpmFarm();
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: path.join(farm.base, 'index') };
  orig = new Map(SERVERS.map((s) => [s, snapshot(farm.root(s))]));
  verifyOrig = new Map(SERVERS.map((s) => [s, rpmVerify(farm.root(s), ['vu-base', 'vu-extra'])]));
});
afterAll(async () => { if (farm) await removeFarm(farm); });

describe('killed runs, then recover', () => {
  it('unify killed at change points 1..n: intact after recover, and a new run completes', () => {
    let n = 1;
    let putBack = 0;
    for (; n < 200; n += n < 6 ? 1 : 7) {
      if (!killedAt(['unify', ...ARGS], n)) break;
      const rec = recoverOk();
      expect(rec).toMatch(/recovered \d+ unfinished change/);
      if (/put back on their own inode/.test(rec)) putBack++;
      expectIntact(`unify killed at ${n}`);
      expect(vunify(['-q', 'undo', ...ARGS], env).status).toBe(0);
      expectIntact(`undo after unify killed at ${n}`);
    }
    expect(n).toBeGreaterThan(20); // it really was killed at many points
    // Some kills fell between swapping a file's name onto the shared inode and freeing its
    // own: recover put those back (the checks above found every file as it was).
    expect(putBack).toBeGreaterThan(0);
    expect(recoverOk()).toBe('nothing to recover\n');
  });

  it('undo killed at change points: intact after recover, and undo completes exactly', () => {
    let n = 1;
    for (; n < 200; n += n < 8 ? 1 : 9) {
      expect(vunify(['-q', 'unify', ...ARGS], env).status).toBe(0);
      if (!killedAt(['undo', ...ARGS], n)) break;
      recoverOk();
      expectIntact(`undo killed at ${n}`);
      const u = vunify(['-q', 'undo', ...ARGS], env);
      expect(u.status, u.stderr).toBe(0);
      expectIntact(`undo after undo killed at ${n}`);
    }
    expect(n).toBeGreaterThan(20);
    for (const s of SERVERS) expect(rpmVerify(farm.root(s), ['vu-base', 'vu-extra'])).toBe(verifyOrig.get(s));
  });

  it('a run killed while the shared inode\'s attribute is lifted gets it back', () => {
    expect(vunify(['-q', 'unify', 'ref', 's1', '--', 'vu-base'], env).status).toBe(0);
    const lib = path.join(farm.root('ref'), 'usr/lib/vu/libvu.so.1');
    expect(lsattrHasImmutable(lib)).toBe(true);
    // Adding s2 lifts the attribute of each shared inode for its new links: die right there.
    expect(killedAt(['unify', 'ref', 's1', 's2', '--', 'vu-base'], 1)).toBe(true);
    const shared = ['usr/lib/vu/libvu.so.1', 'usr/bin/vu-tool', 'usr/bin/vu-suid', 'usr/bin/vu-ping', 'usr/share/vu/data.txt', 'usr/share/doc/vu-base/README'];
    expect(shared.map((p) => lsattrHasImmutable(path.join(farm.root('ref'), p)))).toContain(false); // one attribute was lifted
    expect(recoverOk()).toMatch(/[1-9]\d* attribute\(s\) restored/);
    for (const p of shared) {
      expect(lsattrHasImmutable(path.join(farm.root('ref'), p)), p).toBe(true);
    }
    expectIntact('attribute fault');
    expect(vunify(['-q', 'undo', ...ARGS], env).status).toBe(0);
    expectIntact('final undo');
    expect(fs.existsSync(farm.root('ref'))).toBe(true);
  });
});
