#!/usr/bin/env node
// The replace floor: the filesystem work every hard-linking deduplicator does at least once per
// duplicate, with nothing else. For each server file the farm generator made identical to s0's
// (it knows which, so nothing is read or compared), one link(2) of s0's file to a temporary name
// beside it and one rename(2) over it, which frees the copy's inode. One at a time (synchronous),
// or N at a time in libuv's pool.
//
//   node native-free-bench/replace-floor.mjs VSERVERS_DIR PARAMS_JSON [N]
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileSpec, serverFileSpec, serverName } from './farm.mjs';

const N = Math.max(1, Number(process.argv[4] ?? 1) || 1);
process.env.UV_THREADPOOL_SIZE = String(Math.max(4, N)); // read by libuv at the pool's first use

const [vserversDir, paramsJson] = process.argv.slice(2);
if (!vserversDir || !paramsJson) {
  process.stderr.write('usage: replace-floor.mjs VSERVERS_DIR PARAMS_JSON\n');
  process.exit(2);
}
const p = JSON.parse(paramsJson);
const pairs = [];
for (let i = 0; i < p.filesPerServer; i++) {
  const ref = path.join(vserversDir, serverName(0), fileSpec(p, i).rel);
  for (let s = 1; s < p.servers; s++) {
    if (serverFileSpec(p, s, i).variant === 'identical') pairs.push([ref, path.join(vserversDir, serverName(s), fileSpec(p, i).rel)]);
  }
}
if (N === 1) {
  for (const [ref, dst] of pairs) {
    const tmp = `${dst}.floor-tmp`;
    fs.linkSync(ref, tmp);
    fs.renameSync(tmp, dst);
  }
} else {
  let next = 0;
  const worker = async () => {
    while (next < pairs.length) {
      const [ref, dst] = pairs[next++];
      const tmp = `${dst}.floor-tmp`;
      await fsp.link(ref, tmp);
      await fsp.rename(tmp, dst);
    }
  };
  await Promise.all(Array.from({ length: N }, worker));
}
process.stdout.write(`${pairs.length} copies replaced by links\n`);
