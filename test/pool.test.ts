// --pool (issue 21): files the reference lacks are shared among the servers that hold them,
// through a host-only pool of canonical copies named by content hash. Real rpm packages
// installed with rpm --root, real links, the real attribute, the real CLI.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildRpm, installRpms, makeRoot, removeFarm, rpmVerify, sampleSpecs } from './builders/rpmfarm.js';
import { attributeSweep, lsattrHasImmutable, snapshot, strayTemps, vunify, type FileSnap } from './helpers/tree.js';

const SERVERS = ['s1', 's2', 's3'];
const EXTRA = ['usr/share/vu-extra/a.txt', 'usr/share/vu-extra/same-as-a.txt', 'usr/share/vu-extra/b.txt', 'usr/share/vu-extra/with space.txt'];
const CONF = 'etc/vu-extra.conf';

let base: string;
let vs: string;
let env: NodeJS.ProcessEnv;
let before: Map<string, Map<string, FileSnap>>;
let verifyBefore: Map<string, string>;
const root = (s: string) => path.join(vs, s);
const pool = () => path.join(vs, '.vunify-pool');
const run = (...args: string[]) => vunify(args, env);
const json = (...args: string[]) => {
  const at = args.indexOf('--');
  const r = run(...(at < 0 ? [...args, '--json'] : [...args.slice(0, at), '--json', ...args.slice(at)]));
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { totals: Record<string, number> & { skipped: Record<string, number> }; pool?: Record<string, number>; servers: Record<string, Record<string, number>> };
};
const ino = (s: string, rel: string) => fs.lstatSync(path.join(root(s), rel)).ino;
/** The pool's entries, as `HH/NAME` -> stat. */
function poolEntries(): Map<string, fs.Stats> {
  const out = new Map<string, fs.Stats>();
  if (!fs.existsSync(pool())) return out;
  for (const hh of fs.readdirSync(pool())) {
    for (const n of fs.readdirSync(path.join(pool(), hh))) out.set(`${hh}/${n}`, fs.lstatSync(path.join(pool(), hh, n)));
  }
  return out;
}
const UNIFY = ['unify', '--pool', '--all-packages', 'ref', ...SERVERS];
const UNDO = ['undo', '--pool', '--all-packages', 'ref', ...SERVERS];

beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-pool-'));
  vs = path.join(base, 'vservers');
  const { v1 } = sampleSpecs();
  const rpms = v1.map((spec) => buildRpm(spec, path.join(base, 'rpms')));
  // The reference has vu-base only; every server adds vu-extra, which the reference lacks.
  makeRoot(root('ref'));
  installRpms(root('ref'), [rpms[0]]);
  for (const s of SERVERS) {
    makeRoot(root(s));
    installRpms(root(s), rpms);
  }
  fs.appendFileSync(path.join(root('s3'), 'usr/share/vu-extra/b.txt'), 'local change\n');
  env = { VUNIFY_VSERVERS_DIR: vs, VUNIFY_DB: path.join(base, 'index'), VUNIFY_LOCK_DIR: path.join(base, 'locks') };
  before = new Map(['ref', ...SERVERS].map((s) => [s, snapshot(root(s))]));
  verifyBefore = new Map(SERVERS.map((s) => [s, rpmVerify(root(s))]));
});

afterAll(async () => {
  if (base) await removeFarm(base);
});

