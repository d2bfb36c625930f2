// The tree walk never takes a `.vunify-tmp.*` name as a candidate: such a name is a run's
// temporary (one a read-only remount left, or one under way), never a file to link or undo,
// even when a root holds one that no journal names (a tenant can make one).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTreeRoots, removeTree } from './helpers/treefarm.js';
import { strayTemps, vunify } from './helpers/tree.js';

const TMP = 'usr/share/t/.vunify-tmp.4242.1';
let base: string;
let args: string[];
beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-tmpnames-'));
  makeTreeRoots(base, ['ref', 's1'], 3);
  for (const r of ['ref', 's1']) {
    fs.writeFileSync(path.join(base, r, TMP), 'the same bytes in both roots\n');
    fs.utimesSync(path.join(base, r, TMP), 1_700_000_000, 1_700_000_000);
  }
  args = ['--all-files', '--vservers-dir', base, '--db', path.join(base, 'index'), 'ref', 's1'];
});
afterAll(() => { if (base) removeTree(base); });

describe('a .vunify-tmp name in the roots', () => {
  it('is no candidate: not planned, not linked, not undone, left as it is', () => {
    const before = fs.statSync(path.join(base, 's1', TMP), { bigint: true });
    expect(strayTemps(path.join(base, 's1'))).toEqual([TMP]);
    for (const cmd of ['plan', 'unify', 'undo']) {
      const r = vunify([cmd, '--json', '-vv', ...args]);
      // A partial run says why in its report's errors and skips: shown if this fails (it
      // failed once in a full CI run, undo exiting 1, and could not be made to again).
      const why = () => { try { const j = JSON.parse(r.stdout); return JSON.stringify({ errors: j.errors, skipped: j.totals?.skipped }); } catch { return r.stdout.slice(0, 2000); } };
      expect(r.status, `${cmd}: ${r.stderr} ${r.status !== 0 ? why() : ''}`).toBe(0);
      const rep = JSON.parse(r.stdout);
      expect(rep.files.map((f: { path: string }) => f.path).filter((p: string) => p.includes('.vunify-tmp')), cmd).toEqual([]);
      if (cmd === 'unify') expect(rep.totals.unified).toBe(3); // the other files were linked
      const now = fs.statSync(path.join(base, 's1', TMP), { bigint: true });
      expect([now.ino, now.nlink, now.ctimeNs], cmd).toEqual([before.ino, before.nlink, before.ctimeNs]);
    }
  });
});
