// Recovery: finishes or rolls back the changes a killed run left under way, from the
// journal in the index. Runs at the start of every command that opens the index, and as
// `vunify recover`. It only ever removes the temporary names the journal recorded.
import fs from 'node:fs';
import { oneLine } from './errors.js';
import { RootDir, joinRel, splitRel, openFileAtSync } from './fsx/rootdir.js';
import { exchangeAt, setImmutable, syncFilesystem } from './fsx/sys.js';
import type { Index, JournalEntry } from './store/index-db.js';
import { dropPoolTmps, openPool } from './pool/store.js';

export interface RecoverReport {
  entries: number;
  temporariesRemoved: number;
  linksKept: number;
  linkRecordsDropped: number;
  attributesRestored: number;
  /** Server files put back on their own inode (killed between the exchange and the freeing). */
  swappedBack: number;
  problems: string[];
}

export async function recover(index: Index, log?: (line: string) => void): Promise<RecoverReport> {
  const report: RecoverReport = { entries: 0, temporariesRemoved: 0, linksKept: 0, linkRecordsDropped: 0, attributesRestored: 0, swappedBack: 0, problems: [] };
  // A pool's temporary copies (a run killed while writing an entry) are in no journal.
  for (const { root, rec } of index.allRoots()) {
    if (rec.lastRole !== 'pool') continue;
    const pool = await openPool(root, false).catch(() => null);
    try {
      if (pool) report.temporariesRemoved += dropPoolTmps(pool);
    } finally {
      await pool?.close();
    }
  }
  const entries = index.journalEntries();
  if (entries.length === 0) return report;
  report.entries = entries.length;
  const roots = new Map<string, RootDir | null>();
  const rootOf = async (r: string) => {
    if (!roots.has(r)) roots.set(r, await RootDir.open(r).catch(() => null));
    return roots.get(r)!;
  };
  // Links and copies first, attributes last: an attribute goes back on once the links are settled.
  const order = (e: JournalEntry) => (e.op === 'flag' ? 1 : 0);
  const protect: JournalEntry[] = [];
  // Inodes whose attribute a journaled step lifted: a name still on one keeps it protected.
  const flagged = new Set(entries.filter((e) => e.op === 'flag').map((e) => `${e.dev}:${e.ino}`));
  const done: JournalEntry[] = [];
  try {
    for (const e of [...entries].sort((a, b) => order(a) - order(b))) {
      const dir = await rootOf(e.root);
      try {
        if (e.op === 'flag' && protect.length > 0) await protectAll(protect.splice(0), rootOf, report);
        if (dir) await recoverOne(e, dir, index, report, protect, flagged);
      } catch (err) {
        report.problems.push(`${e.root}/${e.path}: ${oneLine(err)}`);
        continue; // kept in the journal: the next run tries again
      }
      done.push(e);
    }
    await protectAll(protect, rootOf, report);
    // Durable first: a power loss must not bring back a removed name with no entry for it.
    for (const d of roots.values()) if (d) syncFilesystem(d.rootFd);
    await index.journalDone(done);
  } finally {
    for (const d of roots.values()) await d?.close();
  }
  log?.(`recovered ${report.entries} unfinished change(s): ${report.temporariesRemoved} temporary file(s) removed, ` +
    `${report.linksKept} link(s) kept, ${report.linkRecordsDropped} link record(s) dropped, ${report.attributesRestored} attribute(s) restored` +
    (report.swappedBack ? `, ${report.swappedBack} file(s) put back on their own inode` : ''));
  return report;
}

async function recoverOne(e: JournalEntry, dir: RootDir, index: Index, report: RecoverReport, protect: JournalEntry[], flagged: Set<string>): Promise<void> {
  const onInode = (st: fs.BigIntStats | null) => st !== null && String(st.ino) === e.ino && String(st.dev) === e.dev;
  if (e.op === 'flag') {
    const { dir: d, name } = splitRel(e.path);
    dir.withDirSync(d, (dfd) => {
      let f;
      try { f = openFileAtSync(dfd, name); } catch { return; } // gone: nothing to put back
      try {
        if (!onInode(f.stat)) return;
        if (f.stat.nlink > 1n) {
          if (setImmutable(f.fd, true)) report.attributesRestored++;
        } else {
          // No link is left to protect: the attribute stays off, as a finished undo leaves it.
          setImmutable(f.fd, false);
          void index.removeInode(e.dev, e.ino);
        }
      } finally {
        void f.close();
      }
    });
    return;
  }
  const { dir: d, name } = splitRel(e.path);
  const tmpRel = joinRel(d, e.tmp);
  let tmp = dir.lstatSync(tmpRel);
  // Killed between swapping the names (apply's exchange) and freeing the server's own inode:
  // the file's name is on the shared inode and the temporary name on the server's. Whether
  // that inode was checked is not known, so it goes back to its name, as the file was.
  if (e.op === 'link' && tmp?.isFile() && !onInode(tmp) && onInode(dir.lstatSync(e.path))) {
    if (dir.withDirSync(d, (dfd) => exchangeAt(dfd, e.tmp, name))) {
      report.swappedBack++;
      tmp = dir.lstatSync(tmpRel);
    }
  }
  // A link's temporary name is the shared inode; an undo's is a new copy: never the shared one.
  const ours = e.op === 'link' ? onInode(tmp) : tmp !== null && tmp.isFile() && !onInode(tmp);
  if (ours) {
    dir.withDirSync(d, (dfd) => fs.unlinkSync(RootDir.at(dfd, e.tmp)));
    report.temporariesRemoved++;
  }
  const now = dir.lstatSync(e.path);
  const rec = index.getLink(e.root, e.path);
  const linked = onInode(now);
  if (e.op === 'link' && linked) {
    report.linksKept++;
    // Killed between the link and the attribute: an inode recorded as vunify's (an
    // immutable run) is shared now and gets its attribute back, once every temporary name
    // is gone (an immutable inode's names cannot be removed).
    if (index.getInode(e.dev, e.ino)) protect.push(e);
  }
  // An undo killed while the inode's attribute was lifted: the names it did not reach still
  // share the inode (the flag entry's own path may have gone private already).
  if (e.op === 'undo' && linked && (flagged.has(`${e.dev}:${e.ino}`) || index.getInode(e.dev, e.ino))) protect.push(e);
  // A link not made, or an undo that finished: the link record no longer describes the disk.
  if (!linked && rec && rec.ino === e.ino && rec.dev === e.dev) {
    await index.removeLink(e.root, e.path);
    report.linkRecordsDropped++;
  }
}

/** The attribute on each kept link's inode that is still shared. */
async function protectAll(links: JournalEntry[], rootOf: (r: string) => Promise<RootDir | null>, report: RecoverReport): Promise<void> {
  for (const e of links) {
    const dir = await rootOf(e.root);
    const { dir: d, name } = splitRel(e.path);
    try {
      dir?.withDirSync(d, (dfd) => {
        const f = openFileAtSync(dfd, name);
        try {
          if (String(f.stat.ino) === e.ino && String(f.stat.dev) === e.dev && f.stat.nlink > 1n && setImmutable(f.fd, true)) report.attributesRestored++;
        } finally {
          void f.close();
        }
      });
    } catch (err) {
      report.problems.push(`${e.root}/${e.path}: cannot put the immutable attribute back: ${oneLine(err)}`);
    }
  }
}
