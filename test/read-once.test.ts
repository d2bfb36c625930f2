// Read only what can link (issue 18 item 3): a server file whose size partners in the
// reference all differ in metadata (which a hard link would share) is never read, nor are they.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { vunify } from './helpers/tree.js';

let base: string;
beforeAll(() => { base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-readonce-')); });
afterAll(() => {
  vunify(['undo', '--all-files', '--no-default-excludes', '--vservers-dir', path.join(base, 'with'), '--db', path.join(base, 'with.idx'), 'ref', 's1']);
  vunify(['undo', '--all-files', '--no-default-excludes', '--vservers-dir', path.join(base, 'without'), '--db', path.join(base, 'without.idx'), 'ref', 's1']);
  fs.rmSync(base, { recursive: true, force: true });
});

function farm(name: string, withOddPair: boolean): string {
  const vs = path.join(base, name);
  const put = (rel: string, content: Buffer, mode: number) => {
    const p = path.join(vs, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, content);
    fs.chmodSync(p, mode);
    fs.utimesSync(p, 1_700_000_000, 1_700_000_000);
  };
  // A twin at another path, same metadata: read, then linked.
  put('ref/usr/c', Buffer.alloc(2000, 'C'), 0o644);
  put('s1/usr/d', Buffer.alloc(2000, 'C'), 0o644);
  // Same size and content at another path, another mode: no link is possible, nothing to read.
  if (withOddPair) {
    put('ref/usr/a', Buffer.alloc(1500, 'A'), 0o644);
    put('s1/usr/b', Buffer.alloc(1500, 'A'), 0o600);
  }
  return vs;
}

describe('hashing for the plan', () => {
  it('reads no file whose only size partners differ in metadata', () => {
    const run = (name: string, odd: boolean) => {
      const vs = farm(name, odd);
      const r = vunify(['unify', '--json', '--all-files', '--no-default-excludes', '--vservers-dir', vs, '--db', path.join(base, `${name}.idx`), 'ref', 's1']);
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { totals: { unified: number; bytesHashed: number; filesHashed: number; skipped: Record<string, number> } };
    };
    const without = run('without', false);
    const withOdd = run('with', true);
    expect(without.totals.unified).toBe(1);
    expect(withOdd.totals.unified).toBe(1);
    expect(withOdd.totals.skipped.notInReference).toBe(1);
    expect(without.totals.bytesHashed).toBeGreaterThan(0);
    expect(withOdd.totals.bytesHashed).toBe(without.totals.bytesHashed);
    expect(withOdd.totals.filesHashed).toBe(without.totals.filesHashed);
  });
});
