#!/usr/bin/env node
// The reflink row: vunify --method reflink against duperemove (when installed) on a loop-mounted
// XFS image (mkfs.xfs -m reflink=1), on the same synthetic farm as run.mjs. Each contender gets
// a fresh private copy of the farm (cp --reflink=never) and runs twice; what it saved is read
// from statfs (df), since du does not see shared extents. Run as root (loop mount).
//
//   node native-free-bench/reflink.mjs [--scale 0.25] [--servers 7] [--seed 1] [--dir /var/tmp/vunify-bench-reflink]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { farmParams, serverFileSpec, writeFarm } from './farm.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.join(HERE, '..', 'dist', 'cli.js');
const { values: o } = parseArgs({
  options: {
    scale: { type: 'string', default: '0.25' }, servers: { type: 'string', default: '7' },
    seed: { type: 'string', default: '1' }, dir: { type: 'string', default: '/var/tmp/vunify-bench-reflink' },
  },
});

const sh = (cmd, args, opts = {}) => {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 << 20, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.error?.message ?? r.stderr}`);
  return r.stdout;
};
const has = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const log = (m) => process.stderr.write(`reflink-bench: ${m}\n`);

/** Used bytes of the filesystem (df's used), after a sync. */
function used(dir) {
  sh('sync', ['-f', dir]);
  const [blocks, free, size] = sh('stat', ['-f', '-c', '%b %f %S', dir]).trim().split(' ').map(Number);
  return (blocks - free) * size;
}

/** Wall time and peak RSS (GNU time's %M) of one run. */
function timed(cmd, args) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M', cmd, ...args], { encoding: 'utf8', maxBuffer: 256 << 20 });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd}: exit ${r.status}: ${r.stderr.slice(-2000)}`);
  const rssKB = Number(r.stderr.trim().split('\n').pop());
  return { seconds, rssKB };
}

if (!fs.existsSync(CLI)) throw new Error(`${CLI} missing: run npx tsc -p tsconfig.json first`);
const params = farmParams({ scale: Number(o.scale), servers: Number(o.servers), seed: Number(o.seed) });
const work = path.resolve(o.dir);
const img = path.join(work, 'xfs.img');
const mnt = path.join(work, 'mnt');
fs.mkdirSync(mnt, { recursive: true });
if (spawnSync('mountpoint', ['-q', mnt]).status === 0) sh('umount', [mnt]);
fs.rmSync(img, { force: true });
fs.closeSync(fs.openSync(img, 'w'));
// Sparse: the host pays for what is written. The farm, two copies at a time and room to spare.
fs.truncateSync(img, Math.ceil(params.servers * params.filesPerServer * 300_000 * 3 + 2 ** 30));
sh('mkfs.xfs', ['-q', '-m', 'reflink=1', img]);
sh('mount', ['-o', 'loop', img, mnt]);
try {
  const farm = writeFarm(path.join(mnt, 'farm'), params, { log });
  log(`farm: ${farm.files} files, ${(farm.bytes / 2 ** 20).toFixed(0)} MiB in ${params.servers} roots`);
  // Server files with the reference's content (identical, or another mode or owner): what
  // either tool can share, in whole blocks.
  let sharable = 0;
  for (let s = 1; s < params.servers; s++) {
    for (let i = 0; i < params.filesPerServer; i++) {
      const f = serverFileSpec(params, s, i, farm.ownerVariantsWritten);
      if (f.variant === 'identical' || f.variant === 'mode' || f.variant === 'owner') sharable += Math.ceil(f.size / 4096) * 4096;
    }
  }
  const servers = farm.servers;
  const contenders = [
    { name: 'vunify --method reflink', cmd: process.execPath, args: (c) => [CLI, 'unify', '--all-files', '--no-default-excludes', '--method', 'reflink', '-q', '--db', path.join(c, 'index'), '--vservers-dir', path.join(c, 'vservers'), ...servers] },
    { name: 'duperemove -dr', cmd: 'duperemove', args: (c) => ['-dr', '-q', `--hashfile=${path.join(c, 'dupe.hash')}`, path.join(c, 'vservers')] },
  ];
  const rows = [];
  for (const c of contenders) {
    if (!has(c.cmd)) { rows.push({ name: c.name, note: 'not installed' }); continue; }
    const copy = path.join(mnt, 'copy');
    fs.mkdirSync(copy);
    sh('cp', ['-a', '--reflink=never', farm.vserversDir, path.join(copy, 'vservers')]);
    const before = used(mnt);
    log(`${c.name}: first run`);
    const first = timed(c.cmd, c.args(copy));
    const after = used(mnt);
    log(`${c.name}: second run`);
    const second = timed(c.cmd, c.args(copy));
    rows.push({ name: c.name, first, second, freed: before - after, secondFreed: after - used(mnt) });
    sh('rm', ['-rf', copy]);
  }
  const mib = (n) => (n / 2 ** 20).toFixed(1);
  const out = [
    `reflink on XFS (loop image, reflink=1): ${farm.files} files, ${mib(farm.bytes)} MiB, ${params.servers} roots; server files sharable with the reference: ${mib(sharable)} MiB`,
    '',
    '| tool | first run | peak RSS | df freed | second run | df freed by it |',
    '|---|---|---|---|---|---|',
    ...rows.map((r) => r.note ? `| ${r.name} | ${r.note} | | | | |`
      : `| ${r.name} | ${r.first.seconds.toFixed(2)} s | ${(r.first.rssKB / 1024).toFixed(0)} MB | ${mib(r.freed)} MiB | ${r.second.seconds.toFixed(2)} s | ${mib(r.secondFreed)} MiB |`),
  ];
  process.stdout.write(out.join('\n') + '\n');
} finally {
  sh('umount', [mnt]);
  fs.rmSync(img, { force: true });
}
