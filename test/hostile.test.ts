// A vserver's root controls its tree: symlinks inside it must never lead vunify outside.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clearImmutableTree, makeRpmFarm, removeFarm, type Farm } from './builders/rpmfarm.js';
import { lsattrHasImmutable, snapshot, vunify } from './helpers/tree.js';

let farm: Farm;
let outside: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  farm = await makeRpmFarm();
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: path.join(farm.base, 'index') };
  outside = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-outside-'));
  // s1: a whole folder of package files replaced by a symlink to identical files outside the farm.
  const s1dir = path.join(farm.root('s1'), 'usr/share/vu-extra');
  fs.cpSync(s1dir, path.join(outside, 'vu-extra'), { recursive: true, preserveTimestamps: true });
  fs.rmSync(s1dir, { recursive: true });
  fs.symlinkSync(path.join(outside, 'vu-extra'), s1dir);
  // s2: one file replaced by a symlink to an identical file outside.
  const lib = path.join(farm.root('s2'), 'usr/lib/vu/libvu.so.1');
  fs.copyFileSync(lib, path.join(outside, 'libvu.so.1'));
  fs.utimesSync(path.join(outside, 'libvu.so.1'), fs.statSync(lib).atime, fs.statSync(lib).mtime);
  fs.rmSync(lib);
  fs.symlinkSync(path.join(outside, 'libvu.so.1'), lib);
});

afterAll(async () => {
  if (outside) { clearImmutableTree(outside); fs.rmSync(outside, { recursive: true, force: true }); }
  if (farm) await removeFarm(farm);
});

describe('symlinks inside server roots', () => {
  it('are never followed by unify or undo, and nothing outside the farm changes', () => {
    const before = snapshot(outside);
    const r = vunify(['-vv', '--json', 'ref', 's1', 's2', '--', 'vu-base', 'vu-extra'], env);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    const line = (s: string, p: string) => rep.files.find((f: { server: string; path: string }) => f.server === s && f.path === p)?.action;
    for (const p of ['a.txt', 'b.txt', 'same-as-a.txt', 'with space.txt']) {
      expect(line('s1', `/usr/share/vu-extra/${p}`)).toBe('skip:symlinkInPath');
      expect(line('s2', `/usr/share/vu-extra/${p}`)).toBe('linked');
    }
    expect(line('s2', '/usr/lib/vu/libvu.so.1')).toBe('skip:notRegular');
    expect(line('s1', '/usr/lib/vu/libvu.so.1')).toBe('linked');
    expect(snapshot(outside)).toEqual(before);
    for (const f of ['libvu.so.1', 'vu-extra/a.txt']) expect(lsattrHasImmutable(path.join(outside, f))).toBe(false);
    expect(fs.lstatSync(path.join(farm.root('s1'), 'usr/share/vu-extra')).isSymbolicLink()).toBe(true);
    const u = vunify(['undo', 'ref', 's1', 's2', '--', 'vu-base', 'vu-extra'], env);
    expect(u.status, u.stderr).toBe(0);
    expect(snapshot(outside)).toEqual(before);
    expect(fs.lstatSync(path.join(farm.root('s2'), 'usr/lib/vu/libvu.so.1')).isSymbolicLink()).toBe(true);
  });

  it('a folder swapped for a symlink again and again during runs never leads outside', async () => {
    // s2's usr/share/vu-extra flips between the real folder and a symlink to identical files
    // outside the farm, as fast as it can, while unify and undo run.
    const target = path.join(farm.root('s2'), 'usr/share/vu-extra');
    const decoy = path.join(outside, 'decoy');
    fs.cpSync(target, decoy, { recursive: true, preserveTimestamps: true });
    const before = snapshot(outside);
    const swapper = spawn(process.execPath, ['-e', `
      const fs = require('fs');
      const [t, d] = process.argv.slice(1);
      const aside = t + '.real';
      const end = Date.now() + 4000;
      let n = 0;
      while (Date.now() < end) {
        fs.renameSync(t, aside); fs.symlinkSync(d, t);
        fs.unlinkSync(t); fs.renameSync(aside, t);
        n++;
      }
      console.log(n);
    `, target, decoy], { stdio: ['ignore', 'pipe', 'inherit'] });
    let swaps = '';
    swapper.stdout.on('data', (b) => (swaps += b));
    let running = true;
    const done = new Promise((res) => swapper.on('exit', () => { running = false; res(null); }));
    await new Promise((r) => setTimeout(r, 100));
    let runs = 0;
    // Each spawnSync blocks this process; the swapper, a process of its own, keeps going.
    while (running || runs < 2) {
      const u = vunify(['unify', '-q', 'ref', 's2', '--', 'vu-extra'], env);
      expect([0, 1], u.stderr).toContain(u.status); // files may fail while their folder is away
      const d = vunify(['undo', '-q', 'ref', 's2', '--', 'vu-extra'], env);
      expect([0, 1], d.stderr).toContain(d.status);
      runs++;
      await new Promise((r) => setImmediate(r));
    }
    await done;
    expect(Number(swaps)).toBeGreaterThan(100);
    expect(fs.lstatSync(target).isDirectory()).toBe(true);
    expect(snapshot(outside)).toEqual(before);
    for (const f of ['decoy/a.txt', 'decoy/b.txt', 'libvu.so.1']) expect(lsattrHasImmutable(path.join(outside, f))).toBe(false);
  });

  it('a reference root given through a symlinked vservers entry is used as the folder it names', () => {
    // The host's admin controls the vservers folder itself; a symlink there is followed once.
    fs.symlinkSync(farm.root('s3'), path.join(farm.vserversDir, 's3-alias'));
    const r = vunify(['plan', 'ref', 's3', 's3-alias', '--', 'vu-base'], env);
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toMatch(/s3-alias: is named twice \(also as 's3'\)/);
  });
});