describe('--pool on an RPM farm whose reference lacks a package', () => {
  it('without --pool a package the reference lacks is refused; with it, plan says what would be pooled', () => {
    const r = run('plan', 'ref', ...SERVERS, '--', 'vu-extra');
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toMatch(/^vunify: error: vu-extra: not installed in the reference ref$/);
    const p = json('plan', '--pool', 'ref', ...SERVERS, '--', 'vu-extra');
    expect(p.totals.pooled).toBe(11); // a, same-as-a, with space x3; b only in s1 and s2
    expect(p.totals.skipped.config).toBe(3);
    expect(p.pool?.entriesCreated).toBe(3);
    expect(fs.existsSync(pool())).toBe(false); // a dry run makes no pool
    expect(run('plan', '--pool', 'ref', ...SERVERS, '--', 'vu-nothing').stderr).toMatch(/vu-nothing: not installed in the reference ref nor in any server/);
  });

  it('links identical files of the servers to one immutable pool inode; differing and config files stay private', () => {
    const r = json(...UNIFY);
    expect(r.totals.pooled).toBe(11);
    expect(r.totals.unified).toBeGreaterThan(0); // vu-base still goes to the reference
    const entries = poolEntries();
    expect(entries.size).toBe(3);
    expect(fs.lstatSync(pool()).mode & 0o777).toBe(0o700);
    for (const rel of ['usr/share/vu-extra/a.txt', 'usr/share/vu-extra/with space.txt']) {
      const i = ino('s1', rel);
      expect(SERVERS.map((s) => ino(s, rel))).toEqual([i, i, i]);
      const [name, st] = [...entries].find(([, e]) => e.ino === i)!;
      expect(name).toMatch(/^[0-9a-f]{2}\/[0-9a-f]{64}-[0-9a-f]{16}$/);
      expect(lsattrHasImmutable(path.join(pool(), name))).toBe(true);
      expect(st.nlink).toBe(rel.endsWith('a.txt') ? 7 : 4); // a.txt and same-as-a.txt: one content
      expect(ino('ref', 'usr/bin/vu-tool')).not.toBe(i);
    }
    expect(ino('s1', 'usr/share/vu-extra/b.txt')).toBe(ino('s2', 'usr/share/vu-extra/b.txt'));
    expect(fs.lstatSync(path.join(root('s3'), 'usr/share/vu-extra/b.txt')).nlink).toBe(1);
    for (const s of SERVERS) expect(fs.lstatSync(path.join(root(s), CONF)).nlink).toBe(1);
    // Nothing else changed: content and metadata of every file as before.
    for (const s of SERVERS) {
      const now = snapshot(root(s));
      for (const rel of [...EXTRA, CONF]) {
        const [a, b] = [before.get(s)!.get(rel)!, now.get(rel)!];
        expect({ sha: b.sha, mode: b.mode, uid: b.uid, gid: b.gid, mtime: b.mtimeNs, x: b.xattrs }, `${s}/${rel}`)
          .toEqual({ sha: a.sha, mode: a.mode, uid: a.uid, gid: a.gid, mtime: a.mtimeNs, x: a.xattrs });
      }
      expect(rpmVerify(root(s))).toBe(verifyBefore.get(s));
    }
    expect(attributeSweep(vs)).toEqual({ writableShared: [], loneImmutable: [] });
  });

  it('a second run reads nothing, quick or full, and counts the pooled files', () => {
    for (const extra of [[], ['--full']]) {
      const r = json(...UNIFY, ...extra);
      expect(r.totals.filesHashed, extra.join()).toBe(0);
      expect(r.totals.pooled).toBe(0);
      expect(r.totals.alreadyPooled).toBe(11);
      expect(r.pool?.entries).toBe(3);
    }
  });

  it('verify checks pool entries; status and report show the pool; an attribute cleared by hand comes back', () => {
    expect(run('verify').status).toBe(0);
    const st = run('status');
    expect(st.stdout).toMatch(/pool .*\.vunify-pool: 3 entries, .* on disk, 11 server file\(s\) linked to it/);
    expect(run('report').stdout).toMatch(/pool .*\.vunify-pool: 3 entries/);
    const [name] = [...poolEntries()].find(([, e]) => e.nlink === 4)!;
    expect(spawnSync('chattr', ['-i', path.join(pool(), name)]).status).toBe(0);
    const v = run('verify', '--json');
    expect(v.status).toBe(1);
    expect(JSON.parse(v.stdout).drifts.map((d: { reason: string }) => d.reason)).toContain('attribute cleared');
    expect(json(...UNIFY, '--full').totals.alreadyPooled).toBe(11);
    expect(lsattrHasImmutable(path.join(pool(), name))).toBe(true);
    expect(run('verify').status).toBe(0);
  });

  it('refuses a pool folder that is a root, inside one, or holds one', () => {
    const cases: Array<[string, RegExp]> = [
      [root('s1'), /is the root of s1; the pool must be outside every root/],
      [path.join(root('s2'), 'var/pool'), /is inside the root of s2/],
      [vs, /holds the root of ref/],
    ];
    for (const [dir, msg] of cases) {
      const r = run('unify', '--pool-dir', dir, '--all-packages', 'ref', ...SERVERS);
      expect(r.status, dir).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(msg);
    }
    const open = path.join(base, 'open-pool');
    fs.mkdirSync(open, { mode: 0o755 });
    fs.chmodSync(open, 0o755);
    const o = run('unify', '--pool-dir', open, '--all-packages', 'ref', ...SERVERS);
    expect(o.status).toBe(2);
    expect(o.stderr).toMatch(/must belong to vunify's user and be reachable by no one else \(mode 755/);
    fs.symlinkSync(pool(), path.join(base, 'pool-link'));
    const r = run('unify', '--pool-dir', path.join(base, 'pool-link'), '--all-packages', 'ref', ...SERVERS);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/is a symlink/);
  });

  it('undo restores every file exactly, lifts every attribute and empties the pool', () => {
    const r = json(...UNDO);
    expect(r.totals.restored).toBeGreaterThan(11);
    expect(r.pool?.entries).toBe(0);
    expect(poolEntries().size).toBe(0);
    for (const s of ['ref', ...SERVERS]) {
      const now = snapshot(root(s));
      for (const [rel, a] of before.get(s)!) {
        if (rel.startsWith('var/lib/rpm')) continue; // rpm -V queries write its database
        const b = now.get(rel);
        expect(b, `${s}/${rel}`).toBeDefined();
        if (a.type !== 'file') continue;
        expect({ sha: b!.sha, mode: b!.mode, uid: b!.uid, gid: b!.gid, mtime: b!.mtimeNs, x: b!.xattrs, n: b!.nlink }, `${s}/${rel}`)
          .toEqual({ sha: a.sha, mode: a.mode, uid: a.uid, gid: a.gid, mtime: a.mtimeNs, x: a.xattrs, n: a.nlink });
      }
    }
    expect(attributeSweep(vs)).toEqual({ writableShared: [], loneImmutable: [] });
  });

  it('a run killed at any point of the pool stage recovers: no stray name, every shared inode immutable', () => {
    const args = ['unify', '--pool', 'ref', ...SERVERS, '--', 'vu-extra'];
    let killed = 0;
    for (const n of [1, 2, 3, 5, 6, 8, 11]) {
      const r = vunify(args, { ...env, VUNIFY_FAULT_AFTER: String(n) });
      if (r.status === 0) break;
      expect(r.signal, `${n}: ${r.stderr}`).toBe('SIGKILL');
      killed++;
      expect(run('recover').status).toBe(0);
      expect(attributeSweep(vs), `after kill ${n}`).toEqual({ writableShared: [], loneImmutable: [] });
      const done = json(...args);
      expect(done.totals.pooled + done.totals.alreadyPooled, `after kill ${n}`).toBe(11);
      expect(strayTemps(vs), `after kill ${n}`).toEqual([]);
      expect(poolEntries().size).toBe(3);
      expect(attributeSweep(vs)).toEqual({ writableShared: [], loneImmutable: [] });
      for (const s of SERVERS) for (const rel of EXTRA) expect(snapshot(root(s)).get(rel)!.sha).toBe(before.get(s)!.get(rel)!.sha);
      expect(json('undo', '--pool', 'ref', ...SERVERS, '--', 'vu-extra').pool?.entries).toBe(0);
    }
    expect(killed).toBeGreaterThanOrEqual(5);
  });
});

