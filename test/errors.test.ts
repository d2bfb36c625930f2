// Messages name what the operator knows: never the /proc/self/fd/N paths every call goes through.
import { describe, expect, it } from 'vitest';
import { oneLine } from '../src/errors.js';

describe('oneLine', () => {
  it('drops /proc/self/fd/N/ from system errors and keeps one line', () => {
    const e = Object.assign(new Error("EPERM: operation not permitted,\n rename '/proc/self/fd/36/.vunify-tmp.1.2' -> '/proc/self/fd/36/b.txt'"), { code: 'EPERM' });
    expect(oneLine(e)).toBe("EPERM: operation not permitted, rename '.vunify-tmp.1.2' -> 'b.txt'");
  });
});
