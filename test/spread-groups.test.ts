// spreadByFolder (apply, issue 18): groups linked at once should rename in different folders,
// since a rename holds its folder's lock while the replaced inode is freed.
import { describe, expect, it } from 'vitest';
import { spreadByFolder, type Group } from '../src/apply/common.js';

const group = (refPath: string): Group => [{ refPath } as Group[number]];
const paths = (gs: Group[]) => gs.map((g) => g[0].refPath);
const dirOf = (p: string) => p.slice(0, Math.max(0, p.lastIndexOf('/')));

describe('spreadByFolder', () => {
  it('puts groups of different folders next to each other, keeping each folder\'s order', () => {
    const input = [
      ...['a/1', 'a/2', 'a/3', 'a/4'],
      ...['b/1', 'b/2'],
      'top',
      ...['c/d/1', 'c/d/2', 'c/d/3'],
    ].map(group);
    const out = paths(spreadByFolder(input));
    expect([...out].sort()).toEqual(paths(input).sort()); // a permutation: nothing lost or doubled
    expect(out.slice(0, 4).map(dirOf)).toEqual(['a', 'b', '', 'c/d']); // one group of each folder first
    for (const d of ['a', 'b', 'c/d']) expect(out.filter((p) => dirOf(p) === d)).toEqual(paths(input).filter((p) => dirOf(p) === d));
    // No two neighbours share a folder while more than one folder has groups left.
    expect(out.slice(0, 6).every((p, i) => i === 0 || dirOf(p) !== dirOf(out[i - 1]))).toBe(true);
  });

  it('leaves one folder\'s groups, and an empty chunk, as they are', () => {
    const one = ['x/1', 'x/2', 'x/3'].map(group);
    expect(spreadByFolder(one)).toBe(one);
    expect(spreadByFolder([])).toEqual([]);
  });
});
