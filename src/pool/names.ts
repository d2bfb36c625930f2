// Names of pool entries: `HH/HASH-META` (pure: the planner needs them, and no file access).
import { Blake3Hasher } from '../fsx/blake3.js';
import type { RelPath } from '../fsx/rootdir.js';
import type { FileRecord } from '../model.js';

type MetaOf = Pick<FileRecord, 'mode' | 'uid' | 'gid' | 'mtimeNs' | 'xattrs'>;

/** The entry's name for this content and metadata: `HH/HASH-META`. */
export function entryName(hash: string, m: MetaOf): RelPath {
  const meta = new Blake3Hasher().update(Buffer.from(`${m.mode}:${m.uid}:${m.gid}:${m.mtimeNs}:${m.xattrs}`)).digest('hex').slice(0, 16);
  return `${hash.slice(0, 2)}/${hash}-${meta}`;
}

const ENTRY = /^([0-9a-f]{2})\/(\1[0-9a-f]{62})-[0-9a-f]{16}$/;

/** The content hash an entry's name gives, or null for a name that is not an entry's. */
export function hashOfEntry(rel: RelPath): string | null {
  return ENTRY.exec(rel)?.[2] ?? null;
}

