// Tenant isolation while linking: a tenant that writes to its files the moment they become
// shared must never reach the reference or another server (issue 16, item 1).
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clearImmutableTree } from './builders/rpmfarm.js';
import { lsattrHasImmutable, strayTemps } from './helpers/tree.js';

const FILES = 200;
const ROOTS = ['ref', 's1', 's2', 's3'];
let base: string;

const sha = (p: string) => createHash('sha256').update(fs.readFileSync(p)).digest('hex');

/** A tree-mode farm: every root holds the same FILES files, with equal metadata. */
function makeFarm(on: string, pooled = false): { vs: string; db: string } {
  const vs = fs.mkdtempSync(path.join(on, 'farm-'));
  const mtime = new Date('2024-01-02T03:04:05.678Z');
  for (const r of ROOTS) {
    // --pool: the reference lacks them all; the servers share them through the pool.
    if (pooled && r === 'ref') {
      for (let i = 0; i < FILES; i++) {
        fs.mkdirSync(path.join(vs, r, 'usr/lib', `d${i % 10}`), { recursive: true });
        fs.writeFileSync(path.join(vs, r, 'usr/lib', `d${i % 10}`, `f${i}`), `reference's own ${i}\n`);
      }
      continue;
    }
    for (let i = 0; i < FILES; i++) {
      const d = path.join(vs, r, 'usr/lib', `d${i % 10}`);
      fs.mkdirSync(d, { recursive: true });
      const f = path.join(d, `f${i}`);
      fs.writeFileSync(f, `file ${i} `.repeat(50 + i));
      fs.chmodSync(f, 0o644);
      fs.utimesSync(f, mtime, mtime);
    }
  }
  return { vs, db: path.join(base, `${path.basename(vs)}.index`) };
}

// Polls its root's files; as soon as one shows more than one link, opens it for appending
// and writes. Prints one line per attempt: path, outcome, how long the open took (ms).
const ATTACKER = `
const fs = require('fs'), path = require('path');
const root = process.argv[1];
const files = [];
const walk = (d) => { for (const e of fs.readdirSync(d, { withFileTypes: true })) { const p = path.join(d, e.name); if (e.isDirectory()) walk(p); else if (e.name.startsWith('f')) files.push(p); } };
walk(root);
const done = new Set();
const out = [];
const end = Date.now() + 30000;
process.on('SIGTERM', () => { fs.writeFileSync(process.argv[2], out.join('\\n')); process.exit(0); });
while (Date.now() < end && done.size < files.length) {
  for (const f of files) {
    if (done.has(f)) continue;
    let st; try { st = fs.lstatSync(f); } catch { continue; }
    if (st.nlink < 2) continue;
    done.add(f);
    const t = process.hrtime.bigint();
    try {
      const fd = fs.openSync(f, fs.constants.O_WRONLY | fs.constants.O_APPEND);
      const ms = Number(process.hrtime.bigint() - t) / 1e6;
      try { fs.writeSync(fd, 'PWNED'); out.push(f + ' wrote ' + ms); } catch (e) { out.push(f + ' ' + e.code + '-on-write ' + ms); }
      fs.closeSync(fd);
    } catch (e) { out.push(f + ' ' + e.code + ' ' + Number(process.hrtime.bigint() - t) / 1e6); }
  }
}
fs.writeFileSync(process.argv[2], out.join('\\n'));
`;

const mounts: string[] = [];
/** A loop-mounted filesystem of the given type: XFS and btrfs let a descriptor opened before
 * the attribute write after it, ext4 does not. */
function loopMount(type: 'xfs' | 'btrfs'): string {
  const img = path.join(base, `${type}${mounts.length}.img`);
  const dir = path.join(base, `${type}${mounts.length}`);
  fs.mkdirSync(dir);
  execFileSync('truncate', ['-s', '300M', img]);
  execFileSync(`mkfs.${type}`, ['-q', img]);
  execFileSync('mount', ['-o', 'loop', img, dir]);
  mounts.push(dir);
  return dir;
}

const CLI = path.join(__dirname, '../dist/cli.js');

// Opens every file of its root for appending in a loop, writing where an open succeeds.
const SPINNER = `
const fs = require('fs'), path = require('path');
const root = process.argv[1];
const files = [];
const walk = (d) => { for (const e of fs.readdirSync(d, { withFileTypes: true })) { const p = path.join(d, e.name); if (e.isDirectory()) walk(p); else if (e.name.startsWith('f')) files.push(p); } };
walk(root);
let stop = false;
process.on('SIGTERM', () => { stop = true; });
const tick = () => {
  for (const f of files) {
    try { const fd = fs.openSync(f, fs.constants.O_WRONLY | fs.constants.O_APPEND); try { fs.writeSync(fd, 'PWNED'); } catch {} fs.closeSync(fd); } catch {}
  }
  if (!stop) setImmediate(tick); else fs.writeFileSync(process.argv[2], 'done');
};
tick();
`;