describe('--pool in tree mode: a folder only the servers have', () => {
  let tb: string;
  const tenv = () => ({ VUNIFY_VSERVERS_DIR: path.join(tb, 'vs'), VUNIFY_DB: path.join(tb, 'index'), VUNIFY_LOCK_DIR: path.join(tb, 'locks') });
  const troot = (s: string) => path.join(tb, 'vs', s);
  const ARGS = ['--pool', '--all-files', '--no-default-excludes', 'ref', 's1', 's2'];

  beforeAll(() => {
    tb = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-pooltree-'));
    const same = Buffer.alloc(20000, 7);
    for (const s of ['ref', 's1', 's2']) {
      fs.mkdirSync(path.join(troot(s), 'usr/lib'), { recursive: true });
      fs.writeFileSync(path.join(troot(s), 'usr/lib/libc.so'), Buffer.alloc(30000, 1));
      fs.utimesSync(path.join(troot(s), 'usr/lib/libc.so'), 1_700_000_000, 1_700_000_000);
    }
    for (const s of ['s1', 's2']) {
      fs.mkdirSync(path.join(troot(s), 'opt/app'), { recursive: true });
      fs.writeFileSync(path.join(troot(s), 'opt/app/same.bin'), same);
      fs.writeFileSync(path.join(troot(s), 'opt/app/own.txt'), `only in ${s}\n`);
      fs.writeFileSync(path.join(troot(s), 'opt/app/mode.bin'), same.subarray(1));
      fs.chmodSync(path.join(troot(s), 'opt/app/mode.bin'), s === 's1' ? 0o600 : 0o644);
      for (const f of ['same.bin', 'own.txt', 'mode.bin']) fs.utimesSync(path.join(troot(s), 'opt/app', f), 1_700_000_000, 1_700_000_000);
    }
  });

  afterAll(async () => {
    if (tb) await removeFarm(tb);
  });

  it('shares the identical file through the pool, keeps the others private, and undo empties the pool', () => {
    const u = vunify(['unify', ...ARGS, '--json'], tenv());
    expect(u.status, u.stderr).toBe(0);
    const r = JSON.parse(u.stdout);
    expect(r.totals.unified).toBe(2);
    expect(r.totals.pooled).toBe(2);
    expect(r.totals.skipped.metadataDiffers + r.totals.skipped.notInReference).toBe(4); // mode.bin (mode), own.txt
    const a = fs.lstatSync(path.join(troot('s1'), 'opt/app/same.bin'));
    expect(fs.lstatSync(path.join(troot('s2'), 'opt/app/same.bin')).ino).toBe(a.ino);
    expect(a.nlink).toBe(3);
    expect(lsattrHasImmutable(path.join(troot('s1'), 'opt/app/same.bin'))).toBe(true);
    expect(fs.lstatSync(path.join(troot('s1'), 'opt/app/mode.bin')).nlink).toBe(1);
    // The pool is the vservers folder's .vunify-pool, outside both roots.
    const p = path.join(tb, 'vs', '.vunify-pool');
    const names = fs.readdirSync(p).flatMap((hh) => fs.readdirSync(path.join(p, hh)).map((n) => path.join(p, hh, n)));
    expect(names).toHaveLength(1);
    expect(fs.lstatSync(names[0]).ino).toBe(a.ino);
    const again = vunify(['unify', ...ARGS, '--json'], tenv());
    expect(JSON.parse(again.stdout).totals.filesHashed).toBe(0);
    const un = vunify(['undo', ...ARGS, '--json'], tenv());
    expect(un.status, un.stderr).toBe(0);
    expect(fs.readdirSync(p)).toEqual([]);
    expect(fs.lstatSync(path.join(troot('s1'), 'opt/app/same.bin')).nlink).toBe(1);
    expect(lsattrHasImmutable(path.join(troot('s1'), 'opt/app/same.bin'))).toBe(false);
    });

  it('undo finds a pooled file by its inode after its tenant renamed the folder', () => {
    expect(vunify(['unify', ...ARGS], tenv()).status).toBe(0);
    const moved = path.join(troot('s1'), 'opt/moved');
    fs.renameSync(path.join(troot('s1'), 'opt/app'), moved);
    fs.mkdirSync(path.join(troot('s1'), 'opt/app'));
    expect(fs.lstatSync(path.join(moved, 'same.bin')).nlink).toBe(3);
    const un = vunify(['undo', ...ARGS, '--json'], tenv());
    expect(un.status, un.stderr).toBe(0);
    const st = fs.lstatSync(path.join(moved, 'same.bin'));
    expect(st.nlink).toBe(1);
    expect(lsattrHasImmutable(path.join(moved, 'same.bin'))).toBe(false);
    expect(st.mtimeMs).toBe(1_700_000_000_000);
    expect(fs.readdirSync(path.join(tb, 'vs', '.vunify-pool'))).toEqual([]);
    expect(attributeSweep(path.join(tb, 'vs'))).toEqual({ writableShared: [], loneImmutable: [] });
});
});

