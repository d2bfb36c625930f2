// Small tree-mode farms: roots with the same files (same bytes, mode and mtime), for
// `vunify --all-files`, and their removal (immutable attributes cleared first).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

/** Makes DIR/NAME for each name, each with `files` identical files under usr/share/t. */
export function makeTreeRoots(dir: string, names: string[], files: number): void {
  for (const name of names) {
    const d = path.join(dir, name, 'usr/share/t');
    fs.mkdirSync(d, { recursive: true });
    for (let i = 0; i < files; i++) {
      const f = path.join(d, `f${i}`);
      fs.writeFileSync(f, `file ${i}\n`.repeat(1 + (i % 7)));
      fs.utimesSync(f, 1_700_000_000, 1_700_000_000);
    }
  }
}

export function run(cmd: string, ...args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

/** Unmounts what is mounted at each path (ignoring what is not), then removes dir. */
export function removeTree(dir: string, mounts: string[] = []): void {
  for (const m of [...mounts].reverse()) spawnSync('umount', [m], { stdio: 'ignore' });
  if (!fs.existsSync(dir)) return;
  spawnSync('chattr', ['-R', '-i', dir], { stdio: 'ignore' });
  fs.rmSync(dir, { recursive: true, force: true });
}

/** stderr's lines, without commander's usage hint. */
export const errLines = (stderr: string) => stderr.trim().split('\n').filter((l) => l && !l.startsWith('(run vunify --help'));
