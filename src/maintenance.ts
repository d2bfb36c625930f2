// Index maintenance (`vunify gc`): an ordered list of named steps, each timed and counted.
// It reads the farm (lstat only, never following symlinks) and never changes a vserver.
import fs from 'node:fs';
import path from 'node:path';
import { VunifyError } from './errors.js';
import { RootDir } from './fsx/rootdir.js';
import { recover, type RecoverReport } from './recover.js';
import { Index } from './store/index-db.js';
import { withExistingIndex } from './store/existing.js';
import { dropVanishedRoots } from './prepare.js';
import { lockJournalRoots, takeLock, takeRootLocks } from './lock.js';
import { dropPoolTmps, dropUnusedEntries, openPool } from './pool/store.js';
import { DEFAULT_DB } from './paths.js';
import { compactOldPath, compactPath } from './store/names.js';

export interface GcStep { name: string; dropped: number; ms: number }
export interface GcReport {
  command: 'gc';
  index: string;
  steps: GcStep[];
  bytesBefore: number;
  bytesAfter: number;
  durationMs: number;
}


export async function gc(opts: { db?: string; rebuildIndex?: boolean; log?: (l: string) => void }): Promise<GcReport> {
  const started = Date.now();
  const dbPath = path.resolve(opts.db ?? DEFAULT_DB);
  if (!fs.existsSync(dbPath)) throw new VunifyError('INDEX', 'no index here: nothing to collect (give --db?)', dbPath);
  const lockFd = takeLock(dbPath);
  const steps: GcStep[] = [];
  const bytesBefore = Index.fileSize(dbPath);
  try {
    let index = await Index.open(dbPath, { rebuild: opts.rebuildIndex, upgrade: true });
    const step = async (name: string, fn: () => Promise<number>) => {
      const t = Date.now();
      const dropped = await fn();
      steps.push({ name, dropped, ms: Date.now() - t });
    };
    try {
      await step('vanished roots', () => dropVanishedRoots(index, opts.log));
      const opened = new Map<string, RootDir>();
      const rootOf = async (r: string) => {
        if (!opened.has(r)) opened.set(r, await RootDir.open(r));
        return opened.get(r)!;
      };
      try {
        await step('vanished files', async () => {
          let n = 0;
          for (const { root } of index.allRoots()) {
            const dir = await rootOf(root);
            const gone: string[] = [];
            for (const f of index.filesOf(root)) {
              const st = await dir.lstat(f.path).catch(() => null);
              if (!st || !st.isFile() || String(st.ino) !== f.rec.ino || String(st.dev) !== f.rec.dev) gone.push(f.path);
            }
            await index.putFiles(gone.map((p) => [root, p, null]));
            n += gone.length;
          }
          return n;
        });
        const linkedInodes = new Set<string>();
        await step('stale link records', async () => {
          let n = 0;
          for (const l of [...index.allLinks()]) {
            const st = fs.existsSync(l.root) ? await (await rootOf(l.root)).lstat(l.path).catch(() => null) : null;
            if (!st || String(st.ino) !== l.rec.ino || String(st.dev) !== l.rec.dev) {
              await index.removeLink(l.root, l.path);
              n++;
            } else {
              linkedInodes.add(`${l.rec.dev}:${l.rec.ino}`);
            }
          }
          return n;
        });
        await step('stale attribute records', async () => {
          let n = 0;
          for (const i of [...index.allInodes()]) {
            // Kept while any link still shares the inode: only then is the attribute ours to clear.
            if (linkedInodes.has(`${i.dev}:${i.ino}`)) continue;
            const st = fs.existsSync(i.rec.root) ? await (await rootOf(i.rec.root)).lstat(i.rec.path).catch(() => null) : null;
            if (st && String(st.ino) === i.ino && String(st.dev) === i.dev) continue;
            await index.removeInode(i.dev, i.ino);
            n++;
          }
          return n;
        });
      } finally {
        for (const d of opened.values()) await d.close();
      }
      await step('unused pool entries', async () => {
        let n = 0;
        for (const { root, rec } of index.allRoots()) {
          if (rec.lastRole !== 'pool') continue;
          const pool = await openPool(root, false);
          if (!pool) continue;
          try {
            // The pool's own lock: a run writing entries (each alone until linked) holds it.
            const lock = takeRootLocks([{ path: pool.path, fd: pool.rootFd }]);
            try {
              dropPoolTmps(pool);
              n += dropUnusedEntries(pool).entries;
            } finally {
              lock.release();
            }
          } finally {
            await pool.close();
          }
        }
        return n;
      });
      await step('compact', async () => {
        // The index is a folder (data.mdb, lock.mdb): copy compacted into a new folder, swap.
        const tmp = compactPath(dbPath, process.pid);
        const old = compactOldPath(dbPath, process.pid);
        fs.rmSync(tmp, { recursive: true, force: true });
        fs.mkdirSync(tmp, { mode: 0o700 });
        await index.compactTo(tmp);
        await index.close();
        fs.renameSync(dbPath, old);
        fs.renameSync(tmp, dbPath);
        fs.rmSync(old, { recursive: true, force: true });
        index = await Index.open(dbPath);
        return 0;
      });
    } finally {
      await index.close();
    }
  } finally {
    fs.closeSync(lockFd);
  }
  return { command: 'gc', index: dbPath, steps, bytesBefore, bytesAfter: Index.fileSize(dbPath), durationMs: Date.now() - started };
}

/** `vunify recover`: finishes or rolls back what a killed run left under way. */
export async function recoverRun(opts: { db?: string; log?: (l: string) => void }): Promise<RecoverReport & { command: 'recover' }> {
  return withExistingIndex(opts.db, { lock: true, missing: 'no index here: nothing to recover (give --db?)' },
    async (index) => {
      const locks = lockJournalRoots(index); // recovery changes those roots
      try {
        return { command: 'recover', ...(await recover(index, opts.log)) };
      } finally {
        locks.release();
      }
    });
}
