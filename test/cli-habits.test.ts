// How the command behaves around the run: a reader that goes away ends the output quietly,
// and a farm on a read-only filesystem is refused once, before any change.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, snapshot, vunify } from './helpers/tree.js';
import { errLines, makeTreeRoots, removeTree, run } from './helpers/treefarm.js';

let base: string;
const mounts: string[] = [];
beforeAll(() => { base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-habits-')); });
afterAll(() => { if (base) removeTree(base, mounts); });

/** Runs the CLI with its stdout's reader gone before it writes a byte. */
function closedStdout(args: string[]): Promise<{ status: number | null; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.destroy();
  let stderr = '';
  child.stderr.on('data', (b) => (stderr += b));
  return new Promise((resolve) => child.on('close', (status) => resolve({ status, stderr })));
}

describe('a closed stdout (vunify verify | head -1)', () => {
  it('ends the output quietly: no stack, the exit code of the run', async () => {
    const v = path.join(base, 'pipe');
    makeTreeRoots(v, ['ref', 's1'], 200);
    const db = path.join(base, 'pipe-index');
    const a = (...x: string[]) => ['--all-files', '--vservers-dir', v, '--db', db, ...x];
    expect(vunify(a('-q', 'ref', 's1')).status).toBe(0);
    for (const args of [['verify', '--db', db], ['status', '--db', db], a('plan', '-vv', 'ref', 's1'), a('-vv', '--full', 'ref', 's1')]) {
      const r = await closedStdout(args);
      expect(r.stderr, args.join(' ')).toBe('');
      expect(r.status, args.join(' ')).toBe(0);
    }
    // The pipe of the issue, with a report of many lines.
    const sh = spawnSync('bash', ['-c', `"$0" "$1" verify --db "$2" | head -1; "$0" "$1" plan -vv ${a('ref', 's1').join(' ')} | head -1`, process.execPath, CLI, db], { encoding: 'utf8' });
    expect(sh.stderr).toBe('');
    expect(sh.stdout.split('\n')).toHaveLength(3);
  });
});

describe('a read-only farm filesystem', () => {
  it('is said once, exit 2, before anything changes', () => {
    const img = path.join(base, 'ro.img');
    const mnt = path.join(base, 'ro');
    run('truncate', '-s', '64M', img);
    run('mkfs.ext4', '-q', img);
    fs.mkdirSync(mnt);
    run('mount', '-o', 'loop', img, mnt);
    mounts.push(mnt);
    makeTreeRoots(mnt, ['ref', 's1', 's2'], 160);
    const db = path.join(base, 'ro-index');
    const a = (...x: string[]) => ['--all-files', '--vservers-dir', mnt, '--db', db, ...x];
    expect(vunify(a('-q', 'ref', 's1')).status).toBe(0); // s1 unified, s2 not yet
    run('mount', '-o', 'remount,ro', mnt);
    const before = snapshot(mnt);
    for (const args of [a('ref', 's1', 's2'), a('undo', 'ref', 's1', 's2')]) {
      const r = vunify(args);
      expect(r.status, r.stderr).toBe(2);
      expect(errLines(r.stderr)).toEqual([`vunify: error: ${mnt}/ref: is on a read-only filesystem; nothing was changed`]);
    }
    expect(snapshot(mnt)).toEqual(before);
    // Reading is still fine.
    expect(vunify(a('plan', '-q', 'ref', 's1', 's2')).status).toBe(0);
    run('mount', '-o', 'remount,rw', mnt);
    expect(vunify(a('-q', 'ref', 's1', 's2')).status).toBe(0);
  });
});
