// Dry runs change nothing, not even an atime: plan and unify --dry-run read files with
// O_NOATIME. The farm is on a tmpfs mounted strictatime, so that any read without
// O_NOATIME moves the file's atime (relatime would hide a read of a file read recently).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTreeRoots, removeTree } from './helpers/treefarm.js';
import { snapshot, vunify } from './helpers/tree.js';

const ROOTS = ['ref', 's1', 's2'];
let base: string;
let mnt: string;
let args: string[];
const snapAll = () => new Map(ROOTS.map((r) => [r, snapshot(path.join(mnt, r))]));
const atimeNs = (p: string) => fs.statSync(p, { bigint: true }).atimeNs;

beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-dry-'));
  mnt = path.join(base, 'mnt');
  fs.mkdirSync(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,strictatime', 'vunify-test', mnt]);
  makeTreeRoots(mnt, ROOTS, 12);
  fs.appendFileSync(path.join(mnt, 's2/usr/share/t/f3'), 'local change\n');
  // Every atime set well in the past, as after a reset: any later read would show.
  for (const r of ROOTS) {
    for (const f of fs.readdirSync(path.join(mnt, r, 'usr/share/t'))) {
      const p = path.join(mnt, r, 'usr/share/t', f);
      fs.utimesSync(p, 1_500_000_000, fs.statSync(p).mtime);
    }
  }
  args = ['--all-files', '--vservers-dir', mnt, '--db', path.join(base, 'index')];
});
afterAll(() => { if (base) removeTree(base, [mnt]); });

describe('a dry run', () => {
  it('on this mount, a plain read moves a file\'s atime (so the check below can see one)', () => {
    const p = path.join(mnt, 'probe');
    fs.writeFileSync(p, 'probe\n');
    fs.utimesSync(p, 1_500_000_000, 1_600_000_000);
    const was = atimeNs(p);
    fs.readFileSync(p);
    expect(atimeNs(p)).not.toBe(was);
    fs.rmSync(p);
  });

  it('plan and unify --dry-run read and hash every candidate and change nothing, atimes included', () => {
    const before = snapAll();
    const plan = vunify(['plan', '--json', ...args, 'ref', 's1', 's2']);
    expect(plan.status, plan.stderr).toBe(0);
    const rep = JSON.parse(plan.stdout);
    expect(rep.totals.unified).toBe(23); // would link: 12 in s1, 11 in s2
    expect(rep.totals.filesHashed).toBe(35); // every file read but s2's longer f3, which no file pairs with
    expect(snapAll()).toEqual(before);
    const dry = vunify(['unify', '--dry-run', '--full', '--json', ...args, 'ref', 's1', 's2']);
    expect(dry.status, dry.stderr).toBe(0);
    expect(JSON.parse(dry.stdout).totals.unified).toBe(23);
    expect(snapAll()).toEqual(before);
  });
});
