// Test-only fault injection: with VUNIFY_FAULT_AFTER=N the process kills itself (SIGKILL,
// no cleanup of any kind) at the Nth change point of apply, so tests can prove that
// `vunify recover` finishes or rolls back whatever was under way. Unset, it costs a compare.
import { execSync } from 'node:child_process';
import { appendFileSync, closeSync, copyFileSync, fstatSync, openSync, readFileSync, readSync, renameSync, statSync, utimesSync, writeFileSync, writeSync } from 'node:fs';

const after = Number(process.env.VUNIFY_FAULT_AFTER ?? 0);
let passed = 0;

export function faultPoint(): void {
  if (after > 0 && ++passed === after) process.kill(process.pid, 'SIGKILL');
}

/** The value of a test-only variable the first time it is asked for, then undefined: each hook fires once. */
const fired = new Set<string>();
function firstTime(variable: string): string | undefined {
  const v = process.env[variable];
  if (!v || fired.has(variable)) return undefined;
  fired.add(variable);
  return v;
}

/**
 * Test-only: VUNIFY_TEST_WRITE_AFTER_VERIFY=PATH appends a byte to PATH right after the
 * byte comparison, as a concurrent writer could at the worst moment.
 */
export function afterVerify(): void {
  const p = process.env.VUNIFY_TEST_WRITE_AFTER_VERIFY;
  if (p) appendFileSync(p, 'x');
}

/**
 * Test-only: VUNIFY_TEST_WRITE_BEFORE_POOL_COPY=PATH rewrites PATH's first byte (same size,
 * same mtime) once, right before the first pool entry is copied: a tenant writing its file
 * while the pool copies it.
 */
export function beforePoolCopy(): void {
  const p = firstTime('VUNIFY_TEST_WRITE_BEFORE_POOL_COPY');
  if (!p) return;
  const st = statSync(p);
  const fd = openSync(p, 'r+');
  try {
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, 0);
    b[0] ^= 0xff;
    writeSync(fd, b, 0, 1, 0);
  } finally {
    closeSync(fd);
  }
  utimesSync(p, st.atime, st.mtime);
}

/**
 * Test-only: VUNIFY_TEST_REPLACE_AFTER_WALK=PATH replaces PATH with a copy of itself (same
 * bytes, mode and times, another inode) right after the tree walks, as an upgrade running
 * beside vunify could.
 */
export function afterWalk(): void {
  const p = process.env.VUNIFY_TEST_REPLACE_AFTER_WALK;
  if (!p) return;
  const st = statSync(p);
  copyFileSync(p, `${p}.race`);
  utimesSync(`${p}.race`, st.atime, st.mtime);
  renameSync(`${p}.race`, p);
}

/**
 * Test-only: VUNIFY_TEST_WRITE_AFTER_EXCHANGE=1 appends a byte, once, to the server's own
 * inode right after its name was swapped onto the shared one: a writer that held the file
 * open, at the worst moment.
 */
export function afterExchange(oldPath: string | Buffer): void {
  if (firstTime('VUNIFY_TEST_WRITE_AFTER_EXCHANGE')) appendFileSync(oldPath, 'x');
}

/** Runs the shell command in the environment variable, the first time only. */
function commandOnce(variable: string): void {
  const cmd = firstTime(variable);
  if (cmd) execSync(cmd, { stdio: 'ignore' });
}

/**
 * Test-only: VUNIFY_TEST_AFTER_TMP_LINK='shell command' runs the command once, right after
 * the first temporary link is made (say, remounting the filesystem read-only).
 */
export const afterTmpLink = (): void => commandOnce('VUNIFY_TEST_AFTER_TMP_LINK');

/**
 * Test-only: VUNIFY_TEST_BEFORE_VERIFY='shell command' runs the command once, right before
 * the first chunk's verify (a tenant removing or swapping folders after the scan).
 */
export const beforeVerify = (): void => commandOnce('VUNIFY_TEST_BEFORE_VERIFY');

/** Test-only: VUNIFY_TEST_BEFORE_UNDO='shell command', the same right before undo's first file. */
export const beforeUndo = (): void => commandOnce('VUNIFY_TEST_BEFORE_UNDO');

/**
 * Test-only: VUNIFY_TEST_HANG=1 makes the run, once its work is done, wait on a promise that
 * never settles, as a step that never finishes would; VUNIFY_TEST_HANG=reject leaves a
 * rejected promise that nothing handles. The executable's nets (cli.ts) must turn either into
 * one line and exit 4, never a silent 0.
 */
export function hangForTest<T>(run: Promise<T>): Promise<T> {
  const mode = process.env.VUNIFY_TEST_HANG;
  if (!mode) return run;
  return run.then((v) => {
    if (mode !== 'reject') return new Promise<T>(() => undefined);
    void Promise.reject(new Error('a rejection nothing handled (VUNIFY_TEST_HANG)'));
    return v;
  });
}

/**
 * Test-only: VUNIFY_TEST_BEFORE_DEDUPE=swap:PATH replaces PATH, before reflink apply opens
 * its first file, with another file of the same size and times (another inode); write:PATH
 * rewrites its first byte in place (same inode, times put back) right before FIDEDUPERANGE
 * shares it. Both may be given, one a line.
 */
const dedupeHooksDone = new Set<string>();
export function beforeDedupe(stage: 'swap' | 'write', fd?: number): void {
  const v = process.env.VUNIFY_TEST_BEFORE_DEDUPE?.split('\n').find((l) => l.startsWith(`${stage}:`));
  if (!v || dedupeHooksDone.has(stage)) return;
  const p = v.slice(stage.length + 1);
  const st = statSync(p);
  if (fd !== undefined && fstatSync(fd).ino !== st.ino) return; // about to share another file
  dedupeHooksDone.add(stage);
  const data = readFileSync(p);
  data[0] ^= 0xff;
  if (stage === 'swap') {
    writeFileSync(`${p}.swap`, data);
    utimesSync(`${p}.swap`, st.atime, st.mtime);
    renameSync(`${p}.swap`, p);
  } else {
    writeFileSync(p, data, { flag: 'r+' });
    utimesSync(p, st.atime, st.mtime);
  }
}
