// A path longer than LMDB's largest key (1,978 bytes) is legal on ext4 and any tenant can
// make one: it must be indexed and unified like any other file, never stop the farm's run.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lsattrHasImmutable, snapshot, strayTemps, vunify } from './helpers/tree.js';

// 15 folders of 100 'é' (200 bytes each, 400 once the journal's UTF-8 doubles the high bytes).
const DEEP = Array.from({ length: 15 }, (_, i) => `${i}${'é'.repeat(100)}`).join('/');
const LONG = `usr/share/${DEEP}/data.bin`;
// 1,960 bytes: its files and links keys fit (4 + 1,960), its content key (36 + 1,960) does not.
const EDGE = `usr/share/${Array.from({ length: 9 }, (_, i) => `${i}${'m'.repeat(194)}`).join('/')}/${'e'.repeat(1960 - 10 - 9 * 196)}`;
const SERVERS = ['s1', 's2'];
const PLAIN = [...Array.from({ length: 20 }, (_, i) => `usr/lib/f${i}`), EDGE];

let base: string;
let env: NodeJS.ProcessEnv;
const args = (...extra: string[]) => ['--all-files', ...extra, 'ref', ...SERVERS];
const file = (root: string, rel: string) => path.join(base, 'vs', root, rel);

beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vu-longpath-'));
  env = { VUNIFY_VSERVERS_DIR: path.join(base, 'vs'), VUNIFY_DB: path.join(base, 'index') };
  expect(Buffer.byteLength(LONG)).toBeGreaterThan(3000);
  expect(Buffer.byteLength(EDGE)).toBe(1960);
  for (const root of ['ref', ...SERVERS]) {
    for (const rel of [...PLAIN, LONG]) {
      fs.mkdirSync(path.dirname(file(root, rel)), { recursive: true });
      fs.writeFileSync(file(root, rel), `${rel.length} ${rel.slice(-20)}\n`);
      fs.utimesSync(file(root, rel), 1.7e9, 1.7e9); // equal metadata
    }
  }
});

afterAll(() => {
  if (!base) return;
  spawnSync('chattr', ['-R', '-i', base]);
  fs.rmSync(base, { recursive: true, force: true });
});

describe('a path longer than the largest LMDB key', () => {
  it('is unified like any other file, and the rest of the farm too', () => {
    const before = new Map(SERVERS.map((s) => [s, snapshot(path.join(base, 'vs', s))]));
    const r = vunify(args('--json'), env);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).totals.unified).toBe(2 * (PLAIN.length + 1));
    expect(fs.existsSync(`${env.VUNIFY_DB}.write-failed`)).toBe(false);
    const refIno = fs.statSync(file('ref', LONG)).ino;
    for (const s of SERVERS) expect(fs.statSync(file(s, LONG)).ino, s).toBe(refIno);
    expect(fs.statSync(file('ref', LONG)).nlink).toBe(3);
    expect(lsattrHasImmutable(file('ref', LONG))).toBe(true);

    // The records read back: a quick rescan, a full one and verify all see it as linked.
    for (const extra of [[], ['--full']]) {
      const again = vunify(args('--json', ...extra), env);
      expect(again.status, again.stderr).toBe(0);
      expect(JSON.parse(again.stdout).totals).toMatchObject({ unified: 0, alreadyUnified: 2 * (PLAIN.length + 1) });
    }
    const v = vunify(['verify'], env);
    expect(v.status, v.stdout + v.stderr).toBe(0);

    const u = vunify(args('undo', '--json'), env);
    expect(u.status, u.stderr).toBe(0);
    expect(JSON.parse(u.stdout).totals.restored).toBe(2 * (PLAIN.length + 1));
    for (const s of SERVERS) {
      const now = snapshot(path.join(base, 'vs', s));
      const was = before.get(s)!.get(LONG)!;
      const is = now.get(LONG)!;
      expect(is.ino).not.toBe(BigInt(refIno));
      expect({ ...is, ino: 0n, ctimeNs: 0n }).toEqual({ ...was, ino: 0n, ctimeNs: 0n });
    }
  });

  it('a run killed while the long path is under way is recovered (its journal key fits too)', () => {
    const killed = vunify(args(), { ...env, VUNIFY_FAULT_AFTER: '1' });
    expect(killed.signal, killed.stderr).toBe('SIGKILL');
    const rec = vunify(['recover'], env);
    expect(rec.status, rec.stderr).toBe(0);
    expect(rec.stdout + rec.stderr).toMatch(/recovered [1-9]\d* unfinished change/);
    const st = vunify(['status', '--json'], env);
    expect(st.status, st.stderr).toBe(0);
    expect(JSON.parse(st.stdout).unfinished).toBe(0);
    for (const s of SERVERS) expect(strayTemps(path.join(base, 'vs', s))).toEqual([]);
    const ok = vunify(args('--json'), env);
    expect(ok.status, ok.stderr).toBe(0);
    const t = JSON.parse(ok.stdout).totals;
    expect(t.unified + t.alreadyUnified).toBe(2 * (PLAIN.length + 1));
  });
});
