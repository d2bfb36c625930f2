// Rescans read only what changed, and the index stays true to the disk: after linking, a
// changed file, a new server, a removed package and an upgraded package.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Blake3Hasher } from '@napi-rs/blake-hash';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Index } from '../src/store/index-db.js';
import { makeRpmFarm, removeFarm, type Farm } from './builders/rpmfarm.js';
import { lsattrHasImmutable, vunify } from './helpers/tree.js';

const PKGS = ['vu-base', 'vu-extra'];
let farm: Farm;
let env: NodeJS.ProcessEnv;
let db: string;

const SUB = new Set(['scan', 'undo', 'unify', 'plan']);
const json = (...args: string[]) => {
  const r = vunify(SUB.has(args[0]) ? [args[0], '--json', ...args.slice(1)] : ['--json', ...args], env);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout);
};
const hashed = (rep: { reference: { filesHashed: number }; servers: Record<string, { filesHashed: number }> }) =>
  Object.fromEntries([['ref', rep.reference.filesHashed], ...Object.entries(rep.servers).map(([k, v]) => [k, v.filesHashed])]);

function rpm(root: string, ...args: string[]): void {
  const r = spawnSync('rpm', ['--root', root, '--dbpath', '/var/lib/rpm', '--define', '_db_backend sqlite', '--force-debian', '--nodeps', '--noscripts', '--notriggers', ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`rpm ${args.join(' ')}: ${r.stderr}`);
}

/** Every record of the index describes the file on disk as it is: inode, size, times, content. */
async function expectIndexMatchesDisk(): Promise<number> {
  const index = await Index.open(db);
  let n = 0;
  try {
    for (const { root } of index.allRoots()) {
      for (const { path: rel, rec } of index.filesOf(root)) {
        const abs = path.join(root, Buffer.from(rel, 'latin1').toString());
        const st = fs.lstatSync(abs, { bigint: true });
        expect({ rel, ino: String(st.ino), size: Number(st.size), mtime: String(st.mtimeNs), ctime: String(st.ctimeNs) })
          .toEqual({ rel, ino: rec.ino, size: rec.size, mtime: rec.mtimeNs, ctime: rec.ctimeNs });
        // '' means not read yet (no file of its size to pair with, or none compared so far).
        if (rec.hash !== '') {
          const h = new Blake3Hasher();
          h.update(fs.readFileSync(abs));
          expect(h.digest('hex'), rel).toBe(rec.hash);
        }
        n++;
      }
    }
  } finally {
    await index.close();
  }
  return n;
}

beforeAll(async () => {
  farm = await makeRpmFarm();
  db = path.join(farm.base, 'index');
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: db };
});
afterAll(async () => { if (farm) await removeFarm(farm); });

