// Schema 1 of the index (vunify before faed6f6): its tables, written and read raw. The
// writer is held to a real schema-1 file made by the old vunify (test/fixtures/schema1-index)
// by test/index-upgrade-fixture.test.ts: same tables, same keys, same values.
import fs from 'node:fs';
import path from 'node:path';
import { open } from 'lmdb';

export const FIXTURE = new URL('../fixtures/schema1-index/', import.meta.url).pathname;

type Rec = Record<string, unknown>;
export interface Schema1Contents {
  roots: Array<{ root: string; rec: Rec }>;
  files: Array<[string, Array<{ path: string; rec: Rec & { hash: string } }>]>;
  links: Array<{ root: string; path: string; rec: Rec }>;
  inodes: Array<{ dev: string; ino: string; rec: Rec }>;
  journal?: Array<Rec & { op: string; root: string; path: string; dev: string; ino: string }>;
}

/** Schema 1's journal key (src/store/index-db.ts at faed6f6~1). */
const journalKey = (e: { op: string; root: string; path: string; dev: string; ino: string }) =>
  `${e.op}\0${e.op === 'flag' ? `${e.dev}:${e.ino}` : `${e.root}\0${e.path}`}`;

const TABLES = ['meta', 'files', 'content', 'links', 'inodes', 'roots', 'journal'];

/** Writes those records in schema 1's layout, as vunify did before schema 2, over the index at `to`. */
export async function writeSchema1(c: Schema1Contents, to: string): Promise<void> {
  const tmp = `${to}.v1`;
  const raw = open({ path: tmp, compression: false });
  await raw.openDB<number, string>({ name: 'meta' }).put('schema', 1);
  const files = raw.openDB({ name: 'files' });
  const content = raw.openDB({ name: 'content' });
  const links = raw.openDB({ name: 'links' });
  const inodes = raw.openDB({ name: 'inodes' });
  const roots = raw.openDB({ name: 'roots' });
  const journal = raw.openDB({ name: 'journal' });
  await raw.transaction(() => {
    for (const { root, rec } of c.roots) roots.put(root, rec);
    for (const [root, list] of c.files) {
      for (const { path: rel, rec } of list) {
        files.put([root, rel], rec);
        if (rec.hash) content.put([rec.hash, root, rel], null);
      }
    }
    for (const l of c.links) links.put([l.root, l.path], l.rec);
    for (const i of c.inodes) inodes.put(`${i.dev}:${i.ino}`, i.rec);
    for (const e of c.journal ?? []) journal.put(journalKey(e), e);
  });
  await raw.close();
  // lmdb-js makes a folder (data.mdb, lock.mdb) of a path without an extension, else a file.
  const data = (p: string) => (fs.statSync(p).isDirectory() ? path.join(p, 'data.mdb') : p);
  fs.renameSync(data(tmp), fs.existsSync(to) ? data(to) : to);
  for (const t of [tmp, `${tmp}-lock`]) fs.rmSync(t, { recursive: true, force: true });
}

/** Every key and value of every schema-1 table of the LMDB file at `file`, read raw. */
export async function rawTables(file: string): Promise<Record<string, Array<[unknown, unknown]>>> {
  const env = open({ path: file, readOnly: true, compression: false });
  try {
    return Object.fromEntries(TABLES.map((name) => [name, [...env.openDB({ name }).getRange({})].map(({ key, value }) => [key, value] as [unknown, unknown])]));
  } finally {
    await env.close();
  }
}
