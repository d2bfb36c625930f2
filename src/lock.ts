// The run lock of an index: an flock on INDEX.run-lock, so two runs never work on one farm.
import fs from 'node:fs';
import path from 'node:path';
import { VunifyError } from './errors.js';
import { tryLock } from './fsx/sys.js';

/** Takes the lock or throws LOCKED (exit 3); returns the fd that holds it. */
export function takeLock(dbPath: string): number {
  fs.mkdirSync(path.dirname(dbPath), { recursive: true, mode: 0o700 });
  const lockPath = `${dbPath}.run-lock`;
  const fd = fs.openSync(lockPath, 'a', 0o600);
  if (!tryLock(fd)) {
    fs.closeSync(fd);
    throw new VunifyError('LOCKED', 'another vunify run is using this index; try again when it ends', lockPath);
  }
  return fd;
}
