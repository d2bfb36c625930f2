// The planner is pure: these tests feed it in-memory data, no file system.
import { describe, expect, it } from 'vitest';
import { plan, type PlanRoot } from '../src/plan.js';
import type { ScanEntry } from '../src/scan.js';
import type { FileRecord } from '../src/store/index-db.js';

let nextIno = 100;
const rec = (over: Partial<FileRecord> = {}): FileRecord => ({
  dev: '1', ino: String(nextIno++), size: 10, mode: 0o100644, uid: 0, gid: 0,
  mtimeNs: '1700000000000000000', ctimeNs: '1700000000000000000', nlink: 1, hash: 'h1', xattrs: '', ...over,
});
const file = (r: FileRecord): ScanEntry => ({ kind: 'file', rec: r });

function root(name: string, files: Record<string, ScanEntry>, owned: Record<string, { pkg?: string; config?: boolean }>, installed = ['p']): PlanRoot {
  return {
    name, root: `/v/${name}`,
    entries: new Map(Object.entries(files)),
    owned: new Map(Object.entries(owned).map(([k, v]) => [k, { pkg: v.pkg ?? 'p', config: v.config ?? false }])),
    installed: new Set(installed),
  };
}

describe('plan', () => {
  it('links identical files and gives every other path one reason', () => {
    const same = rec();
    const shared = rec();
    const r = root('ref', {
      same: file(same), conf: file(rec()), content: file(rec()), mode: file(rec()), mtime: file(rec()),
      xattr: file(rec()), shared: file(shared), empty: file(rec({ size: 0, hash: 'e' })), dev: file(rec()),
      gone: file(rec()), sym: { kind: 'notRegular' }, refmissing: { kind: 'missing' }, other: file(rec()),
    }, Object.fromEntries(['same', 'conf', 'content', 'mode', 'mtime', 'xattr', 'shared', 'empty', 'dev', 'gone', 'sym', 'refmissing', 'other'].map((k) => [k, { config: k === 'conf' }])));
    const s = root('s', {
      same: file(rec({ ino: '900' })), conf: file(rec()), content: file(rec({ hash: 'h2' })),
      mode: file(rec({ mode: 0o100755 })), mtime: file(rec({ mtimeNs: '1' })), xattr: file(rec({ xattrs: 'x' })),
      shared: file({ ...shared }), empty: file(rec({ size: 0, hash: 'e' })), dev: file(rec({ dev: '2' })),
      sym: file(rec()), refmissing: file(rec()), other: file(rec()),
    }, Object.fromEntries(['same', 'conf', 'content', 'mode', 'mtime', 'xattr', 'shared', 'empty', 'dev', 'gone', 'sym', 'refmissing'].map((k) => [k, {}])));
    const got = Object.fromEntries(plan({ reference: r, servers: [s] }).map((d) => [d.path, d.kind === 'skip' ? `${d.reason}${d.detail ? `(${d.detail})` : ''}` : d.kind]));
    expect(got).toEqual({
      same: 'link',
      conf: 'config',
      content: 'contentDiffers',
      mode: 'metadataDiffers(mode)',
      mtime: 'metadataDiffers(mtime)',
      xattr: 'metadataDiffers(xattrs)',
      shared: 'already',
      empty: 'empty',
      dev: 'otherFilesystem',
      gone: 'missing',
      sym: 'notRegular(reference: notRegular)',
      refmissing: 'missing(reference: missing)',
      other: 'notInPackage',
    });
  });

  it('skips every file of a package the server does not have, and config files of the server', () => {
    const a = rec();
    const r = root('ref', { a: file(a), b: file(rec()) }, { a: { pkg: 'p' }, b: { pkg: 'q' } }, ['p', 'q']);
    const s = root('s', { a: file(rec()), b: file(rec()) }, { a: { pkg: 'p', config: true } }, ['p']);
    const got = plan({ reference: r, servers: [s] }).map((d) => [d.path, d.kind === 'skip' ? d.reason : d.kind]);
    expect(got).toEqual([['a', 'config'], ['b', 'packageMissing']]);
  });

  it('never links a file of one package to the same path of another package', () => {
    const r = root('ref', { a: file(rec()) }, { a: { pkg: 'p' } }, ['p', 'q']);
    const s = root('s', { a: file(rec()) }, { a: { pkg: 'q' } }, ['p', 'q']);
    expect(plan({ reference: r, servers: [s] }).map((d) => (d.kind === 'skip' ? d.reason : d.kind))).toEqual(['notInPackage']);
  });
});
