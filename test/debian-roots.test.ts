// Real Debian roots: debootstrap (minbase, bookworm) unpacked twice, unified with every
// package of the dpkg database, then run: a unified root must still work, and dpkg's own
// verification must say what it said before. The mirror is the one apt on this host uses.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { clearImmutableTree } from './builders/rpmfarm.js';
import { has, isRoot, missing } from './helpers/needs.js';
import { lsattrHasImmutable, vunify } from './helpers/tree.js';

/** The Debian mirror apt is configured with (deb822 .sources or a one-line sources.list). */
function aptMirror(): string | null {
  const files = ['/etc/apt/sources.list', ...fs.readdirSync('/etc/apt/sources.list.d').map((f) => `/etc/apt/sources.list.d/${f}`)];
  for (const f of files.filter((x) => /\.(sources|list)$/.test(x) && fs.existsSync(x))) {
    const text = fs.readFileSync(f, 'utf8');
    const deb822 = /^URIs:\s*(\S+)/m.exec(text);
    if (deb822 && /^Suites:.*\bbookworm\b/m.test(text)) return deb822[1];
    const line = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+bookworm\s/m.exec(text);
    if (line) return line[1];
  }
  return null;
}

const mirror = aptMirror();
const skip = missing('test/debian-roots.test.ts', { root: isRoot, debootstrap: has('debootstrap'), dpkg: has('dpkg'), chroot: has('chroot'), 'a bookworm mirror in /etc/apt/sources.list(.d)': mirror !== null });
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-debian-'));
const tarball = path.join(os.tmpdir(), 'vunify-debootstrap-bookworm-minbase.tgz');
const env = { VUNIFY_VSERVERS_DIR: path.join(base, 'vservers'), VUNIFY_DB: path.join(base, 'index') };
const root = (r: string) => path.join(base, 'vservers', r);
const dpkgVerify = (r: string) => spawnSync('dpkg', ['--root', root(r), '--verify'], { encoding: 'utf8' }).stdout.split('\n').sort().join('\n');
/** Bytes du counts for the folders together (each inode once). */
const du = (...dirs: string[]) => Number(execFileSync('du', ['-s', '-c', '-B1', ...dirs], { encoding: 'utf8' }).trim().split('\n').pop()!.split('\t')[0]);
const inChroot = (r: string) => execFileSync('chroot', [root(r), '/bin/bash', '-c', 'ls / >/dev/null && echo "ok $(cat /etc/debian_version)"'], { encoding: 'utf8' }).trim();

beforeAll(() => {
  if (skip || !mirror) return;
  // The tarball is downloaded once per machine; each root is unpacked from it.
  if (!fs.existsSync(tarball)) {
    execFileSync('debootstrap', ['--variant=minbase', `--make-tarball=${tarball}`, 'bookworm', path.join(base, 'dl'), mirror], { stdio: 'ignore' });
  }
  for (const r of ['deb1', 'deb2']) {
    execFileSync('debootstrap', ['--variant=minbase', `--unpack-tarball=${tarball}`, 'bookworm', root(r), mirror], { stdio: 'ignore' });
  }
}, 600_000);

afterAll(() => {
  clearImmutableTree(base);
  fs.rmSync(base, { recursive: true, force: true });
});

