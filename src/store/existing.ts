// Opening an index that must already exist (report, status, verify, recover): Index.open
// would create a new one, and these commands must not.
import fs from 'node:fs';
import path from 'node:path';
import { takeLock } from '../lock.js';
import { DEFAULT_DB } from './names.js';
import { VunifyError } from '../errors.js';
import { Index } from './index-db.js';

export async function withExistingIndex<T>(
  db: string | undefined,
  opts: { lock: boolean; missing: string },
  fn: (index: Index, dbPath: string) => Promise<T>,
): Promise<T> {
  const dbPath = path.resolve(db ?? DEFAULT_DB);
  if (!fs.existsSync(dbPath)) throw new VunifyError('INDEX', opts.missing, dbPath);
  const lockFd = opts.lock ? takeLock(dbPath) : null;
  try {
    const index = await Index.open(dbPath, { upgrade: opts.lock });
    try {
      return await fn(index, dbPath);
    } finally {
      await index.close();
    }
  } finally {
    if (lockFd !== null) fs.closeSync(lockFd);
  }
}

export const NO_INDEX_YET = 'no index here yet: run vunify scan or unify first (or give --db)';
