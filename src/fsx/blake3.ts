// BLAKE3, from @napi-rs/blake-hash. The package's own loader asks process.report for the
// C library (a full diagnostic report: 5 ms of every run that loads it); on x64 Linux
// without musl's loader the glibc binding is taken directly, and anything else goes the
// package's way.
import fs from 'node:fs';
import { createRequire } from 'node:module';
import type * as Blake from '@napi-rs/blake-hash';

const require = createRequire(import.meta.url);

function binding(): typeof Blake {
  if (process.platform === 'linux' && process.arch === 'x64' && !fs.existsSync('/lib/ld-musl-x86_64.so.1')) {
    try {
      return require('@napi-rs/blake-hash-linux-x64-gnu') as typeof Blake;
    } catch { /* not installed, or not loadable here */ }
  }
  return require('@napi-rs/blake-hash') as typeof Blake;
}

export const { Blake3Hasher } = binding();
export type Blake3Hasher = Blake.Blake3Hasher;
