// The LMDB index: the one module that knows its on-disk layout.
//
//   meta      'schema' -> SCHEMA_VERSION
//   files     [root, path] -> FileRecord          stat signature + content address
//   content   [hash, root, path] -> null          who holds a content (prefix scans)
//   links     [serverRoot, path] -> LinkRecord    links vunify made, with what it replaced
//   inodes    'dev:ino' -> InodeRecord            inodes vunify made immutable
//
// Paths are binary strings (one char per byte). Times are nanosecond decimal strings,
// dev and ino decimal strings: all exact.
import fs from 'node:fs';
import path from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { VunifyError } from '../errors.js';
import type { RelPath } from '../fsx/rootdir.js';

export const SCHEMA_VERSION = 1;

export interface FileRecord {
  dev: string;
  ino: string;
  size: number;
  mode: number; // st_mode, type bits included
  uid: number;
  gid: number;
  mtimeNs: string;
  ctimeNs: string;
  nlink: number;
  /** BLAKE3 hex of the content. */
  hash: string;
  /** BLAKE3 hex of the sorted extended attributes, '' when there are none. */
  xattrs: string;
}

/** What a server file was before vunify replaced it with a link: enough for an exact undo. */
export interface LinkRecord {
  refRoot: string;
  refPath: RelPath;
  dev: string;
  ino: string; // the shared inode
  mode: number;
  uid: number;
  gid: number;
  atimeNs: string;
  mtimeNs: string;
  xattrs: Record<string, string>; // name -> base64
  linkedAt: string;
}

export interface InodeRecord {
  root: string;
  path: RelPath;
  setAt: string;
}

export class Index {
  private constructor(
    readonly path: string,
    private readonly env: RootDatabase,
    private readonly files: Database<FileRecord, [string, string]>,
    private readonly content: Database<null, [string, string, string]>,
    private readonly links: Database<LinkRecord, [string, string]>,
    private readonly inodes: Database<InodeRecord, string>,
  ) {}

  static open(dbPath: string): Index {
    let env: RootDatabase;
    try {
      fs.mkdirSync(path.dirname(dbPath), { recursive: true, mode: 0o700 });
      env = open({ path: dbPath, compression: false, mapSize: 2 ** 34 });
    } catch (err) {
      throw new VunifyError('INDEX', `cannot open the index: ${(err as Error).message}`, dbPath, { cause: err });
    }
    try {
      const meta = env.openDB<number, string>({ name: 'meta' });
      const schema = meta.get('schema');
      if (schema === undefined) meta.putSync('schema', SCHEMA_VERSION);
      else if (schema !== SCHEMA_VERSION) {
        throw new VunifyError('INDEX', `index schema ${schema} is not the supported ${SCHEMA_VERSION}; move it away to rebuild it`, dbPath);
      }
      return new Index(
        dbPath,
        env,
        env.openDB({ name: 'files' }),
        env.openDB({ name: 'content' }),
        env.openDB({ name: 'links' }),
        env.openDB({ name: 'inodes' }),
      );
    } catch (err) {
      void env.close();
      if (err instanceof VunifyError) throw err;
      throw new VunifyError('INDEX', `the index is unreadable: ${(err as Error).message}`, dbPath, { cause: err });
    }
  }

  getFile(root: string, rel: RelPath): FileRecord | undefined {
    return this.files.get([root, rel]);
  }

  /** Writes many file records in one transaction, keeping the content index in step. */
  async putFiles(entries: Array<[root: string, rel: RelPath, rec: FileRecord | null]>): Promise<void> {
    if (entries.length === 0) return;
    await this.env.transaction(() => {
      for (const [root, rel, rec] of entries) {
        const old = this.files.get([root, rel]);
        if (old && (!rec || old.hash !== rec.hash)) this.content.remove([old.hash, root, rel]);
        if (rec) {
          this.files.put([root, rel], rec);
          this.content.put([rec.hash, root, rel], null);
        } else if (old) {
          this.files.remove([root, rel]);
        }
      }
    });
  }

  /** Every (root, path) whose content has this hash. */
  holders(hash: string): Array<{ root: string; path: RelPath }> {
    const out: Array<{ root: string; path: RelPath }> = [];
    for (const key of this.content.getKeys({ start: [hash], end: [hash, '\uffff'] })) {
      const [, root, rel] = key as [string, string, string];
      out.push({ root, path: rel });
    }
    return out;
  }

  getLink(serverRoot: string, rel: RelPath): LinkRecord | undefined {
    return this.links.get([serverRoot, rel]);
  }

  putLink(serverRoot: string, rel: RelPath, rec: LinkRecord): Promise<boolean> {
    return this.links.put([serverRoot, rel], rec);
  }

  removeLink(serverRoot: string, rel: RelPath): Promise<boolean> {
    return this.links.remove([serverRoot, rel]);
  }

  countLinks(): number {
    return this.links.getCount();
  }

  getInode(dev: string, ino: string): InodeRecord | undefined {
    return this.inodes.get(`${dev}:${ino}`);
  }

  putInode(dev: string, ino: string, rec: InodeRecord): Promise<boolean> {
    return this.inodes.put(`${dev}:${ino}`, rec);
  }

  removeInode(dev: string, ino: string): Promise<boolean> {
    return this.inodes.remove(`${dev}:${ino}`);
  }

  /** Waits until every write so far is durable on disk. */
  async flush(): Promise<void> {
    await this.env.flushed;
  }

  async close(): Promise<void> {
    await this.env.close();
  }
}
