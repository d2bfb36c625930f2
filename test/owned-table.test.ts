// OwnedTable (issue 18): the compact candidate table must answer as the Map it replaces,
// whatever order it is asked in, through deletes, with equal values shared.
import { describe, expect, it } from 'vitest';
import { OwnedTable } from '../src/owned-table.js';
import type { Owned } from '../src/model.js';

const own = (pkg: string, config = false): Owned => ({ pkg, config });

function shuffled<T>(a: T[], seed = 7): T[] {
  const out = [...a];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

describe('OwnedTable', () => {
  it('answers get, has, size, keys and entries as a Map does, in any order and after deletes', () => {
    const map = new Map<string, Owned>();
    for (let i = 0; i < 3000; i++) {
      const dir = `usr/lib/p${i % 37}${i % 5 === 0 ? '-x' : ''}`;
      map.set(`${dir}/f${i}`, own(`pkg${i % 11}`, i % 13 === 0));
    }
    map.set('a b/é', own('latin'));
    const table = OwnedTable.of(shuffled([...map]));
    const sortedKeys = [...map.keys()].sort();
    expect([...table.keys()]).toEqual(sortedKeys);
    expect(table.size).toBe(map.size);
    for (const k of shuffled([...map.keys()], 3)) expect(table.get(k)).toEqual(map.get(k));
    for (const k of sortedKeys) expect(table.has(k)).toBe(true);
    for (const k of ['', 'usr', 'usr/lib/p1/f', 'zzz', 'a b/e', 'usr/lib/p0-x/f0/']) {
      expect(table.get(k)).toBeUndefined();
      expect(table.has(k)).toBe(false);
    }
    const gone = shuffled(sortedKeys, 11).slice(0, 700);
    for (const k of gone) {
      expect(table.delete(k)).toBe(true);
      expect(table.delete(k)).toBe(false);
      map.delete(k);
    }
    expect(table.size).toBe(map.size);
    for (const k of gone) expect(table.has(k)).toBe(false);
    expect(new Map(table)).toEqual(new Map([...map].sort((a, b) => (a[0] < b[0] ? -1 : 1))));
  });

  it('keeps one frozen Owned per distinct value', () => {
    const paths = ['a/1', 'a/2', 'b/1', 'b/2'];
    const t = OwnedTable.sorted(paths, (k) => (k.startsWith('a') ? own('p') : own('p', true)));
    expect(t.get('a/1')).toBe(t.get('a/2'));
    expect(t.get('b/1')).toBe(t.get('b/2'));
    expect(t.get('a/1')).not.toBe(t.get('b/1'));
    expect(Object.isFrozen(t.get('a/1'))).toBe(true);
  });

  it('refuses paths out of order or twice', () => {
    expect(() => OwnedTable.sorted(['b', 'a'], () => own('p'))).toThrow(/not in order/);
    expect(() => OwnedTable.of([['a', own('p')], ['a', own('q')]])).toThrow(/twice/);
  });
});
