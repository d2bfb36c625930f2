// After a link, every recorded name of the shared inode gets its new signature (ctime, link
// count). The inode's link count says whether the names the group knows are all of them: if
// so, the content index is not searched; if not, the search finds the others.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { refreshInode, type ApplyContext } from '../src/apply/common.js';
import { RootDir, type RelPath } from '../src/fsx/rootdir.js';
import { recordOf } from '../src/scan.js';
import { Index, type FileRecord } from '../src/store/index-db.js';
import { lstatOrNull } from '../src/fsx/rootdir.js';

const HASH = 'ab'.repeat(32);
let base: string;
let root: RootDir;
let index: Index;

beforeEach(async () => {
  base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-refresh-'));
  fs.mkdirSync(path.join(base, 'r'));
  fs.writeFileSync(path.join(base, 'r', 'a'), 'shared\n');
  fs.linkSync(path.join(base, 'r', 'a'), path.join(base, 'r', 'b'));
  root = await RootDir.open(path.join(base, 'r'));
  index = await Index.open(path.join(base, 'index'));
  // Both names recorded before the inode changed (its ctime moves with the chmod below).
  const old = lstatOrNull(path.join(base, 'r', 'a'))!;
  await index.putFiles([[root.path, 'a', recordOf(old, HASH, '')], [root.path, 'b', recordOf(old, HASH, '')]]);
  fs.chmodSync(path.join(base, 'r', 'a'), 0o600);
});
afterEach(async () => {
  await index.close();
  await root.close();
  fs.rmSync(base, { recursive: true, force: true });
});

async function refresh(names: Array<RelPath | [RelPath, FileRecord]>): Promise<{ updated: RelPath[]; searches: number; recs: FileRecord[] }> {
  let searches = 0;
  const holders = index.holders.bind(index);
  index.holders = (h: string) => { searches++; return holders(h); };
  const ctx = { index, roots: new Map([[root.path, root]]), problems: [] } as unknown as ApplyContext;
  const st = fs.statSync(path.join(base, 'r', 'a'), { bigint: true });
  const updates: Array<[string, RelPath, FileRecord | null]> = [];
  await refreshInode(ctx, { dev: String(st.dev), ino: String(st.ino), hash: HASH, xattrs: '' }, names.map((n): [string, RelPath, FileRecord?] => (typeof n === 'string' ? [root.path, n] : [root.path, ...n])), updates, st);
  return { updated: updates.map(([, rel]) => rel).sort(), searches, recs: updates.map(([, , r]) => r!) };
}

describe('refreshInode', () => {
  it('finds a recorded name the group does not know through the content index (2 links, 1 name given)', async () => {
    const { updated, searches, recs } = await refresh(['a']);
    expect(searches).toBe(1);
    expect(updated).toEqual(['a', 'b']);
    const now = fs.statSync(path.join(base, 'r', 'b'), { bigint: true });
    for (const r of recs) expect(r.ctimeNs).toBe(String(now.ctimeNs));
  });

  it('does not search when the names given are as many as the inode\'s links', async () => {
    const { updated, searches } = await refresh(['a', 'b']);
    expect(searches).toBe(0);
    expect(updated).toEqual(['a', 'b']);
  });

  it('takes a name\'s package from the record given with it, not from the index', async () => {
    const given = { ...index.getFile(root.path, 'b')!, pkg: 'given-1.0' };
    const { recs } = await refresh(['a', ['b', given]]);
    expect(recs.map((r) => r.pkg)).toEqual([undefined, 'given-1.0']);
    expect(recs[1].hash).toBe(HASH);
  });
});
