// A tenant removes a folder, or swaps it for a symlink, between the scan and the link: its
// files are skipped as the tenant's change (changed, symlinkInPath), not failed (error,
// exit 1), and nothing outside the farm is touched. 600 folders overflow the 512 folders a
// root keeps open, so the first folders are opened again by path, after the swap.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { skipFor } from '../src/apply/common.js';
import { UnsafePathError } from '../src/fsx/rootdir.js';
import { removeTree } from './helpers/treefarm.js';
import { lsattrHasImmutable, strayTemps, vunify } from './helpers/tree.js';

const FOLDERS = 600;
let base: string;
let vs: string;
beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-gone-'));
  vs = path.join(base, 'vs');
  for (const r of ['ref', 's1']) {
    for (let i = 0; i < FOLDERS; i++) {
      const d = path.join(vs, r, `d${String(i).padStart(3, '0')}`);
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, 'f'), `file ${i}\n`.repeat(50));
      fs.utimesSync(path.join(d, 'f'), 1_700_000_000, 1_700_000_000);
    }
  }
  fs.mkdirSync(path.join(base, 'outside'));
  fs.writeFileSync(path.join(base, 'outside', 'f'), 'file 1\n'.repeat(50));
  fs.utimesSync(path.join(base, 'outside', 'f'), 1_700_000_000, 1_700_000_000);
});
afterAll(() => { if (base) removeTree(base); });

describe('a folder gone after the scan', () => {
  it('maps a removed folder to changed and a symlink to symlinkInPath; other errors stay errors', () => {
    const gone = Object.assign(new Error('ENOENT: no such file or directory'), { code: 'ENOENT' });
    expect(skipFor(gone)).toMatchObject({ kind: 'skip', reason: 'changed' });
    expect(skipFor(new UnsafePathError('d/f', 'd'))).toMatchObject({ kind: 'skip', reason: 'symlinkInPath' });
    const io = Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
    expect(skipFor(io)).toMatchObject({ kind: 'skip', reason: 'error' });
  });

  it('is the tenant\'s change in a run: exit 0, no error, the rest linked, nothing outside touched', () => {
    const s1 = path.join(vs, 's1');
    const outIno = fs.statSync(path.join(base, 'outside', 'f')).ino;
    const swap = `rm -rf '${s1}/d000' && rm -rf '${s1}/d001' && ln -s '${base}/outside' '${s1}/d001'`;
    const r = vunify(['unify', '--all-files', '--json', '-v', '--vservers-dir', vs, '--db', path.join(base, 'index'), 'ref', 's1'],
      { VUNIFY_TEST_BEFORE_VERIFY: swap });
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    const action = (p: string) => rep.files.find((f: { path: string }) => f.path === p)?.action;
    expect(action('/d000/f')).toBe('skip:changed');
    expect(rep.servers.s1.skipped).toMatchObject({ changed: 1, symlinkInPath: 1, error: 0 });
    expect(rep.errors).toEqual([]);
    expect(rep.servers.s1.unified).toBe(FOLDERS - 2);
    const out = fs.statSync(path.join(base, 'outside', 'f'));
    expect(out.ino).toBe(outIno);
    expect(out.nlink).toBe(1);
    expect(lsattrHasImmutable(path.join(base, 'outside', 'f'))).toBe(false);
    expect(fs.readdirSync(path.join(base, 'outside'))).toEqual(['f']);
    expect(strayTemps(s1)).toEqual([]);
  });

  it('in an undo too: a folder moved away and one swapped for a symlink are skipped, the rest restored, nothing outside touched', () => {
    const s1 = path.join(vs, 's1');
    fs.mkdirSync(path.join(base, 'outside2'));
    fs.writeFileSync(path.join(base, 'outside2', 'f'), 'file 3\n'.repeat(50));
    const outIno = fs.statSync(path.join(base, 'outside2', 'f')).ino;
    // A tenant cannot lift the attribute, but can move a folder that holds shared files away.
    const swap = `mv '${s1}/d002' '${s1}/moved2' && mv '${s1}/d003' '${s1}/moved3' && ln -s '${base}/outside2' '${s1}/d003'`;
    const r = vunify(['undo', '--all-files', '--json', '--vservers-dir', vs, '--db', path.join(base, 'index'), 'ref', 's1'],
      { VUNIFY_TEST_BEFORE_UNDO: swap });
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.errors).toEqual([]);
    expect(rep.servers.s1.skipped).toMatchObject({ changed: 1, symlinkInPath: 1, error: 0 });
    expect(rep.servers.s1.restored).toBe(FOLDERS - 4);
    const out = fs.statSync(path.join(base, 'outside2', 'f'));
    expect(out.ino).toBe(outIno);
    expect(out.nlink).toBe(1);
    expect(lsattrHasImmutable(path.join(base, 'outside2', 'f'))).toBe(false);
    expect(fs.statSync(path.join(s1, 'd004', 'f')).nlink).toBe(1); // restored: a private copy
    expect(strayTemps(s1)).toEqual([]);
  });
});
