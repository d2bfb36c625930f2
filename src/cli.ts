#!/usr/bin/env node
// vunify's executable: everything is in cli-program.ts.
import { main } from './cli-program.js';

main(process.argv).then((code) => { process.exitCode = code; });
