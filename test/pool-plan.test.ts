// The pool's planner and entry names are pure: what goes to the pool, decided from data.
import { describe, expect, it } from 'vitest';
import type { Decision, FileRecord, ScanEntry } from '../src/model.js';
import { entryName, hashOfEntry } from '../src/pool/names.js';
import { pairedSizes, planPool, poolDecisions } from '../src/pool/plan.js';

const H1 = 'ab'.repeat(32);
const H2 = 'cd'.repeat(32);
const rec = (ino: string, hash: string, over: Partial<FileRecord> = {}): FileRecord => ({
  dev: '7', ino, size: 100, mode: 0o100644, uid: 0, gid: 0, mtimeNs: '1', ctimeNs: '2', nlink: 1, hash, xattrs: '', ...over,
});
const skip = (server: string, path: string, reason: Extract<Decision, { kind: 'skip' }>['reason'] = 'notInReference'): Decision =>
  ({ server, path, pkg: 'p', kind: 'skip', reason });

function farm(files: Record<string, Record<string, FileRecord>>) {
  const entries = new Map(Object.entries(files).map(([s, fs]) => [s, new Map<string, ScanEntry>(Object.entries(fs).map(([p, r]) => [p, { kind: 'file', rec: r }]))]));
  return (s: string) => entries.get(s);
}

describe('pool planning', () => {
  it('groups a content held by two servers, and leaves one held by a single server alone', () => {
    const of = farm({ s1: { a: rec('1', H1), b: rec('2', H2) }, s2: { a: rec('3', H1) } });
    const groups = planPool([skip('s1', 'a'), skip('s1', 'b'), skip('s2', 'a')], of, () => undefined, '7');
    expect(groups).toHaveLength(1);
    expect(groups[0].name).toBe(entryName(H1, rec('1', H1)));
    expect(groups[0].members.map((m) => m.skip.server)).toEqual(['s1', 's2']);
  });

  it('takes only skips the reference cannot share, on its filesystem, non-empty, with a hash', () => {
    const of = farm({
      s1: { a: rec('1', H1), c: rec('5', H1), e: rec('6', H1, { size: 0 }), o: rec('7', H1, { dev: '8' }), u: rec('8', '') },
      s2: { a: rec('3', H1), c: rec('4', H1), e: rec('9', H1, { size: 0 }), o: rec('10', H1, { dev: '8' }), u: rec('11', '') },
    });
    const ds = [skip('s1', 'a', 'config'), skip('s2', 'a', 'config'), skip('s1', 'c', 'contentDiffers'), skip('s2', 'c', 'metadataDiffers'),
      skip('s1', 'e'), skip('s2', 'e'), skip('s1', 'o'), skip('s2', 'o'), skip('s1', 'u'), skip('s2', 'u')];
    const groups = planPool(ds, of, () => undefined, '7');
    expect(groups.flatMap((g) => g.members.map((m) => `${m.skip.server}:${m.skip.path}`))).toEqual(['s1:c', 's2:c']);
  });

  it('other metadata is another entry: hard links share metadata', () => {
    const of = farm({ s1: { a: rec('1', H1) }, s2: { a: rec('2', H1, { mode: 0o100600 }) }, s3: { a: rec('3', H1, { mode: 0o100600 }) } });
    const groups = planPool([skip('s1', 'a'), skip('s2', 'a'), skip('s3', 'a')], of, () => undefined, '7');
    expect(groups).toHaveLength(1);
    expect(groups[0].members.map((m) => m.skip.server)).toEqual(['s2', 's3']);
    expect(entryName(H1, rec('1', H1))).not.toBe(groups[0].name);
  });

  it('an existing entry takes even a single server, and members on its inode are already pooled', () => {
    const of = farm({ s1: { a: rec('1', H1) }, s4: { a: rec('40', H1) } });
    const entry = rec('40', H1, { nlink: 3 });
    const groups = planPool([skip('s4', 'a')], of, (n) => (n === entryName(H1, entry) ? entry : undefined), '7');
    expect(groups).toHaveLength(1);
    expect(poolDecisions(groups[0], entry).map((d) => d.kind)).toEqual(['already']);
    const fresh = planPool([skip('s1', 'a')], of, () => entry, '7');
    expect(poolDecisions(fresh[0], entry)).toMatchObject([{ kind: 'link', refPath: fresh[0].name, pool: true, server: 's1' }]);
  });

  it('names: HH/HASH-META, and the hash read back from a name; other names are not entries', () => {
    const n = entryName(H1, rec('1', H1));
    expect(n).toMatch(/^ab\/(ab){32}-[0-9a-f]{16}$/);
    expect(hashOfEntry(n)).toBe(H1);
    expect(hashOfEntry(`cd/${H1}-0123456789abcdef`)).toBeNull(); // folder not the hash's
    expect(hashOfEntry(`ab/${H1}`)).toBeNull();
    expect(hashOfEntry('.vunify-tmp.pool.1.1')).toBeNull();
  });

  it('pairedSizes: sizes two servers or more hold', () => {
    expect([...pairedSizes([[1, 2, 2], [2, 3], [3, 4]])].sort()).toEqual([2, 3]);
  });
});
