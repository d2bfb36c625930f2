// Run locks. An index's lock (an flock on INDEX.run-lock) keeps two runs off one index; a
// root's lock (an flock on LOCKDIR/DEV-INO.lock) keeps two runs with different indexes from
// changing one root at once. Roots are keyed by identity, so a bind mount locks the same file.
import fs from 'node:fs';
import path from 'node:path';
import { VunifyError, isErrno } from './errors.js';
import { isWithin, placeOf } from './fsx/mounts.js';
import { tryLock } from './fsx/sys.js';
import { lockDir, rootLockName, runLockPath } from './store/names.js';
import type { Index } from './store/index-db.js';

/** Takes the lock or throws LOCKED (exit 3); returns the fd that holds it. */
export function takeLock(dbPath: string): number {
  fs.mkdirSync(path.dirname(dbPath), { recursive: true, mode: 0o700 });
  const lockPath = runLockPath(dbPath);
  const fd = fs.openSync(lockPath, 'a', 0o600);
  if (!tryLock(fd)) {
    fs.closeSync(fd);
    throw new VunifyError('LOCKED', 'another vunify run is using this index; try again when it ends', lockPath);
  }
  return fd;
}

export interface RootLocks {
  /** Lock file names held (DEV-INO.lock). */
  readonly keys: Set<string>;
  release(): void;
}

const { O_RDONLY, O_RDWR, O_CREAT, O_DIRECTORY, O_NOFOLLOW } = fs.constants;

/** The lock folder, opened; refused if others could write it or a root holds it. */
function openLockDir(roots: Array<{ path: string; fd: number }>): number {
  const dir = lockDir();
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const fd = fs.openSync(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  try {
    const st = fs.fstatSync(fd);
    if (st.uid !== process.geteuid!() || (st.mode & 0o022) !== 0) {
      throw new VunifyError('USAGE', 'the lock folder must belong to this user and be writable by no one else', dir);
    }
    const here = placeOf(fd);
    for (const r of roots) {
      if (isWithin(here, placeOf(r.fd))) {
        throw new VunifyError('USAGE', `the lock folder is inside the root ${r.path}, where its tenant can reach it; set VUNIFY_LOCK_DIR elsewhere`, dir);
      }
    }
    return fd;
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
}

/**
 * Takes each root's lock without waiting, or throws LOCKED naming the busy root (exit 3)
 * holding none. Roots already in `held` are skipped.
 */
export function takeRootLocks(roots: Array<{ path: string; fd: number }>, held?: RootLocks): RootLocks {
  const files = new Map<string, number>();
  const keys = new Set<string>();
  const release = () => {
    // Unlinked while still held: a run that opened this file before sees it gone and retries.
    for (const [key, fd] of files) {
      fs.rmSync(path.join(lockDir(), key), { force: true });
      fs.closeSync(fd);
    }
    files.clear();
    keys.clear();
  };
  if (roots.length === 0) return { keys, release };
  const dirFd = openLockDir(roots);
  try {
    for (const r of roots) {
      const st = fs.fstatSync(r.fd, { bigint: true });
      const key = rootLockName(st.dev, st.ino);
      if (keys.has(key) || held?.keys.has(key)) continue;
      for (let tries = 0; ; tries++) {
        const fd = fs.openSync(`/proc/self/fd/${dirFd}/${key}`, O_RDWR | O_CREAT | O_NOFOLLOW, 0o600);
        if (!tryLock(fd)) {
          fs.closeSync(fd);
          throw new VunifyError('LOCKED', `another vunify run is changing this root (lock ${path.join(lockDir(), key)}); try again when it ends`, r.path);
        }
        if (fs.fstatSync(fd).nlink > 0) {
          files.set(key, fd);
          break;
        }
        fs.closeSync(fd); // its holder removed it as we opened it: take the new one
        if (tries === 100) throw new VunifyError('LOCKED', 'other vunify runs keep taking this root\'s lock; try again later', r.path);
      }
      keys.add(key);
    }
    return { keys, release };
  } catch (err) {
    release();
    throw err;
  } finally {
    fs.closeSync(dirFd);
  }
}

/**
 * Locks the roots that recovery will touch (those of the index's journal), besides those
 * already held: recovery changes roots even in a run that otherwise only reads them.
 */
export function lockJournalRoots(index: Index, held?: RootLocks): RootLocks {
  const roots: Array<{ path: string; fd: number }> = [];
  try {
    for (const root of new Set(index.journalEntries().map((e) => e.root))) {
      try {
        roots.push({ path: root, fd: fs.openSync(root, O_RDONLY | O_DIRECTORY) });
      } catch (err) {
        if (!isErrno(err, 'ENOENT', 'ENOTDIR')) throw err; // a gone root: recovery skips it too
      }
    }
    return takeRootLocks(roots, held);
  } finally {
    for (const r of roots) fs.closeSync(r.fd);
  }
}
