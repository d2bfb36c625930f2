// A damaged index (a truncated data.mdb, values that do not decode) is one line and exit 2
// for every command, never a crash; --rebuild-index moves it aside and starts anew.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { open } from 'lmdb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { snapshot, vunify } from './helpers/tree.js';

let base: string;
let db: string;
let data: string;
let healthy: Buffer;
let env: NodeJS.ProcessEnv;
const FARM = ['--all-files', 'ref', 's1'];
const COMMANDS = [['unify', ...FARM], ['plan', ...FARM], ['scan', ...FARM], ['undo', ...FARM],
  ['status'], ['report'], ['verify'], ['recover'], ['gc']];

beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vu-damage-'));
  db = path.join(base, 'index');
  data = path.join(db, 'data.mdb');
  env = { VUNIFY_VSERVERS_DIR: path.join(base, 'vs'), VUNIFY_DB: db };
  for (const r of ['ref', 's1']) fs.mkdirSync(path.join(base, 'vs', r, 'usr/lib'), { recursive: true });
  for (let i = 0; i < 300; i++) {
    for (const r of ['ref', 's1']) {
      const f = path.join(base, 'vs', r, 'usr/lib', `f${i}`);
      fs.writeFileSync(f, `file ${i} ${'x'.repeat(300)}\n`);
      fs.utimesSync(f, 1.7e9, 1.7e9);
    }
  }
  const r = vunify(['-q', ...FARM], env);
  expect(r.status, r.stderr).toBe(0);
  healthy = fs.readFileSync(data);
  expect(healthy.length).toBeGreaterThan(8 * 4096);
});

afterAll(() => {
  if (!base) return;
  spawnSync('chattr', ['-R', '-i', base]);
  fs.rmSync(base, { recursive: true, force: true });
});

/** Puts the healthy index back, with no mark or quick file of an earlier case. */
function restore(): void {
  for (const n of fs.readdirSync(base)) if (n.startsWith('index.')) fs.rmSync(path.join(base, n), { recursive: true, force: true });
  fs.writeFileSync(data, healthy);
}

function everyCommandRefuses(why: RegExp): void {
  const s1 = snapshot(path.join(base, 'vs', 's1'));
  for (const cmd of COMMANDS) {
    const r = vunify(cmd, env);
    expect(r.signal, `${cmd[0]}: ${r.stderr}`).toBeNull();
    expect(r.status, `${cmd[0]}: ${r.stderr}`).toBe(2);
    expect(r.stderr.trim().split('\n'), cmd[0]).toHaveLength(1);
    expect(r.stderr, cmd[0]).toMatch(why);
  }
  expect(snapshot(path.join(base, 'vs', 's1'))).toEqual(s1);
}

function rebuildStartsAnew(): void {
  const r = vunify(['--rebuild-index', '--json', ...FARM], env);
  expect(r.status, r.stderr).toBe(0);
  expect(JSON.parse(r.stdout).totals.alreadyUnified).toBe(300);
  expect(fs.readdirSync(base).some((n) => n.startsWith('index.broken-'))).toBe(true);
  const again = vunify(['verify'], env);
  expect(again.status, again.stdout + again.stderr).toBe(0);
}

describe('a damaged index', () => {
  it('truncated: every command says so in one line with exit 2 (no SIGBUS), and --rebuild-index starts anew', () => {
    restore();
    fs.truncateSync(data, Math.floor(healthy.length / 2 / 4096) * 4096);
    everyCommandRefuses(/index: the index is damaged \(\d+ bytes, but its last page ends at \d+: truncated\); run with --rebuild-index/);
    rebuildStartsAnew();
  });

  it('cut inside its second meta page: the same', () => {
    restore();
    fs.truncateSync(data, 4096 + 100);
    everyCommandRefuses(/the index is damaged \(its second meta page is missing.*\); run with --rebuild-index/);
    rebuildStartsAnew();
  });

  it('values that do not decode: one line and exit 2, and --rebuild-index starts anew', async () => {
    restore();
    // Every value of these tables becomes bytes msgpack cannot read (an array cut short).
    const raw = open({ path: db, compression: false });
    for (const name of ['files', 'roots', 'links', 'journal', 'inodes']) {
      const t = raw.openDB<Buffer, Buffer>({ name, keyEncoding: 'binary', encoding: 'binary' });
      for (const key of [...t.getKeys({})]) await t.put(key, Buffer.from([0x93, 0x01]));
      if (name === 'journal') await t.put(Buffer.from('link\0/x\0y'), Buffer.from([0x93, 0x01]));
    }
    await raw.close();
    everyCommandRefuses(/index: the index is damaged \(.+\); run with --rebuild-index to start a new one/);
    rebuildStartsAnew();
  });
});
