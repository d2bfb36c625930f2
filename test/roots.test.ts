// Roots are compared by identity (device and inode), not by name: the same folder through a
// bind mount, roots nested either way (also through bind mounts), and `/` are refused
// before anything changes, in one line naming the culprit, exit 2.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { snapshot, vunify } from './helpers/tree.js';
import { errLines, makeTreeRoots, removeTree, run } from './helpers/treefarm.js';

let base: string;
let v: string;
let env: NodeJS.ProcessEnv;
const mounts: string[] = [];
const bind = (from: string, name: string) => {
  const at = path.join(base, 'mnt', name);
  fs.mkdirSync(at, { recursive: true });
  run('mount', '--bind', from, at);
  mounts.push(at);
  return at;
};

beforeAll(() => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-roots-'));
  v = path.join(base, 'v');
  makeTreeRoots(v, ['ref', 's1', 's2'], 20);
  env = { VUNIFY_VSERVERS_DIR: v, VUNIFY_DB: path.join(base, 'index') };
});
afterAll(() => { if (base) removeTree(base, mounts); });

describe('roots must be distinct folders, apart, and not /', () => {
  const refused = (args: string[], culprit: RegExp) => {
    const before = snapshot(v);
    const r = vunify(['--all-files', ...args], env);
    expect(r.status, r.stderr).toBe(2);
    const lines = errLines(r.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(culprit);
    expect(r.stdout).toBe('');
    expect(snapshot(v)).toEqual(before);
  };

  it('the reference given again as a server through a bind mount (unify and undo)', () => {
    const b = bind(path.join(v, 'ref'), 'ref-bind');
    refused(['unify', 'ref', 's1', b], /ref-bind: is the reference; a server cannot be unified with itself$/);
    // Undo through it would give the reference's own files "private copies".
    refused(['undo', 'ref', 's1', b], /ref-bind: is the reference/);
    refused(['undo', b, 'ref'], /^vunify: error: ref: is the reference/);
  });

  it('a server that holds the reference: the vservers folder, or a bind mount of it', () => {
    refused(['unify', 'ref', v], new RegExp(`${v}: contains the reference ref \\(${v}/ref\\); roots must not nest`));
    refused(['unify', 'ref', 's1', bind(v, 'v-bind')], /v-bind: contains the reference ref/);
  });

  it('a server inside the reference, also through a bind mount of a folder inside it', () => {
    refused(['unify', 'ref', path.join(v, 'ref/usr')], /ref\/usr: is inside the reference ref/);
    refused(['undo', 'ref', bind(path.join(v, 'ref/usr/share'), 'share-bind')], /share-bind: is inside the reference ref/);
  });

  it('the reference inside a server, and a server inside another', () => {
    refused(['unify', path.join(v, 's1/usr'), 's1'], /^vunify: error: s1: contains the reference .*s1\/usr; roots must not nest/);
    refused(['unify', 'ref', 's1', path.join(v, 's1/usr/share')], /s1\/usr\/share: is inside the server s1 /);
    refused(['unify', 'ref', bind(path.join(v, 's2/usr'), 's2usr-bind'), 's2'], /^vunify: error: s2: contains the server .*s2usr-bind/);
  });

  it('/ as a server or as the reference', () => {
    // plan, with every top-level folder excluded: a run that accepted / would still touch nothing.
    refused(['plan', '--exclude', '/*', 'ref', '/'], /^vunify: error: \/: is the host's root folder/);
    refused(['plan', '--exclude', '/*', '/', 's1'], /^vunify: error: \/: is the host's root folder/);
  });

  it('roots that are apart are unified as before', () => {
    const r = vunify(['-q', '--all-files', 'ref', 's1', 's2'], env);
    expect(r.status, r.stderr).toBe(0);
    expect(fs.statSync(path.join(v, 's2/usr/share/t/f3')).ino).toBe(fs.statSync(path.join(v, 'ref/usr/share/t/f3')).ino);
    expect(vunify(['-q', 'undo', '--all-files', 'ref', 's1', 's2'], env).status).toBe(0);
  });
});
