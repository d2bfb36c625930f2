// A run that changes a root holds that root's lock (an flock on
// /run/vunify/locks/DEV-INO.lock), whatever its index: a second run with another index over
// the same farm exits 3 at once, in one line naming the busy root, and leaves nothing behind.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tryLock } from '../src/fsx/sys.js';
import { CLI, snapshot, vunify, type CliResult } from './helpers/tree.js';
import { errLines, makeTreeRoots, removeTree, run } from './helpers/treefarm.js';

const LOCKS = '/run/vunify/locks';
const ROOTS = ['ref', 's1', 's2'];
let base: string;
/** A small farm, and one big enough that a run takes a few seconds. */
let v: string;
let big: string;
const mounts: string[] = [];
const db = (n: string) => path.join(base, `index-${n}`);
const args = (...a: string[]) => ['--all-files', '--vservers-dir', v, ...a];
const bigArgs = (...a: string[]) => ['--all-files', '--vservers-dir', big, ...a];
const lockOf = (dir: string) => {
  const st = fs.statSync(dir, { bigint: true });
  return path.join(LOCKS, `${st.dev}-${st.ino}.lock`);
};
const snapAll = () => ROOTS.map((r) => snapshot(path.join(v, r)));
// Names only: cheaper than a snapshot of every file.
const strays = (farm = v) => ROOTS.flatMap((r) => (fs.readdirSync(path.join(farm, r), { recursive: true }) as string[])
  .filter((f) => path.basename(f).startsWith('.vunify-tmp')).map((f) => `${r}/${f}`));

/** Holds the locks of these roots (names in v, or paths) from this process, as another run would, during fn. */
function holding(roots: string[], fn: () => void): void {
  fs.mkdirSync(LOCKS, { recursive: true, mode: 0o700 });
  const files = roots.map((r) => lockOf(path.resolve(v, r)));
  const fds = files.map((f) => fs.openSync(f, 'a', 0o600));
  try {
    for (const fd of fds) expect(tryLock(fd)).toBe(true);
    fn();
  } finally {
    for (const f of files) fs.rmSync(f, { force: true }); // as a run releases its locks
    for (const fd of fds) fs.closeSync(fd);
  }
}

