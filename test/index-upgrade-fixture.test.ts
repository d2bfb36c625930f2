// A real schema-1 index, written by the old vunify itself (test/fixtures/schema1-index, see
// its README): a copy is upgraded, and every record, journal entry and content holder reads
// back as the old vunify read it. The schema-1 writer of test/index-upgrade.test.ts (which
// checks undo after an upgrade on a live farm) is held to this file's exact tables.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { open } from 'lmdb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Index } from '../src/store/index-db.js';
import { FIXTURE, rawTables, writeSchema1, type Schema1Contents } from './helpers/schema1.js';
import { vunify } from './helpers/tree.js';

type Expected = Schema1Contents & { journal: NonNullable<Schema1Contents['journal']>; holders: Record<string, Array<{ root: string; path: string }>> };
const expected = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'expected.json'), 'utf8')) as Expected;
let base: string;

/** A copy of the fixture as an index folder (the form the old vunify made: INDEX/data.mdb). */
function copyFixture(name: string): string {
  const db = path.join(base, name);
  fs.mkdirSync(db);
  fs.copyFileSync(path.join(FIXTURE, 'data.mdb'), path.join(db, 'data.mdb'));
  return db;
}

beforeAll(() => { base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-v1-fixture-')); });
afterAll(() => { if (base) fs.rmSync(base, { recursive: true, force: true }); });

describe('a schema-1 index made by the old vunify', () => {
  it('holds what its README says: links, attribute records and a killed run\'s journal', () => {
    expect(expected.links.length).toBe(21); // 14 made by the first run, 7 recorded by the killed one
    expect(expected.inodes.length).toBe(7);
    expect(expected.journal.some((e) => e.op === 'link') && expected.journal.some((e) => e.op === 'flag')).toBe(true);
    expect(expected.links.some((l) => Object.keys(l.rec.xattrs as object).includes('user.origin'))).toBe(true);
  });

  it('is refused in one line by a command that takes no lock', () => {
    const db = copyFixture('status');
    const r = vunify(['status', '--json', '--db', db]);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/older vunify \(schema 1\)/);
  });

  it('is upgraded to schema 2 with every record, journal entry and content holder as the old vunify read them', async () => {
    const db = copyFixture('upgrade');
    const index = await Index.open(db, { upgrade: true });
    let got;
    try {
      expect(index.upgraded).toBe(true);
      const roots = index.allRoots();
      got = {
        roots,
        files: roots.map(({ root }) => [root, [...index.filesOf(root)]]),
        links: [...index.allLinks()],
        inodes: [...index.allInodes()],
        journal: index.journalEntries(),
        holders: Object.fromEntries(Object.keys(expected.holders).map((h) => [h, index.holders(h).sort((a, b) => (a.root + a.path < b.root + b.path ? -1 : 1))])),
      };
    } finally {
      await index.close();
    }
    const sortJournal = (j: Expected['journal']) => [...j].sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
    expect({ ...got, journal: sortJournal(got.journal as Expected['journal']) }).toEqual({ ...expected, journal: sortJournal(expected.journal) });
    expect(fs.readdirSync(base).filter((n) => n.includes('.upgrade'))).toEqual([]);
    const meta = open({ path: db, readOnly: true });
    try {
      expect(meta.openDB<number, string>({ name: 'meta' }).get('schema')).toBe(2);
    } finally {
      await meta.close();
    }
  });

  it('has exactly the tables the test writer of schema 1 makes from the same records', async () => {
    await writeSchema1(expected, path.join(base, 'ours.mdb'));
    // Read as files of their own (lmdb-js puts a lock file beside the file it opens).
    fs.copyFileSync(path.join(FIXTURE, 'data.mdb'), path.join(base, 'real.mdb'));
    const real = await rawTables(path.join(base, 'real.mdb'));
    const ours = await rawTables(path.join(base, 'ours.mdb'));
    expect(Object.values(real).every((rows) => rows.length > 0)).toBe(true);
    expect(ours).toEqual(real);
  });
});