describe('--pool: a tenant writing its file while the pool copies it', () => {
  let tb: string;
  const troot = (s: string) => path.join(tb, 'vs', s);
  const tenv = () => ({ VUNIFY_VSERVERS_DIR: path.join(tb, 'vs'), VUNIFY_DB: path.join(tb, 'index'), VUNIFY_LOCK_DIR: path.join(tb, 'locks') });
  const ARGS = ['--pool', '--all-files', '--no-default-excludes', 'ref', 's1', 's2', 's3'];

  beforeAll(() => {
    tb = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-poolcopy-'));
    fs.mkdirSync(path.join(troot('ref'), 'usr'), { recursive: true });
    fs.writeFileSync(path.join(troot('ref'), 'usr/own'), 'the reference\'s own\n');
    for (const s of ['s1', 's2', 's3']) {
      fs.mkdirSync(path.join(troot(s), 'opt/app'), { recursive: true });
      fs.writeFileSync(path.join(troot(s), 'opt/app/one.bin'), Buffer.alloc(50000, 5));
      fs.utimesSync(path.join(troot(s), 'opt/app/one.bin'), 1_700_000_000, 1_700_000_000);
    }
  });
  afterAll(async () => {
    if (tb) await removeFarm(tb);
  });

  it('keeps no entry of bytes that are not the hash\'s: the tenant\'s file keeps its write, the others share another copy', () => {
    const s1 = path.join(troot('s1'), 'opt/app/one.bin');
    const r = vunify(['unify', ...ARGS, '--json', '-v'], { ...tenv(), VUNIFY_TEST_WRITE_BEFORE_POOL_COPY: s1 });
    expect([0, 1], r.stderr).toContain(r.status);
    const rep = JSON.parse(r.stdout);
    expect(rep.servers.s1.pooled).toBe(0);
    expect(rep.servers.s2.pooled + rep.servers.s3.pooled).toBe(2);
    // s1's file has its write (first byte flipped) and is private; s2 and s3 share the entry.
    const b = fs.readFileSync(s1);
    expect(b[0]).toBe(5 ^ 0xff);
    expect(fs.lstatSync(s1).nlink).toBe(1);
    const p = path.join(tb, 'vs', '.vunify-pool');
    const entries = fs.readdirSync(p).flatMap((hh) => fs.readdirSync(path.join(p, hh)).map((n) => path.join(p, hh, n)));
    expect(entries).toHaveLength(1);
    expect(fs.readFileSync(entries[0]).equals(Buffer.alloc(50000, 5))).toBe(true);
    expect(fs.lstatSync(entries[0]).ino).toBe(fs.lstatSync(path.join(troot('s2'), 'opt/app/one.bin')).ino);
    expect(fs.readdirSync(p).filter((n) => n.startsWith('.vunify-tmp'))).toEqual([]);
    expect(attributeSweep(path.join(tb, 'vs'))).toEqual({ writableShared: [], loneImmutable: [] });
  });
});