describe.skipIf(skip)('debootstrapped Debian roots', () => {
  it('unify --all-packages: thousands of files linked, the root still runs, dpkg --verify unchanged; undo restores', () => {
    const verify = dpkgVerify('deb2');
    const plan = JSON.parse(vunify(['plan', '--json', '--all-packages', 'deb1', 'deb2'], env).stdout);
    const before = du(root('deb1'), root('deb2'));
    const r = vunify(['unify', '--json', '--all-packages', 'deb1', 'deb2'], env);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    // One run finishes the job: names of one inode (dpkg ships some) are relinked together.
    expect(rep.totals.skipped.changed).toBe(0);
    // Savings as the disk counts them: the report, and the dry run's prediction, against du.
    const freed = before - du(root('deb1'), root('deb2'));
    expect(Math.abs(rep.totals.diskSaved - freed)).toBeLessThanOrEqual(Math.max(freed * 0.01, 0));
    expect(Math.abs(plan.totals.diskSaved - freed)).toBeLessThanOrEqual(freed * 0.01);
    expect(rep.totals.diskSaved).toBeGreaterThan(rep.totals.bytesSaved);
    expect(rep.packages.length).toBeGreaterThan(50);
    expect(rep.servers.deb2.unified).toBeGreaterThan(3000);
    expect(rep.servers.deb2.skipped.config).toBeGreaterThan(10); // conffiles stay private
    expect(rep.servers.deb2.skipped.error).toBe(0);
    const bash = path.join(root('deb2'), 'usr/bin/bash');
    expect(fs.statSync(bash).ino).toBe(fs.statSync(path.join(root('deb1'), 'usr/bin/bash')).ino);
    expect(lsattrHasImmutable(bash)).toBe(true);
    expect(fs.statSync(path.join(root('deb2'), 'etc/passwd')).ino).not.toBe(fs.statSync(path.join(root('deb1'), 'etc/passwd')).ino);
    expect(inChroot('deb2')).toMatch(/^ok 12\./);
    expect(dpkgVerify('deb2')).toBe(verify);
    // The next run links nothing, and is quick.
    const again = JSON.parse(vunify(['unify', '--json', '--all-packages', 'deb1', 'deb2'], env).stdout);
    expect(again.totals.unified).toBe(0);
    expect(again.totals.filesHashed).toBe(0);
    // That rescan was quick (nothing changed since the run before), and a full one agrees.
    expect(again.unchangedSince).toBeDefined();
    const full = JSON.parse(vunify(['unify', '--json', '--full', '--all-packages', 'deb1', 'deb2'], env).stdout);
    const outcome = ({ durationMs: _d, unchangedSince: _u, ...rest }: Record<string, unknown>) => rest;
    expect(outcome(again)).toEqual(outcome(full));
    // dpkg's database is an input: touching its status file makes the next run full.
    const status = path.join(root('deb2'), 'var/lib/dpkg/status');
    fs.utimesSync(status, new Date(), new Date());
    expect(JSON.parse(vunify(['unify', '--json', '--all-packages', 'deb1', 'deb2'], env).stdout).unchangedSince).toBeUndefined();
    const u = vunify(['undo', '--json', '--all-packages', 'deb1', 'deb2'], env);
    expect(u.status, u.stderr).toBe(0);
    expect(JSON.parse(u.stdout).totals.restored).toBeGreaterThan(3000);
    expect(fs.statSync(bash).ino).not.toBe(fs.statSync(path.join(root('deb1'), 'usr/bin/bash')).ino);
    expect(lsattrHasImmutable(path.join(root('deb1'), 'usr/bin/bash'))).toBe(false);
    expect(inChroot('deb2')).toMatch(/^ok 12\./);
    expect(dpkgVerify('deb2')).toBe(verify);
  });

  it('tree mode (--all-files) on the same roots: one run finishes, the next is quick, du agrees', () => {
    const before = du(root('deb1'), root('deb2'));
    const r = vunify(['unify', '--json', '--all-files', 'deb1', 'deb2'], env);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.servers.deb2.unified).toBeGreaterThan(3000);
    expect(rep.totals.skipped.changed).toBe(0);
    const freed = before - du(root('deb1'), root('deb2'));
    expect(Math.abs(rep.totals.diskSaved - freed)).toBeLessThanOrEqual(freed * 0.01);
    const again = JSON.parse(vunify(['unify', '--json', '--all-files', 'deb1', 'deb2'], env).stdout);
    expect(again.unchangedSince).toBeDefined();
    expect(again.totals.unified).toBe(0);
    expect(inChroot('deb2')).toMatch(/^ok 12\./);
    expect(vunify(['undo', '-q', '--all-files', 'deb1', 'deb2'], env).status).toBe(0);
  });
});
