#!/usr/bin/env node
// The replace floor: the filesystem work every hard-linking deduplicator does at least once per
// duplicate, with nothing else. For each server file the farm generator made identical to s0's
// (it knows which, so nothing is read or compared), one link(2) of s0's file to a temporary name
// beside it and one rename(2) over it, which frees the copy's inode. Three ways:
//   N = 1         one at a time, synchronous, on the main thread;
//   N > 1         N at a time in libuv's pool (as vunify renames today);
//   --workers W   W worker threads sharded by folder: each worker claims a whole package
//                 folder of one server (usr/TOP/pkgNNNNN and its subfolders) at a time and
//                 replaces its copies with synchronous calls, so no two threads ever rename in
//                 the same folder (a rename frees its victim while it holds the folder's lock).
//
//   node native-free-bench/replace-floor.mjs VSERVERS_DIR PARAMS_JSON [N | --workers W]
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Worker, isMainThread, workerData } from 'node:worker_threads';
import { fileSpec, serverFileSpec, serverName } from './farm.mjs';

const FILES_PER_PACKAGE = 40; // farm.mjs: file i lives in package floor(i / 40)

/** Replace the identical copies of server s in package pkg; returns how many. */
function replacePackage(vserversDir, p, s, pkg) {
  let n = 0;
  const end = Math.min(p.filesPerServer, (pkg + 1) * FILES_PER_PACKAGE);
  for (let i = pkg * FILES_PER_PACKAGE; i < end; i++) {
    if (serverFileSpec(p, s, i).variant !== 'identical') continue;
    const rel = fileSpec(p, i).rel;
    const dst = path.join(vserversDir, serverName(s), rel);
    const tmp = `${dst}.floor-tmp`;
    fs.linkSync(path.join(vserversDir, serverName(0), rel), tmp);
    fs.renameSync(tmp, dst);
    n++;
  }
  return n;
}

if (!isMainThread) {
  // A worker: claim the next unit (server s, package pkg) from the shared counter until none is left.
  const { vserversDir, p, counter, done } = workerData;
  const next = new Int32Array(counter);
  const count = new Int32Array(done);
  const packages = Math.ceil(p.filesPerServer / FILES_PER_PACKAGE);
  const units = packages * (p.servers - 1);
  let n = 0;
  for (let k = Atomics.add(next, 0, 1); k < units; k = Atomics.add(next, 0, 1)) {
    // Consecutive units are the same package in different servers: different folders, so the
    // workers spread over folders and the reference's folder is shared for reading only.
    n += replacePackage(vserversDir, p, 1 + (k % (p.servers - 1)), Math.floor(k / (p.servers - 1)));
  }
  Atomics.add(count, 0, n);
} else {
  const argv = process.argv.slice(2);
  const wi = argv.indexOf('--workers');
  const workers = wi >= 0 ? Math.max(1, Number(argv[wi + 1]) || 8) : 0;
  if (wi >= 0) argv.splice(wi, 2);
  const N = Math.max(1, Number(argv[2] ?? 1) || 1);
  if (!workers) process.env.UV_THREADPOOL_SIZE = String(Math.max(4, N)); // read by libuv at the pool's first use

  const [vserversDir, paramsJson] = argv;
  if (!vserversDir || !paramsJson) {
    process.stderr.write('usage: replace-floor.mjs VSERVERS_DIR PARAMS_JSON [N | --workers W]\n');
    process.exit(2);
  }
  const p = JSON.parse(paramsJson);
  let replaced = 0;
  if (workers) {
    const counter = new SharedArrayBuffer(4);
    const done = new SharedArrayBuffer(4);
    const url = new URL(import.meta.url);
    await Promise.all(Array.from({ length: workers }, () => new Promise((resolve, reject) => {
      const w = new Worker(url, { workerData: { vserversDir, p, counter, done } });
      w.on('error', reject);
      w.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`worker exited ${code}`))));
    })));
    replaced = new Int32Array(done)[0];
  } else {
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
    replaced = pairs.length;
  }
  process.stdout.write(`${replaced} copies replaced by links${workers ? ` (${workers} worker threads, sharded by folder)` : ''}\n`);
}