function expectBusy(r: CliResult, root: string): void {
  expect(r.status, r.stderr).toBe(3);
  const lines = errLines(r.stderr);
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^vunify: error: ${root}: another vunify run is changing this root \\(lock ${LOCKS}/\\d+-\\d+\\.lock\\)`));
}

/** Starts a run in the background. */
function start(a: string[]): { pid: number; done: Promise<CliResult> } {
  const child = spawn(process.execPath, [CLI, ...a], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (b) => (stdout += b));
  child.stderr.on('data', (b) => (stderr += b));
  return { pid: child.pid!, done: new Promise((resolve) => child.on('close', (status, signal) => resolve({ status: status ?? -1, signal, stdout, stderr }))) };
}

/**
 * Waits until the run holds the flock on lockFile (as /proc/locks shows it), then stops it
 * there (SIGSTOP) while fn runs: the overlap does not depend on how fast either run is.
 */
async function whileHolding(run: ReturnType<typeof start>, lockFile: string, fn: () => void): Promise<CliResult> {
  let finished = false;
  void run.done.then(() => (finished = true));
  const holds = () => {
    try {
      const ino = fs.statSync(lockFile).ino;
      return new RegExp(`^\\d+: FLOCK\\s+ADVISORY\\s+WRITE\\s+${run.pid}\\s+[0-9a-f]+:[0-9a-f]+:${ino}\\s`, 'm').test(fs.readFileSync('/proc/locks', 'utf8'));
    } catch {
      return false;
    }
  };
  while (!holds()) {
    expect(finished, 'the first run ended before it was seen holding the lock').toBe(false);
    await new Promise((r) => setTimeout(r, 5));
  }
  process.kill(run.pid, 'SIGSTOP');
  try {
    expect(holds()).toBe(true);
    fn();
  } finally {
    process.kill(run.pid, 'SIGCONT');
  }
  return run.done;
}

beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-farmlock-'));
  v = path.join(base, 'v');
  makeTreeRoots(v, ROOTS, 100);
  big = path.join(base, 'big');
  makeTreeRoots(big, ROOTS, 500);
});
afterAll(() => { if (base) removeTree(base, mounts); });

describe('one run at a time per farm root, whatever the index', () => {
  it('unify and undo with another index exit 3 while a root is held, and change nothing', () => {
    const at = path.join(base, 's1-bind');
    fs.mkdirSync(at);
    run('mount', '--bind', path.join(v, 's1'), at);
    mounts.push(at);
    const before = snapAll();
    holding(['s1'], () => {
      expectBusy(vunify(args('--db', db('a'), 'ref', 's1', 's2')), path.join(v, 's1'));
      expectBusy(vunify(args('undo', '--db', db('b'), 'ref', 's2', 's1')), path.join(v, 's1'));
      // The same root through a bind mount is the same lock.
      expectBusy(vunify(args('--db', db('b'), 'ref', at)), at);
      // A dry run only reads: it takes no root lock.
      expect(vunify(args('plan', '-q', '--db', db('c'), 'ref', 's1', 's2')).status).toBe(0);
    });
    expect(snapAll()).toEqual(before);
    for (const n of ['a', 'b']) expect(fs.existsSync(db(n)), n).toBe(false);
  });

  it('recovery changes roots: it waits for no one either', () => {
    const k = path.join(base, 'k'); // a farm of its own: the runs above may have unified v
    makeTreeRoots(k, ROOTS, 100);
    const kArgs = (...a: string[]) => ['--all-files', '--vservers-dir', k, ...a];
    const killed = vunify(kArgs('--db', db('k'), 'ref', 's1', 's2'), { VUNIFY_FAULT_AFTER: '20' });
    expect(killed.signal).toBe('SIGKILL');
    const left = strays(k);
    expect(left.length).toBeGreaterThan(0);
    holding(ROOTS.map((r) => path.join(k, r)), () => {
      expect(vunify(['recover', '--db', db('k')]).status).toBe(3);
      expect(vunify(kArgs('plan', '--db', db('k'), 'ref', 's1', 's2')).status).toBe(3);
      expect(strays(k)).toEqual(left);
    });
    const r = vunify(['recover', '--json', '--db', db('k')]);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).entries).toBeGreaterThan(0);
    expect(strays(k)).toEqual([]);
    expect(vunify(kArgs('undo', '-q', '--db', db('k'), 'ref', 's1', 's2')).status).toBe(0);
  });

  it('two real runs with two indexes: the second exits 3, the first finishes, nothing is left', async () => {
    const at = (r: string) => path.join(big, r);
    const second = () => expectBusy(vunify(bigArgs('--db', db('2'), 'ref', 's1', 's2')), at('ref'));
    const a = await whileHolding(start(bigArgs('-q', '--db', db('1'), 'ref', 's1', 's2')), lockOf(at('s2')), second);
    expect(a.status, a.stderr).toBe(0);
    expect(fs.statSync(at('s2/usr/share/t/f7')).ino).toBe(fs.statSync(at('ref/usr/share/t/f7')).ino);
    // And the other way round: the first index's undo runs, the second index's unify waits for no one.
    const u = await whileHolding(start(bigArgs('undo', '-q', '--db', db('1'), 'ref', 's1', 's2')), lockOf(at('s2')), second);
    expect(u.status, u.stderr).toBe(0);
    expect(fs.statSync(at('s2/usr/share/t/f7')).nlink).toBe(1);
    expect(strays(big)).toEqual([]);
    expect(fs.existsSync(db('2'))).toBe(false);
    for (const r of ROOTS) expect(fs.existsSync(lockOf(at(r))), r).toBe(false);
  });
});
