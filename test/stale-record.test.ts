// A link is made only between identical files, whatever the index says: a server file whose
// record is stale (rewritten with the same size, mode and times, its record still giving the
// reference's hash, as an index can be when a write lands within one ctime tick) is planned as
// a link, and the byte comparison right before linking must refuse it (contentDiffers).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Index } from '../src/store/index-db.js';
import { removeTree } from './helpers/treefarm.js';
import { lsattrHasImmutable, strayTemps, vunify } from './helpers/tree.js';

let base: string;
let vs: string;
let db: string;
let args: string[];
const REL = 'usr/share/t/victim';
const file = (r: string, rel = REL) => path.join(vs, r, rel);

beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-stale-'));
  vs = path.join(base, 'vs');
  db = path.join(base, 'index');
  for (const r of ['ref', 's1']) {
    fs.mkdirSync(path.join(vs, r, 'usr/share/t'), { recursive: true });
    fs.writeFileSync(file(r), r === 'ref' ? 'A'.repeat(4096) : `${'A'.repeat(2048)}B${'A'.repeat(2047)}`);
    fs.writeFileSync(file(r, 'usr/share/t/same'), 'same in both\n');
    for (const rel of [REL, 'usr/share/t/same']) fs.utimesSync(file(r, rel), 1_700_000_000, 1_700_000_000);
  }
  args = ['--all-files', '--vservers-dir', vs, '--db', db];
});
afterAll(() => { if (base) removeTree(base); });

describe('a stale record that says two different files are the same', () => {
  it('leads to a link decision that the byte comparison refuses: the file stays as it is', async () => {
    const scan = vunify(['scan', ...args, 'ref', 's1']);
    expect(scan.status, scan.stderr).toBe(0);
    const index = await Index.open(db);
    try {
      const ref = index.getFile(path.join(vs, 'ref'), REL)!;
      const srv = index.getFile(path.join(vs, 's1'), REL)!;
      expect(ref.hash).not.toBe('');
      expect(srv.hash).not.toBe(ref.hash);
      await index.putFiles([[path.join(vs, 's1'), REL, { ...srv, hash: ref.hash }]]);
    } finally {
      await index.close();
    }
    // The stale record is taken as it is: the plan links the two.
    const plan = vunify(['plan', '--json', '-vv', ...args, 'ref', 's1']);
    expect(plan.status, plan.stderr).toBe(0);
    const planned = JSON.parse(plan.stdout).files.find((f: { path: string }) => f.path === `/${REL}`);
    expect(planned.action).toBe('would-link');

    const before = fs.readFileSync(file('s1'));
    const st = fs.statSync(file('s1'), { bigint: true });
    const r = vunify(['unify', '--json', '-vv', ...args, 'ref', 's1']);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    const action = (rel: string) => rep.files.find((f: { path: string }) => f.path === `/${rel}`)?.action;
    expect(action(REL)).toBe('skip:contentDiffers');
    expect(action('usr/share/t/same')).toBe('linked');
    const now = fs.statSync(file('s1'), { bigint: true });
    expect([now.ino, now.nlink, now.ctimeNs]).toEqual([st.ino, st.nlink, st.ctimeNs]);
    expect(fs.readFileSync(file('s1'))).toEqual(before);
    expect(lsattrHasImmutable(file('s1'))).toBe(false);
    expect(strayTemps(vs)).toEqual([]);
  });
});
