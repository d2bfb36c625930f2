#!/usr/bin/env -S node --max-semi-space-size=4
// vunify's executable: everything is in cli-program.ts. The flag keeps V8's young generation
// at 4 MB a half, not 16: 12 MB less peak at 250,000 files, no slower (docs/performance.md).
// libuv's pool must be sized before its first use: renames run 16 at a time.
process.env.UV_THREADPOOL_SIZE ??= '16';
// vunify itself writes to process.stderr; console.error is only lmdb-js printing a failed
// commit's stack, which the index turns into one line of its own (VUNIFY_TRACE shows it).
if (!process.env.VUNIFY_TRACE) console.error = () => undefined;
// The last net under "one line per error": a rejection nothing handled.
process.on('unhandledRejection', (err) => {
  // lmdb-js's own copy of a failed commit: the index reports the write that failed.
  const detail = (err as { commitError?: Promise<unknown> } | null)?.commitError;
  if (detail) {
    detail.catch(() => undefined);
    return;
  }
  const msg = err instanceof Error ? err.message : String(err);
  process.stderr.write(`vunify: internal error: ${msg.replace(/\s+/g, ' ').trim()}\n`);
  process.exit(4);
});
// A reader that went away (`vunify verify | head -1`) ends the output quietly, not the run:
// the exit code still says how the run went, as it would for a report nobody reads.
let outputLost = false;
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE' || outputLost) return;
  outputLost = true;
  process.exitCode = Math.max(Number(process.exitCode ?? 0), 1);
  process.stderr.write(`vunify: error: the report could not be written: ${err.code ?? err.message}\n`);
});
process.stderr.on('error', () => undefined); // nowhere left to say anything
const { main } = await import('./cli-program.js');
const { hangForTest } = await import('./fault.js');

let finished = false;
// A promise that never settles would otherwise end the process with code 0 and no word.
process.on('beforeExit', () => {
  if (finished) return;
  process.stderr.write('vunify: internal error: the run stopped while waiting on work that never finished\n');
  process.exit(4);
});
hangForTest(main(process.argv)).then((code) => { finished = true; process.exitCode = outputLost ? Math.max(code, 1) : code; });
