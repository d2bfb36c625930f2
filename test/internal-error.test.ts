// The executable's last nets: a run that stops waiting on work that never finishes, and a
// rejected promise nothing handles, each end in one line and exit 4, never a silent 0
// (test-only VUNIFY_TEST_HANG, src/fault.ts, on a real run of a small tree farm).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errLines, makeTreeRoots, removeTree } from './helpers/treefarm.js';
import { vunify } from './helpers/tree.js';

let base: string;
let args: string[];
beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-exit4-'));
  makeTreeRoots(base, ['ref', 's1'], 4);
  args = ['plan', '--all-files', '--vservers-dir', base, '--db', path.join(base, 'index'), 'ref', 's1'];
});
afterAll(() => { if (base) removeTree(base); });

describe('an internal failure', () => {
  it('the same run without the hook exits 0', () => {
    const r = vunify(args);
    expect(r.status, r.stderr).toBe(0);
  });

  it('a step that never finishes: exit 4 and one line', () => {
    const r = vunify(args, { VUNIFY_TEST_HANG: '1' });
    expect(r.signal).toBeNull();
    expect(r.status).toBe(4);
    expect(errLines(r.stderr)).toEqual(['vunify: internal error: the run stopped while waiting on work that never finished']);
  });

  it('a rejection nothing handled: exit 4 and one line', () => {
    const r = vunify(args, { VUNIFY_TEST_HANG: 'reject' });
    expect(r.status).toBe(4);
    expect(errLines(r.stderr)).toEqual(['vunify: internal error: a rejection nothing handled (VUNIFY_TEST_HANG)']);
  });
});
