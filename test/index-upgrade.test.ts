// An index written by an older vunify (schema 1: objects keyed by root path) is upgraded by
// the next run that holds the lock, keeps every record, and undo still restores exactly. The
// schema-1 file is this farm's records written in schema 1's layout by test/helpers/schema1.ts,
// whose tables are checked equal to a real one's (test/index-upgrade-fixture.test.ts).
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { open } from 'lmdb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Index } from '../src/store/index-db.js';
import { makeRpmFarm, removeFarm, rpmVerify, type Farm } from './builders/rpmfarm.js';
import { writeSchema1 as writeSchema1At, type Schema1Contents } from './helpers/schema1.js';
import { snapshot, strayTemps, vunify, type FileSnap } from './helpers/tree.js';

let farm: Farm;
let db: string;
let env: NodeJS.ProcessEnv;
const SERVERS = ['s1', 's2'];
const PKGS = ['vu-base', 'vu-extra'];
const ARGS = ['ref', ...SERVERS, '--', ...PKGS];

beforeAll(async () => {
  farm = await makeRpmFarm();
  db = path.join(farm.base, 'index');
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: db };
});
let small: string | undefined;
afterAll(async () => {
  if (small) spawnSync('umount', [small]);
  if (farm) await removeFarm(farm);
});
let records: Awaited<ReturnType<typeof contents>> | undefined;

/** Everything the index holds, read through its API. */
async function contents(opts: { upgrade?: boolean } = {}) {
  const index = await Index.open(db, opts);
  try {
    const roots = index.allRoots();
    return {
      roots,
      files: roots.map(({ root }) => [root, [...index.filesOf(root)]]),
      links: [...index.allLinks()],
      inodes: [...index.allInodes()],
      holders: roots.flatMap(({ root }) => [...index.filesOf(root)].filter((f) => f.rec.hash).slice(0, 5)
        .map((f) => [f.rec.hash, index.holders(f.rec.hash).sort((a, b) => (a.root + a.path < b.root + b.path ? -1 : 1))])),
    };
  } finally {
    await index.close();
  }
}

/** The records in schema 1's layout (the writer is held to a real schema-1 file: test/index-upgrade-fixture.test.ts). */
const writeSchema1 = (c: Awaited<ReturnType<typeof contents>>, to = db) => writeSchema1At(c as unknown as Schema1Contents, to);

const kept = (f: FileSnap) => ({ type: f.type, sha: f.sha, mode: f.mode, uid: f.uid, gid: f.gid, mtime: f.mtimeNs, nlink: f.nlink, xattrs: f.xattrs });

