// The breaks test/sabotage/run.sh makes, one at a time, in a copy of the repository. Each
// breaks one claim of docs/safety.md (`claim`: its row; in parentheses, a check of a test) with an exact string
// replacement (`from` must occur exactly once in `file`), and names the test file that must
// then fail (`only`: vitest's -t filter, to run just the tests that matter).
// Issue 22's break 4: the inode is recorded as vunify's only after the attribute is set.
const recordedLate = [
  { file: 'src/apply/link.ts', from: 'if (ctx.immutable && !st.ours && !st.wasImmutable) {', to: 'if (ctx.immutable && !st.ours && !st.wasImmutable && false) {' },
  { file: 'src/apply/link.ts', from: '            setImmutable(ref.fd, true);\n            faultPoint();\n', to: "            setImmutable(ref.fd, true);\n            faultPoint();\n            if (!state.ours && !state.wasImmutable) await ctx.index.putInode(r.dev, r.ino, { root: ctx.refRoot, path: first.refPath, setAt: new Date().toISOString() });\n" },
];

export const breaks = [
  // The breaks of issue 22 that the suite used to miss.
  {
    id: 'undo-times-seconds', claim: 'Undo is exact', test: 'test/exact-undo.test.ts',
    edits: [{ file: 'src/apply/common.ts', from: 'setTimesNs(fd, want.atimeNs, want.mtimeNs);', to: 'setTimesNs(fd, want.atimeNs / 1_000_000_000n * 1_000_000_000n, want.mtimeNs / 1_000_000_000n * 1_000_000_000n);' }],
  },
  {
    id: 'undo-xattrs-from-shared', claim: 'Undo is exact', test: 'test/exact-undo.test.ts',
    edits: [{ file: 'src/apply/undo.ts', from: "xattrs: Object.fromEntries(Object.entries(useRec.xattrs).map(([k, v]) => [k, Buffer.from(v, 'base64')])) as Xattrs,", to: 'xattrs: readXattrs(cur.fd),' }],
  },
  {
    id: 'no-byte-compare', claim: 'A link is made only between identical files', test: 'test/stale-record.test.ts',
    edits: [{ file: 'src/apply/link.ts', from: 'if (!cmp.same) {', to: 'if (!cmp.same && process.pid < 0) {' }],
  },
  { id: 'inode-recorded-after-attribute', claim: 'A shared inode is never left writable', test: 'test/attributes.test.ts', only: 'kill -9', edits: recordedLate },
  { id: 'inode-recorded-after-attribute-2', claim: 'Nothing is lost in a crash', test: 'test/crash.test.ts', only: 'unify killed', edits: recordedLate },
  {
    // koffi copying the iovec's buffer instead of passing its memory: the compare would see
    // the bytes a pooled buffer held before (often another server's copy of the same file).
    id: 'in-place-read-into-copy', claim: 'A link is made only between identical files', test: 'test/content.test.ts',
    edits: [{ file: 'src/fsx/sys.ts', from: '{ base: buf.subarray(off, off + len), len }', to: '{ base: Buffer.from(buf.subarray(off, off + len)), len }' }],
  },
  {
    id: 'read-without-noatime', claim: 'Dry runs change nothing', test: 'test/dry-run.test.ts',
    edits: [{ file: 'src/fsx/rootdir.ts', from: 'fd = fs.openSync(p, READ_FLAGS | (noatimeAllowed ? O_NOATIME : 0));', to: 'fd = fs.openSync(p, READ_FLAGS);' }],
  },
  {
    id: 'no-exit4-on-hang', claim: 'A failed index write stops the run', test: 'test/internal-error.test.ts',
    edits: [{ file: 'src/cli.ts', from: '  if (finished) return;', to: '  return;' }],
  },
  {
    id: 'no-exit4-on-rejection', claim: 'A failed index write stops the run', test: 'test/internal-error.test.ts',
    edits: [{ file: 'src/cli.ts', from: "trim()}\\n`);\n  process.exit(4);", to: 'trim()}\\n`);' }],
  },
  {
    id: 'link-over-foreign-immutable-ref', claim: 'Only attributes vunify set are cleared', test: 'test/limits.test.ts', only: 'immutable before vunify',
    edits: [{ file: 'src/apply/link.ts', from: 'if (wasImmutable && !ours) {', to: 'if (wasImmutable && !ours && false) {' }],
  },
  {
    id: 'upgrade-drops-links', claim: 'An index upgrade loses nothing', test: 'test/index-upgrade-fixture.test.ts',
    edits: [{ file: 'src/store/index-db.ts', from: 'await put(next.putLink(root, rel, value));', to: 'void root; void rel; void value;' }],
  },
  {
    id: 'upgrade-drops-journal', claim: 'An index upgrade loses nothing', test: 'test/index-upgrade-fixture.test.ts',
    edits: [{ file: 'src/store/index-db.ts', from: 'await next.journalAdd(journal);', to: 'void journal;' }],
  },
  // Checks of tests that could not fail before (issue 22, item 7).
  {
    id: 'docs-option-under-wrong-command', claim: '(test/cli-docs.test.ts: docs/cli.md gives each option under its own command)', test: 'test/cli-docs.test.ts', only: 'documents the report command',
    edits: [
      { file: 'docs/cli.md', from: '| `--top N` | how many of the largest possible wins to list; default 10 |\n', to: '' },
      { file: 'docs/cli.md', from: '| `--sample N` |', to: '| `--top N` | how many of the largest possible wins to list; default 10 |\n| `--sample N` |' },
    ],
  },
  {
    id: 'docs-option-wrong-commands', claim: '(test/cli-docs.test.ts: docs/cli.md says which commands take an option)', test: 'test/cli-docs.test.ts', only: 'documents the plan command',
    edits: [{ file: 'docs/cli.md', from: '| `--full` | unify and plan:', to: '| `--full` | unify only:' }],
  },
  {
    id: 'scan-twin-read-again', claim: '(test/scan-twins.test.ts: a second name of an inode is not read again)', test: 'test/scan-twins.test.ts',
    edits: [{ file: 'src/scan.ts', from: 'const twin = linked ? inodes.get(String(st.ino)) : undefined;', to: "const twin = linked ? inodes.get(String(st.ino) + 'x') : undefined;" }],
  },
  // More, on the invariants of docs/safety.md.
  {
    id: 'no-read-lease', claim: 'No write in one vserver reaches another, not even for a microsecond', test: 'test/isolation.test.ts', only: 'on tmp, in s1:',
    edits: [{ file: 'src/apply/guard.ts', from: '    takeReadLease(fd);\n', to: '\n' }],
  },
  {
    id: 'no-private-copies', claim: 'No write in one vserver reaches another, not even for a microsecond', test: 'test/isolation.test.ts', only: 'on xfs, in s1:',
    edits: [{ file: 'src/apply/link.ts', from: 'await evictGroup(g, ref, state, ctx, outcomes, updates);', to: 'void evictGroup;' }],
  },
  {
    id: 'no-statx-attribute-check', claim: 'A shared inode is never left writable', test: 'test/attributes.test.ts', only: 'went missing',
    edits: [{ file: 'src/apply/link.ts', from: 'return now !== null && String(now.ino) === r.ino && now.immutable;', to: 'return now !== null && String(now.ino) === r.ino;' }],
  },
  {
    id: 'walk-takes-tmp-names', claim: 'No run leaves a name that was not there before', test: 'test/tmp-names.test.ts',
    edits: [{ file: 'src/sources/tree.ts', from: 'if (name.startsWith(TMP_PREFIX)) return true;', to: 'if (name.startsWith(TMP_PREFIX + "never")) return true;' }],
  },
  {
    id: 'no-root-lock', claim: 'One run at a time per farm root, whatever the index', test: 'test/farm-lock.test.ts', only: 'exit 3 while a root is held',
    edits: [{ file: 'src/lock.ts', from: "        if (!tryLock(fd)) {\n          fs.closeSync(fd);\n          throw new VunifyError('LOCKED', `another vunify run is changing this root", to: "        if (!tryLock(fd) && false) {\n          fs.closeSync(fd);\n          throw new VunifyError('LOCKED', `another vunify run is changing this root" }],
  },
  {
    id: 'no-flags-comparison', claim: 'Inode flags travel with files', test: 'test/attributes.test.ts', only: 'inode flags',
    edits: [{ file: 'src/apply/link.ts', from: 'if ((srvFlags & KEPT_FLAGS) !== refFlags) return', to: 'if ((srvFlags & KEPT_FLAGS) !== refFlags && false) return' }],
  },
  {
    id: 'no-signature-check-before-rename', claim: 'A file written after its comparison is not replaced', test: 'test/race.test.ts',
    edits: [{ file: 'src/apply/link.ts', from: "if (!st2 || !sameSignatureStats(v.st1, st2)) return skip('changed', 'written after it was compared');", to: 'void st2;' }],
  },
  {
    id: 'link-over-foreign-immutable-server', claim: 'Only attributes vunify set are cleared', test: 'test/limits.test.ts', only: 'immutable before vunify',
    edits: [{ file: 'src/apply/link.ts', from: "if (srvFlags & FS_IMMUTABLE_FL) return skip('immutable',", to: "if (srvFlags & FS_IMMUTABLE_FL && false) return skip('immutable'," }],
  },
  {
    id: 'folders-followed', claim: 'No symlink below a server root is followed', test: 'test/hostile.test.ts', only: 'are never followed',
    edits: [{ file: 'src/fsx/sys.ts', from: 'const O_DIRECTORY_NOFOLLOW = 0o200000 | 0o400000 | 0o2000000;', to: 'const O_DIRECTORY_NOFOLLOW = 0o200000 | 0o2000000;' }],
  },
  {
    id: 'unlink-before-rename', claim: 'A path never disappears', test: 'test/crash.test.ts', only: 'unify killed',
    edits: [{ file: 'src/apply/link.ts', from: '      afterTmpLink();\n      faultPoint();\n', to: '      afterTmpLink();\n      fs.unlinkSync(at(dfd, name));\n      faultPoint();\n' }],
  },
  {
    id: 'no-second-copy-on-emlink', claim: 'Link limits', test: 'test/limits.test.ts', only: 'EMLINK',
    edits: [{ file: 'src/apply/link.ts', from: "if (isErrno(err, 'EMLINK')) return skip(", to: "if (isErrno(err, 'EMLINK') && false) return skip(" }],
  },
  {
    id: 'undo-leaves-lone-immutable', claim: 'Undo leaves no lone immutable file', test: 'test/attributes.test.ts', only: 'another index',
    edits: [{ file: 'src/apply/undo.ts', from: 'if (now.nlink > BigInt(it.refNames ?? 1)) setImmutable(cur.fd, true);', to: 'if (now.nlink > 0n) setImmutable(cur.fd, true);' }],
  },
  {
    id: 'read-only-not-said-once', claim: 'A read-only farm is said once', test: 'test/cli-habits.test.ts', only: 'read-only',
    edits: [{ file: 'src/prepare.ts', from: 'const ro = opened.find((r) => isReadOnly(r.dir.rootFd));', to: 'const ro = opened.find((r) => isReadOnly(r.dir.rootFd) && false);' }],
  },
  {
    id: 'epipe-not-ignored', claim: 'A closed stdout is no crash', test: 'test/cli-habits.test.ts', only: 'closed stdout',
    edits: [{ file: 'src/cli.ts', from: "if (err.code === 'EPIPE' || outputLost) return;", to: 'if (outputLost) return;' }],
  },
  {
    id: 'same-root-twice', claim: 'Roots are distinct, apart, and not `/`', test: 'test/roots.test.ts', only: 'the reference given again as a server',
    edits: [{ file: 'src/prepare.ts', from: 'if (sameId(places[i].id, places[j].id)) {', to: 'if (sameId(places[i].id, places[j].id) && false) {' }],
  },
  {
    id: 'nested-roots', claim: 'Roots are distinct, apart, and not `/`', test: 'test/roots.test.ts', only: 'a server inside the reference',
    edits: [{ file: 'src/prepare.ts', from: "if (isWithin(places[i], places[j])) throw new VunifyError('BAD_SERVER', `is inside", to: "if (isWithin(places[i], places[j]) && false) throw new VunifyError('BAD_SERVER', `is inside" }],
  },
  {
    id: 'dpkg-path-leaves-root', claim: 'A package database never leads outside, and is never written', test: 'test/dpkg-source.test.ts', only: 'unsafe names',
    edits: [{ file: 'src/sources/dpkg.ts', from: "if (!onDisk.startsWith('/') || !isSafeRel(rel)) { rejectedPaths++; continue; }", to: "if (!onDisk.startsWith('/')) { rejectedPaths++; continue; }" }],
  },
  {
    id: 'long-key-not-shortened', claim: 'A long path never stops the farm', test: 'test/long-path.test.ts', only: 'is unified like any other',
    edits: [{ file: 'src/store/index-db.ts', from: 'const long = at + 4 + rel.length > MAX_KEY;', to: 'const long = at + 4 + rel.length > MAX_KEY * 4;' }],
  },
  {
    id: 'meta-pages-unchecked', claim: 'A damaged index is one line, never a crash', test: 'test/index-damage.test.ts', only: 'truncated',
    edits: [{ file: 'src/store/index-db.ts', from: 'if (why) throw new VunifyError(\'INDEX\', `the index is damaged', to: 'if (why && false) throw new VunifyError(\'INDEX\', `the index is damaged' }],
  },
  {
    id: 'failed-write-after-links-says-nothing-changed', claim: 'The exit code tells whether files changed', test: 'test/index-damage.test.ts', only: 'after links were made',
    edits: [{ file: 'src/store/index-db.ts', from: '    await this.flush();\n    this.journaled = true;\n', to: '    await this.flush();\n' }],
  },
  {
    id: 'other-filesystem-accepted', claim: 'Bad input changes nothing', test: 'test/unify.test.ts', only: 'a server on another filesystem',
    edits: [{ file: 'src/prepare.ts', from: 'if (s.dir.dev !== ref.dir.dev) {', to: 'if (s.dir.dev !== ref.dir.dev && false) {' }],
  },
  {
    id: 'quick-ignores-ctime', claim: 'A quick rescan never reports a stale outcome', test: 'test/quick.test.ts', only: 'a rescan after unify is quick|a changed file',
    edits: [{ file: 'src/quick/inodes.ts', from: '    b.readUInt32LE(L!.ctime) === a[at + 8] && b.readUInt32LE(L!.ctime + 4) === a[at + 9] &&\n    b.readUInt32LE(L!.ctime + 8) === a[at + 10] && b.readUInt32LE(L!.ctime + 12) === a[at + 11];', to: '    true;' }],
  },
  {
    id: 'undo-without-lease', claim: 'No write in one vserver reaches another, not even for a microsecond', test: 'test/isolation.test.ts', only: 'undone',
    edits: [{ file: 'src/apply/undo.ts', from: 'const held = group.every((it) => it.reflink) ? null : holdUndoGroup(group, ctx);', to: 'const held = null as OpenedFile | null | \'inUse\' | \'none\';' }],
  },
  {
    id: 'second-copy-unchecked', claim: 'No write in one vserver reaches another, not even for a microsecond', test: 'test/limits.test.ts', only: 'second shared copy written',
    edits: [{ file: 'src/apply/link.ts', from: "if (!sameSig(sigOf(fs.fstatSync(file.fd, { bigint: true })), sig)) throw", to: "if (!sameSig(sigOf(fs.fstatSync(file.fd, { bigint: true })), sig) && false) throw" }],
  },
  {
    id: 'lease-refusal-misnamed', claim: 'No write in one vserver reaches another, not even for a microsecond', test: 'test/attributes.test.ts', only: 'held open',
    edits: [
      { file: 'src/fsx/sys.ts', from: "for (const name of ['EAGAIN', 'EOPNOTSUPP', 'EDEADLK'] as const) {", to: "for (const name of [] as string[]) {" },
      { file: 'src/fsx/sys.ts', from: 'if (!errnoNames.has(num as number)) errnoNames.set', to: 'errnoNames.set' },
    ],
  },
  {
    id: 'names-as-utf8', claim: 'Odd names', test: 'test/names.test.ts', only: 'in tree mode',
    edits: [{ file: 'src/fsx/rootdir.ts', from: "Buffer.from(name, 'latin1')]);", to: "Buffer.from(name, 'utf8')]);" }],
  },
  // Issue 21: the pool.
  {
    id: 'pool-inside-root', claim: 'The pool (`--pool`) is no tenant\'s, and its sharing is as safe as the reference\'s', test: 'test/pool.test.ts', only: 'refuses a pool folder',
    edits: [{ file: 'src/prepare.ts', from: '      checkPoolApart(poolPath, opened);', to: '      void checkPoolApart;' }],
  },
  {
    id: 'pool-drops-used-entries', claim: 'The pool (`--pool`) is no tenant\'s, and its sharing is as safe as the reference\'s', test: 'test/pool.test.ts', only: 'one immutable pool inode',
    edits: [{ file: 'src/pool/store.ts', from: "if (!st.isFile() || st.nlink !== 1n) return null;", to: 'if (!st.isFile()) return null;' }],
  },
  {
    id: 'pool-tmps-left-by-recover', claim: 'The pool (`--pool`) is no tenant\'s, and its sharing is as safe as the reference\'s', test: 'test/pool.test.ts', only: 'killed at any point',
    edits: [{ file: 'src/recover.ts', from: 'if (pool) report.temporariesRemoved += dropPoolTmps(pool);', to: 'void dropPoolTmps;' }],
  },
  {
    id: 'pool-copy-unchecked', claim: 'The pool (`--pool`) is no tenant\'s, and its sharing is as safe as the reference\'s', test: 'test/pool.test.ts', only: 'while the pool copies',
    edits: [{ file: 'src/pool/store.ts', from: 'if (n !== src.rec.size || h.hash !== src.rec.hash) return', to: 'if (n !== src.rec.size || (h.hash !== src.rec.hash && false)) return' }],
  },
  // Issue 18's slices: what a run in slices must keep of the whole-farm run.
  {
    id: 'slices-no-deferral', claim: '(test/slices.test.ts: an inode with names in two slices is planned whole)', test: 'test/slices.test.ts', only: 'links what the whole-farm run links',
    edits: [{ file: 'src/scan-farm.ts', from: '    if (deferred) {\n      for (const [k, e] of v.entries) {', to: '    if (deferred && process.pid < 0) {\n      for (const [k, e] of v.entries) {' }],
  },
  {
    id: 'slices-vanished-kept', claim: '(test/slices.test.ts: files gone since lose their records after the last slice)', test: 'test/slices.test.ts', only: 'drops the records',
    edits: [{ file: 'src/scan-farm.ts', from: 'if (rec && covers(rec, rel)) gone.push([root.dir.path, rel, null]);', to: 'if (rec && covers(rec, rel) && process.pid < 0) gone.push([root.dir.path, rel, null]);' }],
  },
  {
    id: 'slices-missing-each-slice', claim: '(test/slices.test.ts: packageMissing is counted once)', test: 'test/slices.test.ts', only: 'dpkg farm',
    edits: [{ file: 'src/plan.ts', from: 'const refPaths = [...(input.refPaths ?? ref.owned.keys())].sort();', to: 'const refPaths = [...ref.owned.keys()].sort();' }],
  },
  // Issue 18, the run after a change and large farms.
  {
    id: 'settled-skip-ignores-twins', claim: '(test/quick.test.ts: a settled skip still gets a new reference twin at another path)', test: 'test/quick.test.ts', only: 'taken over as skips',
    edits: [{ file: 'src/rescan.ts', from: 'if (!reason || bySize.get(s.size)?.some(', to: 'if (!reason || process.pid < 0 && bySize.get(s.size)?.some(' }],
  },
  {
    id: 'spread-links-one-chunk', claim: '(test/quick.test.ts: a run after a change journals its spread links a chunk at a time)', test: 'test/quick.test.ts', only: 'package upgrade in every root',
    edits: [{ file: 'src/engine.ts', from: 'ctx.spreadLinks = p.farm.survey !== null;', to: 'ctx.spreadLinks = false;' }],
  },
  {
    id: 'fd-cache-per-root-only', claim: '(test/limits.test.ts: folder fds stay within the process limit, whatever the number of roots)', test: 'test/limits.test.ts', only: 'fd limit',
    edits: [{ file: 'src/fsx/rootdir.ts', from: '    budget ??= folderFdBudget();', to: '    budget ??= 1e9;' }],
  },
  {
    id: 'exchange-no-recheck', claim: '(test/race.test.ts: a write after the exchange swaps the names back)', test: 'test/race.test.ts', only: 'puts the file back',
    edits: [{ file: 'src/apply/link.ts', from: 'if (!old || !sameButCtime(v.st1, old)) {', to: 'if (!old) {' }],
  },
  {
    id: 'recover-no-swap-back', claim: '(test/crash.test.ts: a kill between the exchange and the freeing is put back)', test: 'test/crash.test.ts', only: 'unify killed at change points',
    edits: [{ file: 'src/recover.ts', from: "if (e.op === 'link' && tmp?.isFile() && !onInode(tmp)", to: "if (process.pid < 0 && e.op === 'link' && tmp?.isFile() && !onInode(tmp)" }],
  },
  {
    id: 'link-groups-one-folder', claim: '(test/spread-groups.test.ts: groups linked at once come from different folders)', test: 'test/spread-groups.test.ts', only: 'different folders',
    edits: [{ file: 'src/apply/common.ts', from: '  if (byDir.size < 2) return groups;', to: '  if (byDir.size > 0) return groups;' }],
  },
  {
    id: 'refresh-never-searches', claim: '(test/refresh-inode.test.ts: a name of the shared inode the group does not know is re-recorded)', test: 'test/refresh-inode.test.ts', only: 'finds a recorded name',
    edits: [{ file: 'src/apply/common.ts', from: 'for (const h of r.hash && !(inode && allNamed(inode.nlink)) ?', to: 'for (const h of r.hash && !inode ?' }],
  },
  {
    id: 'refresh-ignores-given-record', claim: '(test/refresh-inode.test.ts: the record a name comes with is used, not read again)', test: 'test/refresh-inode.test.ts', only: 'record given with it',
    edits: [{ file: 'src/apply/common.ts', from: '      const old = known ?? ctx.index.getFile(root, rel);', to: '      const old = ctx.index.getFile(root, rel); void known;' }],
  },
  {
    id: 'folder-gone-is-error', claim: '(test/folder-gone.test.ts: a folder a tenant removed or swapped after the scan is their change, not a failure)', test: 'test/folder-gone.test.ts', only: 'tenant',
    edits: [{ file: 'src/apply/common.ts', from: '  if (err instanceof UnsafePathError) return skip(', to: '  if (err instanceof UnsafePathError && process.pid < 0) return skip(' }, { file: 'src/apply/common.ts', from: "  if (isErrno(err, 'ENOENT', 'ENOTDIR')) return skip(", to: "  if (isErrno(err, 'ENOENT', 'ENOTDIR') && process.pid < 0) return skip(" }],
  },
  {
    id: 'capture-skips-walked-folders', claim: '(test/quick.test.ts: the capture matches the records of the folders the walk read, or writes no quick file)', test: 'test/quick.test.ts',
    edits: [{ file: 'src/quick/capture.ts', from: 'root.files.entries((k) => folderOf(splitRel(k).dir).walked)', to: 'root.files.entries((k) => folderOf(splitRel(k).dir).walked && false)' }],
  },
  {
    id: 'undo-folder-gone-is-error', claim: '(test/folder-gone.test.ts: a folder moved away or swapped during an undo is the tenant\'s change, not a failure)', test: 'test/folder-gone.test.ts', only: 'in an undo too',
    edits: [{ file: 'src/apply/undo.ts', from: 'const out = await undoOne(it, ctx).catch(skipFor);', to: "const out = await undoOne(it, ctx).catch((err) => skip('error', oneLine(err))); void skipFor;" }],
  },
  {
    id: 'pause-after-one-miss', claim: '(test/content.test.ts: one miss in place does not send the next cached files to the pool)', test: 'test/content.test.ts', only: 'one miss leaves',
    edits: [{ file: 'src/fsx/content.ts', from: 'const MISS_RUN = 8;', to: 'const MISS_RUN = 1;' }],
  },
  {
    id: 'undo-ref-own-names', claim: 'Undo leaves no lone immutable file', test: 'test/slices.test.ts', only: 'links what the whole-farm run links',
    edits: [{ file: 'src/apply/undo.ts', from: 'if (now.nlink > BigInt(it.refNames ?? 1)) setImmutable(cur.fd, true);', to: 'if (now.nlink > 1n) setImmutable(cur.fd, true);' }],
  },
];
