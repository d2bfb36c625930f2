#!/usr/bin/env node
// vunify's executable: everything is in cli-program.ts.
// libuv's pool must be sized before its first use: renames run 16 at a time.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { main } = await import('./cli-program.js');

main(process.argv).then((code) => { process.exitCode = code; });