describe('an index of schema 1', () => {
  it('is refused in one line by a run without the lock, upgraded by one with it, records and undo intact', async () => {
    const before = new Map(SERVERS.map((s) => [s, snapshot(farm.root(s))]));
    const verifyBefore = new Map(SERVERS.map((s) => [s, rpmVerify(farm.root(s), PKGS)]));
    const first = vunify(['--json', ...ARGS], env);
    expect(first.status, first.stderr).toBe(0);
    const linked = JSON.parse(first.stdout).totals.unified as number;
    expect(linked).toBeGreaterThan(10);

    const c = await contents();
    records = c;
    expect(c.links).toHaveLength(linked);
    expect(c.inodes.length).toBeGreaterThan(0);
    expect(c.links.some((l) => Object.keys(l.rec.xattrs).includes('security.capability'))).toBe(true);
    const sizeV2 = Index.fileSize(db);
    await writeSchema1(c);
    fs.rmSync(`${db}.quick`, { force: true });

    const st = vunify(['status', '--json'], env);
    expect(st.status).toBe(2);
    expect(st.stderr.trim().split('\n')).toHaveLength(1);
    expect(st.stderr).toMatch(/older vunify \(schema 1\); any run of unify, plan, scan or gc upgrades it/);

    // Upgraded on open: the same records, read back through the API.
    expect(await contents({ upgrade: true })).toEqual(c);
    expect(fs.readdirSync(farm.base).filter((n) => n.includes('.upgrade'))).toEqual([]);
    expect(Index.fileSize(db)).toBeLessThanOrEqual(sizeV2 * 2);
    const meta = open({ path: db, readOnly: true });
    try {
      expect(meta.openDB<number, string>({ name: 'meta' }).get('schema')).toBe(2);
    } finally {
      await meta.close();
    }

    // Once more from schema 1, upgraded this time by the CLI's own run. A complete run
    // leaves a quick file, which still names a folder index after its data file is replaced.
    expect(vunify(['-q', ...ARGS], env).status).toBe(0);
    expect(fs.existsSync(`${db}.quick`)).toBe(true);
    await writeSchema1(c);
    // A new file fails the quick check, so the run reads the quick file's survey before it
    // opens (and upgrades) the index; the survey described the old file and is not used.
    const extra = path.join(farm.root('s1'), 'usr/share/vu/new-since.txt');
    fs.writeFileSync(extra, 'not in any package\n');
    const plan = vunify(['plan', '--json', ...ARGS], { ...env, VUNIFY_TRACE: '1' });
    fs.rmSync(extra);
    expect(plan.status, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout).totals).toMatchObject({ unified: 0, alreadyUnified: linked });
    expect(plan.stderr).toMatch(/trace: survey: [1-9]\d* inodes unchanged/);
    expect(plan.stderr).toMatch(/trace: settled: 0 files unchanged/);
    // The quick file described the old file (its transaction id among others): gone with it.
    expect(fs.existsSync(`${db}.quick`)).toBe(false);

    // Undo needs the link records: what each file was before it became a link.
    const u = vunify(['undo', '--json', ...ARGS], env);
    expect(u.status, u.stderr).toBe(0);
    for (const s of SERVERS) {
      const after = snapshot(farm.root(s));
      for (const [p, f] of before.get(s)!) {
        if (p.startsWith('var/lib/rpm/') || f.type === 'dir') continue;
        expect(kept(after.get(p)!), `${s}/${p}`).toEqual(kept(f));
      }
      expect(rpmVerify(farm.root(s), PKGS)).toBe(verifyBefore.get(s));
      expect(strayTemps(farm.root(s))).toEqual([]);
    }
  });

  it('an upgrade that runs out of space stops in one line and leaves the old index whole', async () => {
    expect(records).toBeDefined();
    small = path.join(farm.base, 'small');
    fs.mkdirSync(small);
    const v1 = path.join(farm.base, 'v1-index');
    await writeSchema1(records!, v1);
    const bytes = fs.statSync(v1).size;
    // Room for the schema-1 file and its lock file, not for the new one beside them.
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${bytes + 16384}`, 'tmpfs', small]);
    const dbSmall = path.join(small, 'index.mdb');
    fs.copyFileSync(v1, dbSmall);
    const sum = () => fs.readFileSync(dbSmall).toString('base64');
    const before = sum();
    const envSmall = { ...env, VUNIFY_DB: dbSmall };
    const r = vunify(['plan', ...ARGS], envSmall);
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/index\.mdb: upgrading the index from schema 1 failed \(.*\); the index is as it was/);
    expect(sum()).toBe(before);
    expect(fs.readdirSync(small).filter((n) => n.includes('.upgrade'))).toEqual([]);
    execFileSync('mount', ['-o', `remount,size=${bytes * 3 + 65536}`, small]);
    const ok = vunify(['plan', '--full', '--json', ...ARGS], envSmall);
    expect(ok.status, ok.stderr).toBe(0);
    const t = JSON.parse(ok.stdout).totals; // the first test undid the links: would link again
    expect(t.unified + t.alreadyUnified).toBeGreaterThan(10);
    expect(vunify(['status'], envSmall).status).toBe(0); // schema 2 now: status reads it
  });
});
