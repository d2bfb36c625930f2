// A server file written between the byte comparison and the link is never replaced.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeRpmFarm, removeFarm, type Farm } from './builders/rpmfarm.js';
import { lsattrHasImmutable, strayTemps, vunify } from './helpers/tree.js';

let farm: Farm;
let env: NodeJS.ProcessEnv;
beforeAll(async () => {
  farm = await makeRpmFarm();
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: path.join(farm.base, 'index') };
});
afterAll(async () => { if (farm) await removeFarm(farm); });

describe('a concurrent writer', () => {
  it('writing right after the comparison keeps its file: untouched, reported as changed', () => {
    const victim = path.join(farm.root('s1'), 'usr/share/vu-extra/b.txt');
    const original = fs.readFileSync(victim);
    const ino = fs.statSync(victim).ino;
    const r = vunify(['unify', '--json', '-v', 'ref', 's1', '--', 'vu-extra'], { ...env, VUNIFY_TEST_WRITE_AFTER_VERIFY: victim });
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    const line = rep.files.find((f: { path: string }) => f.path === '/usr/share/vu-extra/b.txt');
    expect(line.action).toBe('skip:changed');
    expect(fs.statSync(victim).ino).toBe(ino);
    expect(fs.readFileSync(victim)).toEqual(Buffer.concat([original, Buffer.from('x')]));
    expect(lsattrHasImmutable(victim)).toBe(false);
    expect(rep.servers.s1.unified).toBe(3); // the others were linked
    expect(strayTemps(farm.root('s1'))).toEqual([]);
    // The link record of the file not linked is gone: undo leaves it alone.
    const u = JSON.parse(vunify(['undo', '--json', 'ref', 's1', '--', 'vu-extra'], env).stdout);
    expect(u.totals.restored).toBe(3);
    expect(fs.readFileSync(victim)).toEqual(Buffer.concat([original, Buffer.from('x')]));
  });

  it('a write to the server\'s own inode after its name went to the shared one puts the file back, as written', () => {
    // The hook appends to the first file whose name was swapped onto the shared inode,
    // through the temporary name that then holds the server's own inode (a writer with the
    // file open). The check after the exchange sees it and swaps the names back.
    const root = farm.root('s2');
    const names = ['a.txt', 'b.txt', 'same-as-a.txt', 'with space.txt'].map((n) => `usr/share/vu-extra/${n}`);
    const before = new Map(names.map((n) => [n, { bytes: fs.readFileSync(path.join(root, n)), ino: fs.statSync(path.join(root, n)).ino }]));
    const r = vunify(['unify', '--json', '-v', 'ref', 's2', '--', 'vu-extra'], { ...env, VUNIFY_TEST_WRITE_AFTER_EXCHANGE: '1' });
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    const changed = rep.files.filter((f: { action: string }) => f.action === 'skip:changed');
    expect(changed).toHaveLength(1);
    expect(changed[0].detail).toMatch(/written while it was replaced/);
    const rel = changed[0].path.slice(1);
    const victim = path.join(root, rel);
    expect(fs.statSync(victim).ino).toBe(before.get(rel)!.ino); // its own inode, under its name again
    expect(fs.readFileSync(victim)).toEqual(Buffer.concat([before.get(rel)!.bytes, Buffer.from('x')]));
    expect(fs.statSync(victim).nlink).toBe(1);
    expect(lsattrHasImmutable(victim)).toBe(false);
    expect(rep.servers.s2.unified).toBe(names.length - 1);
    expect(strayTemps(root)).toEqual([]);
    const u = JSON.parse(vunify(['undo', '--json', 'ref', 's2', '--', 'vu-extra'], env).stdout);
    expect(u.totals.restored).toBe(names.length - 1);
    expect(fs.readFileSync(victim)).toEqual(Buffer.concat([before.get(rel)!.bytes, Buffer.from('x')]));
  });
});
