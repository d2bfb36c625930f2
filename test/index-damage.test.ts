// A damaged index (a truncated data.mdb, values that do not decode) is one line and exit 2
// for every command, never a crash; --rebuild-index moves it aside and starts anew. A full
// filesystem under the index says so, and a write that fails after links were made does
// not exit 2 (nothing changed).
import { execFileSync, spawnSync } from 'node:child_process';
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

  it('a file that ends a few pages short of its last page number (pages freed in the same transaction are never written) is healthy', () => {
    restore();
    // Both meta pages say the last page is 3 further on: as after a commit whose last pages were loose.
    const buf = Buffer.from(healthy);
    for (const at of [0, 4096]) {
      const h = buf.readUInt32LE(at + 24) === 0xbeefc0de ? at + 24 : at + 16;
      buf.writeBigUInt64LE(buf.readBigUInt64LE(h + 120) + 3n, h + 120);
    }
    fs.writeFileSync(data, buf);
    for (const cmd of [['status'], ['verify'], ['unify', ...FARM]]) {
      const r = vunify(cmd, env);
      expect(r.status, `${cmd[0]}: ${r.stderr}`).toBe(0);
    }
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

describe('a full filesystem under the index', () => {
  let small: string;
  let vs: string;
  beforeAll(() => {
    small = path.join(base, 'small');
    vs = path.join(base, 'vs2');
    fs.mkdirSync(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=128k', 'tmpfs', small]);
  });
  afterAll(() => { spawnSync('umount', [small]); });

  /** A new farm (300 files in ref and s1) and a new index on a tmpfs of kb KiB. */
  function attempt(kb: number) {
    spawnSync('chattr', ['-R', '-i', vs]);
    fs.rmSync(vs, { recursive: true, force: true });
    for (const r of ['ref', 's1']) fs.mkdirSync(path.join(vs, r, 'usr/lib'), { recursive: true });
    for (let i = 0; i < 300; i++) {
      for (const r of ['ref', 's1']) {
        const f = path.join(vs, r, 'usr/lib', `f${i}`);
        fs.writeFileSync(f, `file ${i} ${'x'.repeat(200 + i)}\n`);
        fs.utimesSync(f, 1.7e9, 1.7e9);
      }
    }
    for (const n of fs.readdirSync(small)) fs.rmSync(path.join(small, n), { recursive: true, force: true });
    execFileSync('mount', ['-o', `remount,size=${kb}k`, small]);
    const env2 = { VUNIFY_VSERVERS_DIR: vs, VUNIFY_DB: path.join(small, 'index') };
    const r = vunify(['-q', '--all-files', 'ref', 's1'], env2);
    const linked = fs.readdirSync(path.join(vs, 's1/usr/lib')).filter((n) => fs.statSync(path.join(vs, 's1/usr/lib', n)).nlink > 1).length;
    return { r, linked, env2 };
  }

  it('says the filesystem is full (ENOSPC), not only what LMDB saw (EIO)', () => {
    // Too small for the scan's records: nothing changed, exit 2, and the cause named.
    const first = attempt(128);
    expect(first.linked).toBe(0);
    expect(first.r.status, first.r.stderr).toBe(2);
    expect(first.r.stderr.trim().split('\n')).toHaveLength(1);
    expect(first.r.stderr).toMatch(/a write to the index failed \(ENOSPC: its filesystem is full; .*errno \d+\); the index keeps its last commit/);
  });

  it('a write that fails after links were made exits 1 and names the journal, never 2 (nothing changed)', () => {
    // Larger, until the scan's records fit but the records after the links do not.
    let late: ReturnType<typeof attempt> | undefined;
    for (let kb = 256; kb <= 640 && !late; kb += 32) {
      const a = attempt(kb);
      if (a.r.status === 0) break;
      if (a.linked > 0) late = a;
      else expect(a.r.status, `${kb}k: ${a.r.stderr}`).toBe(2);
    }
    expect(late, 'no size left the final records without room').toBeDefined();
    const { r, env2 } = late!;
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/a write to the index failed after this run had made links or copies in the farm \(ENOSPC: its filesystem is full; .*\); .*its journal covers every change under way: free space on its filesystem, then run vunify recover/);

    // As it says: with room, recover keeps the links and the next run finds them all done.
    execFileSync('mount', ['-o', 'remount,size=16m', small]);
    const rec = vunify(['recover'], env2);
    expect(rec.status, rec.stderr).toBe(0);
    const ok = vunify(['--json', '--all-files', 'ref', 's1'], env2);
    expect(ok.status, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout).totals).toMatchObject({ unified: 0, alreadyUnified: 300 });
    expect(vunify(['verify'], env2).status).toBe(0);
  });
});
