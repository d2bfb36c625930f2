// The planner is pure: these tests feed it in-memory data, no file system.
import { describe, expect, it } from 'vitest';
import { metadataDiff, plan, sameMetadata, type PlanRoot } from '../src/plan.js';
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
      sym: file(rec()), refmissing: file(rec()), unlisted: file(rec()),
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
    });
  });

  it('skips every file of a package the server does not have, and config files of the server', () => {
    const a = rec();
    const r = root('ref', { a: file(a), b: file(rec()) }, { a: { pkg: 'p' }, b: { pkg: 'q' } }, ['p', 'q']);
    const s = root('s', { a: file(rec()), b: file(rec()) }, { a: { pkg: 'p', config: true } }, ['p']);
    const got = plan({ reference: r, servers: [s] }).map((d) => [d.path, d.kind === 'skip' ? d.reason : d.kind]);
    expect(got).toEqual([['b', 'packageMissing'], ['a', 'config']]);
  });

  it('links a file to a reference file at another path with the same content and metadata', () => {
    const target = rec({ hash: 'hx' });
    const r = root('ref', { 'lib/new.so': file(target), 'lib/moved': file(rec({ hash: 'hy' })) }, { 'lib/new.so': {}, 'lib/moved': {} });
    const s = root('s', {
      'lib/old.so': file(rec({ hash: 'hx' })), // renamed in the server's version
      'lib/moved': file(rec({ hash: 'hx' })), // same path differs, another path matches
      'lib/odd': file(rec({ hash: 'hx', mode: 0o100600 })), // content matches, metadata not
      'lib/unique': file(rec({ hash: 'hz' })),
    }, { 'lib/old.so': {}, 'lib/moved': {}, 'lib/odd': {}, 'lib/unique': {} });
    const refByHash = new Map([['hx', ['lib/new.so']], ['hy', ['lib/moved']]]);
    const got = Object.fromEntries(plan({ reference: r, servers: [s], refByHash }).map((d) =>
      [d.path, d.kind === 'skip' ? d.reason : `${d.kind}:${d.refPath}`]));
    expect(got).toEqual({
      'lib/old.so': 'link:lib/new.so',
      'lib/moved': 'link:lib/new.so',
      'lib/odd': 'metadataDiffers',
      'lib/unique': 'notInReference',
    });
  });

  it('prefers the reference file at the same path, and sees links made through another path', () => {
    const a = rec({ hash: 'ha' });
    const b = rec({ hash: 'ha' });
    const r = root('ref', { a: file(a), b: file(b) }, { a: {}, b: {} });
    const s = root('s', { a: file(rec({ hash: 'ha' })), c: file({ ...b }) }, { a: {}, c: {} });
    const refByHash = new Map([['ha', ['a', 'b']]]);
    const got = plan({ reference: r, servers: [s], refByHash }).map((d) => [d.path, d.kind, d.kind === 'skip' ? '' : d.refPath]);
    expect(got).toEqual([['a', 'link', 'a'], ['c', 'already', 'b']]);
  });

  it('never uses a reference config file as the shared copy', () => {
    const r = root('ref', { conf: file(rec({ hash: 'hc' })) }, { conf: { config: true } });
    const s = root('s', { other: file(rec({ hash: 'hc' })) }, { other: {} });
    const got = plan({ reference: r, servers: [s], refByHash: new Map([['hc', ['conf']]]) });
    expect(got.map((d) => (d.kind === 'skip' ? d.reason : d.kind))).toEqual(['notInReference']);
  });
});

describe('sameMetadata', () => {
  it('is true exactly when metadataDiff finds nothing, field by field', () => {
    const base = rec();
    const changes: Array<Partial<FileRecord>> = [
      {}, { mode: 0o100600 }, { uid: 1 }, { gid: 1 }, { mtimeNs: '1' }, { xattrs: 'x' },
      { size: 99, hash: 'other', ino: '1', ctimeNs: '5', nlink: 3 }, // not metadata a link shares
    ];
    for (const c of changes) {
      const other = { ...base, ...c };
      expect(sameMetadata(base, other), JSON.stringify(c)).toBe(metadataDiff(base, other).length === 0);
    }
    expect(changes.filter((c) => !sameMetadata(base, { ...base, ...c }))).toHaveLength(5);
  });
});
