// permuteSlots (the quick file's capture, issue 18): the table is put in check order in
// place; every slot must land where the permutation says, whatever its cycles.
import { describe, expect, it } from 'vitest';
import { permuteSlots } from '../src/quick/inodes.js';

function check(to: number[], width: number): void {
  const n = to.length;
  const words = new Uint32Array(n * width + 5).fill(7); // a tail beyond n slots stays as it is
  for (let i = 0; i < n; i++) for (let k = 0; k < width; k++) words[i * width + k] = i * 1000 + k;
  permuteSlots(words, Uint32Array.from(to), n, width);
  for (let i = 0; i < n; i++) for (let k = 0; k < width; k++) expect(words[to[i] * width + k]).toBe(i * 1000 + k);
  expect([...words.subarray(n * width)]).toEqual([7, 7, 7, 7, 7]);
}

describe('permuteSlots', () => {
  it('moves every slot to its place: identity, one long cycle, swaps, fixed points, random', () => {
    check([], 3);
    check([0], 12);
    check([0, 1, 2, 3], 12);
    check([1, 2, 3, 4, 0], 12);
    check([1, 0, 2, 4, 3], 2);
    let s = 5;
    for (const n of [17, 1000]) {
      const to = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        s = (s * 1103515245 + 12345) & 0x7fffffff;
        const j = s % (i + 1);
        [to[i], to[j]] = [to[j], to[i]];
      }
      check(to, 12);
    }
  });
});