describe('incremental rescans', () => {
  it('a rescan of a unified farm reads nothing', async () => {
    const first = json('ref', 's1', 's2', '--', ...PKGS);
    expect(first.totals.unified).toBe(20);
    // Read once each: the 10 non-empty candidate files of ref, s1 and s2 (empty ones never).
    expect(first.totals.filesHashed).toBe(30);
    const again = json('scan', 'ref', 's1', 's2', '--', ...PKGS);
    expect(again.totals.filesHashed).toBe(0);
    expect(await expectIndexMatchesDisk()).toBe(33);
  });

  it('a changed file in one server is the only one read again', async () => {
    // 42 bytes, like the reference's README, and its mode, owner and mtime: a size partner
    // a link could share metadata with, so it must be read.
    const text = 'not the README, but just as long: 42 bytes\n'.slice(0, 41) + '\n';
    const p = path.join(farm.root('s1'), 'usr/share/vu/empty');
    const readme = fs.statSync(path.join(farm.root('ref'), 'usr/share/doc/vu-base/README'));
    fs.writeFileSync(p, text);
    fs.chmodSync(p, readme.mode & 0o7777);
    fs.utimesSync(p, readme.atime, readme.mtime);
    const r = json('scan', 'ref', 's1', 's2', '--', ...PKGS);
    expect(hashed(r)).toEqual({ ref: 0, s1: 1, s2: 0 });
    expect(r.totals.bytesHashed).toBe(42);
    expect(json('scan', 'ref', 's1', 's2', '--', ...PKGS).totals.filesHashed).toBe(0);
    await expectIndexMatchesDisk();
  });

  it('a new server: only its files are read', async () => {
    const r = json('ref', 's1', 's2', 's3', '--', ...PKGS);
    // s3's 10 non-empty files, and the reference's copies they are compared with byte for byte.
    expect(hashed(r)).toEqual({ ref: 10, s1: 0, s2: 0, s3: 10 });
    expect(r.servers.s3.unified).toBe(8);
    expect(json('scan', 'ref', 's1', 's2', 's3', '--', ...PKGS).totals.filesHashed).toBe(0);
    await expectIndexMatchesDisk();
  });

  it('a removed package: its entries leave the index, nothing is read', async () => {
    // Unified files are immutable: undo the package for that server, then remove it.
    const u = json('undo', 'ref', 's2', '--', 'vu-extra');
    expect(u.totals.restored).toBe(4);
    rpm(farm.root('s2'), '-e', 'vu-extra');
    const r = json('scan', 'ref', 's1', 's2', 's3', '--', ...PKGS);
    expect(r.totals.filesHashed).toBe(0);
    expect(r.servers.s2.notes).toContain('package vu-extra is not installed');
    const index = await Index.open(db);
    const s2 = [...index.filesOf(fs.realpathSync(farm.root('s2')))].map((f) => f.path);
    await index.close();
    expect(s2.filter((p) => p.startsWith('usr/share/vu-extra/'))).toEqual([]);
    expect(s2.length).toBe(7); // vu-base's regular files only
    await expectIndexMatchesDisk();
  });

  it('an upgraded package in one server: only its new files are read, identical ones linked again', async () => {
    const u = json('undo', 'ref', 's1', '--', 'vu-base');
    expect(u.totals.restored).toBe(6); // its empty file got content earlier: private
    expect(json('scan', 'ref', 's1', '--', 'vu-base').totals.filesHashed).toBe(0); // undo recorded its copies
    rpm(farm.root('s1'), '-U', path.join(farm.rpmDir, 'vu-base-2.0-1.noarch.rpm'));
    const r = json('ref', 's1', 's2', 's3', '--', ...PKGS);
    // rpm -U rewrote vu-base's 7 regular files: the 6 non-empty ones are compared with the reference's.
    expect(hashed(r)).toEqual({ ref: 6, s1: 6, s2: 0, s3: 0 });
    expect(r.servers.s1.unified).toBe(4); // all but the two changed in 2.0 and the empty file
    expect(r.servers.s1.skipped.contentDiffers).toBe(2);
    await expectIndexMatchesDisk();
  });

  it('gc keeps a consistent index, and a deleted server leaves it on the next run', async () => {
    const g = vunify(['gc', '--json'], env);
    expect(g.status, g.stderr).toBe(0);
    expect(JSON.parse(g.stdout).steps.map((s: { name: string }) => s.name)).toEqual(['vanished roots', 'vanished files', 'stale link records', 'stale attribute records', 'unused pool entries', 'compact']);
    await expectIndexMatchesDisk();
    const rep = JSON.parse(vunify(['report', '--json'], env).stdout);
    expect(rep.reference).toBe('ref');
    expect(Object.keys(rep.servers).sort()).toEqual(['s1', 's2', 's3']);
    expect(rep.servers.s1.linkedFiles).toBeGreaterThan(0);
    // Delete s3 (clear the attribute of its links first), then any run drops it.
    spawnSync('chattr', ['-R', '-i', farm.root('s3')]);
    fs.rmSync(farm.root('s3'), { recursive: true });
    json('scan', 'ref', 's1', 's2', '--', ...PKGS);
    const after = JSON.parse(vunify(['report', '--json'], env).stdout);
    expect(Object.keys(after.servers).sort()).toEqual(['s1', 's2']);
    await expectIndexMatchesDisk();
  });

  it('a new index over a farm whose attributes were cleared: the attribute goes back on, and its records follow', async () => {
    // Shared inodes without the attribute and an index that knows none of them: unify visits
    // them only to set the attribute (nothing to compare), which moves their ctime.
    spawnSync('chattr', ['-R', '-i', farm.root('ref'), farm.root('s1'), farm.root('s2')]);
    fs.rmSync(db, { recursive: true, force: true });
    const r = json('ref', 's1', 's2', '--', ...PKGS);
    expect(r.totals.unified).toBe(0);
    expect(lsattrHasImmutable(path.join(farm.root('s1'), 'usr/share/vu-extra/b.txt'))).toBe(true);
    await expectIndexMatchesDisk();
    expect(json('ref', 's1', 's2', '--', ...PKGS).totals).toMatchObject({ unified: 0, filesHashed: 0 });
  });
});
