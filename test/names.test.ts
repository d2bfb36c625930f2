// File names with spaces, quotes, newlines, tabs and bytes that are not UTF-8 go through
// the package listing (or the tree walk), the index, the link step and undo intact.
// (rpmbuild 4.18 refuses newlines, tabs and invalid UTF-8 in packaged names, and dpkg's
// .list files cannot hold a newline: such names exist only outside packages, so tree mode
// covers them.)
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildRpm, installRpms, makeRpmFarm, removeFarm, rpmVerify, type Farm } from './builders/rpmfarm.js';
import { vunify } from './helpers/tree.js';

let farm: Farm;
let env: NodeJS.ProcessEnv;
const ODD = [Buffer.from('utf8-é日本.bin').toString('latin1'), 'sp ace', 'quote\'s "and" back\\slash', 'percent%{x}'].map((n) => Buffer.from(n, 'latin1'));
const TREE_ODD = ['new\nline', 'tab\there', 'both\t\n\xff', 'bytes-\xff\xfe.bin', ' lead and trail '].map((n) => Buffer.from(n, 'latin1'));

/** Inode numbers of the files in a folder, by raw name. */
function inodes(root: string, sub = 'usr/share/odd'): Map<string, number> {
  const dir = Buffer.from(path.join(root, sub));
  const out = new Map<string, number>();
  for (const n of fs.readdirSync(dir, { encoding: 'buffer' })) {
    out.set(n.toString('latin1'), fs.statSync(Buffer.concat([dir, Buffer.from('/'), n])).ino);
  }
  return out;
}

beforeAll(async () => {
  farm = await makeRpmFarm();
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: path.join(farm.base, 'index') };
  // Names made by the shell in %install (octal escapes for the bytes), taken by a %files glob.
  const octal = (b: Buffer) => [...b].map((c) => `\\${c.toString(8).padStart(3, '0')}`).join('');
  const rpm = buildRpm({
    name: 'vu-odd', version: '1.0', files: [],
    rawInstall: [
      'mkdir -p %{buildroot}/usr/share/odd',
      ...ODD.map((n, i) => `printf 'odd file ${i}\\n' > "%{buildroot}/usr/share/odd/$(printf '${octal(n)}')"`),
    ],
    rawFiles: ['%attr(0644,root,root) /usr/share/odd/*'],
  }, farm.rpmDir);
  for (const s of ['ref', 's1']) installRpms(farm.root(s), [rpm]);
  for (const t of ['t1', 't2']) {
    const dir = Buffer.from(path.join(farm.root(t), 'usr/share/odder/'));
    fs.mkdirSync(dir, { recursive: true });
    for (const n of TREE_ODD) {
      const f = Buffer.concat([dir, n]);
      fs.writeFileSync(f, `content of ${n.toString('hex')}\n`);
      fs.utimesSync(f, 1_700_000_000, 1_700_000_000);
    }
  }
});
afterAll(async () => { if (farm) await removeFarm(farm); });

describe('odd file names', () => {
  it('are listed, indexed, linked and restored byte for byte', () => {
    const before = inodes(farm.root('s1'));
    expect([...before.keys()].sort()).toEqual(ODD.map((n) => n.toString('latin1')).sort());
    const verify = rpmVerify(farm.root('s1'), ['vu-odd']);
    const r = vunify(['unify', '--json', '-v', 'ref', 's1', '--', 'vu-odd'], env);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.servers.s1.unified).toBe(ODD.length);
    expect(rep.files.map((f: { path: string }) => f.path)).toContain('/usr/share/odd/utf8-é日本.bin');
    const ref = inodes(farm.root('ref'));
    const after = inodes(farm.root('s1'));
    for (const [name, i] of after) expect(i, JSON.stringify(name)).toBe(ref.get(name));
    expect(rpmVerify(farm.root('s1'), ['vu-odd'])).toBe(verify);
    const u = vunify(['undo', '--json', 'ref', 's1', '--', 'vu-odd'], env);
    expect(u.status, u.stderr).toBe(0);
    expect(JSON.parse(u.stdout).totals.restored).toBe(ODD.length);
    const restored = inodes(farm.root('s1'));
    expect([...restored.keys()].sort()).toEqual([...before.keys()].sort());
    for (const [name, i] of restored) expect(i).not.toBe(ref.get(name));
    expect(rpmVerify(farm.root('s1'), ['vu-odd'])).toBe(verify);
  });

  it('with newlines and tabs, in tree mode', () => {
    const r = vunify(['unify', '--json', '-v', '--all-files', 't1', 't2'], env);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    expect(rep.servers.t2.unified).toBe(TREE_ODD.length);
    // Reports show names as UTF-8: bytes that are not become U+FFFD.
    expect(rep.files.map((f: { path: string }) => f.path)).toContain('/usr/share/odder/bytes-\ufffd\ufffd.bin');
    const [a, b] = ['t1', 't2'].map((t) => inodes(farm.root(t), 'usr/share/odder'));
    expect([...b.keys()].sort()).toEqual(TREE_ODD.map((n) => n.toString('latin1')).sort());
    for (const [name, i] of b) expect(i, JSON.stringify(name)).toBe(a.get(name));
    expect(vunify(['undo', '--all-files', '-q', 't1', 't2'], env).status).toBe(0);
    const c = inodes(farm.root('t2'), 'usr/share/odder');
    for (const [name, i] of c) expect(i).not.toBe(a.get(name));
  });
});