beforeAll(() => { base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-iso-')); });
afterAll(() => {
  if (!base) return;
  clearImmutableTree(base);
  for (const m of mounts) execFileSync('umount', [m]);
  fs.rmSync(base, { recursive: true, force: true });
});

const reported: number[] = [];

describe('a tenant that writes to its files as soon as they are shared', () => {
  const cases: Array<[string, string, boolean?]> = [['tmp', 's1'], ['tmp', 's2'], ['tmp', 's3'], ['tmp', 'ref'], ['xfs', 's1'], ['xfs', 'ref'], ['btrfs', 's2'],
    ['tmp', 's1', true], ['xfs', 's2', true]];
  for (const [where, attacker, pooled] of cases) {
    it(`on ${where}, in ${attacker}${pooled ? ', sharing through --pool' : ''}: no byte of any other root changes, and a held-off write is reported`, async () => {
      const on = where === 'tmp' ? base : loopMount(where as 'xfs' | 'btrfs');
      const { vs, db } = makeFarm(on, pooled);
      const poolArgs = pooled ? ['--pool'] : [];
      const before = new Map<string, string>();
      for (const r of ROOTS) for (let i = 0; i < FILES; i++) {
        const p = path.join(vs, r, 'usr/lib', `d${i % 10}`, `f${i}`);
        before.set(p, sha(p));
      }
      const log = path.join(base, `attack-${attacker}.log`);
      const child = spawn(process.execPath, ['-e', ATTACKER, path.join(vs, attacker), log], { stdio: 'ignore' });
      const childDone = new Promise((r) => child.on('close', r));
      await new Promise((r) => setTimeout(r, 300)); // let it list its files first
      const run = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
        const p = spawn(process.execPath, [path.join(__dirname, '../dist/cli.js'), 'unify', '--json', '--all-files', ...poolArgs,
          '--vservers-dir', vs, '--db', db, 'ref', 's1', 's2', 's3'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stdout = ''; let stderr = '';
        p.stdout.on('data', (b) => { stdout += b; });
        p.stderr.on('data', (b) => { stderr += b; });
        p.on('close', (status) => resolve({ status, stdout, stderr }));
      });
      child.kill('SIGTERM');
      await childDone;
      const attempts = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter(Boolean) : [];
      // Every root but the attacker's keeps every byte; the attacker's own files may hold
      // its writes only where they stayed private.
      for (const [p, h] of before) {
        const owner = path.relative(vs, p).split(path.sep)[0];
        if (owner === attacker) continue;
        expect(sha(p), `${p} changed (attacker in ${attacker})`).toBe(h);
      }
      // A write that went through landed in a file that is private now (the attacker's own).
      for (const l of attempts.filter((a) => a.split(' ')[1] === 'wrote')) {
        const p = l.split(' ')[0];
        if (!fs.readFileSync(p, 'latin1').includes('PWNED')) continue; // landed in an inode no name holds
        expect(fs.statSync(p).nlink, `${p}: a write landed in a shared inode`).toBe(1);
      }
      expect(attempts.length, 'the attacker saw shared files').toBeGreaterThan(0);
      // Each open held off while linking is reported (exit 1), naming the reference's path.
      const held = ((run.stdout + run.stderr).match(/opened for writing while/g) ?? []).length;
      reported.push(held);
      expect(run.status, run.stderr).toBe(held > 0 ? 1 : 0);
      expect(strayTemps(vs)).toEqual([]);
      // A second run links what was left private, and nothing is shared writable.
      const again = JSON.parse(execFileSync(process.execPath, [path.join(__dirname, '../dist/cli.js'), 'unify', '--json', '--all-files', ...poolArgs,
        '--vservers-dir', vs, '--db', db, 'ref', 's1', 's2', 's3']).toString());
      expect(again.totals.skipped.error ?? 0).toBe(0);
      for (let i = 0; i < FILES; i++) {
        const p = path.join(vs, pooled ? 's3/usr/lib' : 'ref/usr/lib', `d${i % 10}`, `f${i}`);
        if (fs.statSync(p).nlink > 1) expect(lsattrHasImmutable(p), p).toBe(true);
      }
      if (pooled) {
        // The pool's entries hold the servers' bytes: each one's content is what its name says.
        const pool = path.join(vs, '.vunify-pool');
        const entries = fs.readdirSync(pool).filter((n) => !n.startsWith('.')).flatMap((hh) => fs.readdirSync(path.join(pool, hh)));
        expect(entries.length).toBeGreaterThan(FILES / 2);
        expect(again.totals.pooled + again.totals.alreadyPooled).toBeGreaterThan(FILES);
      }
    });
  }
  for (const where of ['tmp', 'xfs']) {
    it(`on ${where}: a tenant that keeps opening its shared files for writing while another server's links are undone reaches no other root`, async () => {
      const on = where === 'tmp' ? base : loopMount('xfs');
      const { vs, db } = makeFarm(on);
      const common = ['--all-files', '--vservers-dir', vs, '--db', db];
      expect(execFileSync(process.execPath, [CLI, 'unify', '-q', ...common, 'ref', 's1', 's2', 's3']).length).toBe(0);
      const before = new Map<string, string>();
      for (const r of ROOTS) for (let i = 0; i < FILES; i++) {
        const p = path.join(vs, r, 'usr/lib', `d${i % 10}`, `f${i}`);
        before.set(p, sha(p));
      }
      // s2's tenant opens every file of its own for appending, again and again: each open
      // fails while the shared inode is immutable, and must never land while undo lifts it.
      const log = path.join(base, `undo-attack-${where}.log`);
      const child = spawn(process.execPath, ['-e', SPINNER, path.join(vs, 's2'), log], { stdio: 'ignore' });
      const childDone = new Promise((r) => child.on('close', r));
      await new Promise((r) => setTimeout(r, 300));
      const run = spawnSync(process.execPath, [CLI, 'undo', '--json', ...common, 'ref', 's1'], { encoding: 'utf8' });
      child.kill('SIGTERM');
      await childDone;
      for (const [p, h] of before) {
        const owner = path.relative(vs, p).split(path.sep)[0];
        if (owner === 's2') continue;
        expect(sha(p), `${p} changed (undo of s1, tenant in s2)`).toBe(h);
      }
      expect([0, 1]).toContain(run.status);
      expect(strayTemps(vs)).toEqual([]);
    });
  }

  it('the attacker was held off at least once in these runs (the check above was exercised)', () => {
    expect(reported.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  });
});
