// Test helpers: run the real CLI, and take exact snapshots of root trees.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readXattrs } from '../../src/fsx/sys.js';

export const CLI = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));

export interface CliResult { status: number; signal: NodeJS.Signals | null; stdout: string; stderr: string }

export function vunify(args: string[], env: NodeJS.ProcessEnv = {}): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
    maxBuffer: 64 << 20,
  });
  return { status: r.status ?? -1, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

export interface FileSnap {
  type: 'file' | 'dir' | 'symlink' | 'other';
  ino: bigint;
  nlink: bigint;
  mode: number;
  uid: number;
  gid: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  atimeNs: bigint;
  size: bigint;
  sha?: string;
  link?: string;
  xattrs?: Record<string, string>;
}

/** Every entry below dir, keyed by its relative path, with metadata, content digest and xattrs. */
export function snapshot(dir: string): Map<string, FileSnap> {
  const out = new Map<string, FileSnap>();
  const walk = (rel: string) => {
    const abs = path.join(dir, rel);
    for (const name of fs.readdirSync(abs)) {
      const r = rel ? `${rel}/${name}` : name;
      const p = path.join(dir, r);
      const st = fs.lstatSync(p, { bigint: true });
      const snap: FileSnap = {
        type: st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other',
        ino: st.ino, nlink: st.nlink, mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid),
        mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, size: st.size,
        // readdir and readlink (this walk's too) may move atime; files are read with O_NOATIME.
        atimeNs: st.isFile() ? st.atimeNs : 0n,
      };
      if (st.isFile()) {
        const fd = fs.openSync(p, fs.constants.O_RDONLY | fs.constants.O_NOATIME);
        try {
          snap.sha = createHash('sha256').update(fs.readFileSync(fd)).digest('hex');
          snap.xattrs = Object.fromEntries(Object.entries(readXattrs(fd)).map(([k, v]) => [k, v.toString('hex')]));
        } finally {
          fs.closeSync(fd);
        }
      }
      if (st.isSymbolicLink()) snap.link = fs.readlinkSync(p);
      out.set(r, snap);
      if (st.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

/** Paths of temporary files vunify may leave behind. */
export function strayTemps(dir: string): string[] {
  return [...snapshot(dir).keys()].filter((k) => path.basename(k).startsWith('.vunify-tmp'));
}

export function lsattrHasImmutable(file: string): boolean {
  const r = spawnSync('lsattr', ['-d', file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`lsattr ${file}: ${r.stderr}`);
  return r.stdout.split(/\s+/)[0].includes('i');
}

/**
 * An lsattr sweep of every regular file below dir (one lsattr call): shared inodes (more than
 * one link) without the immutable attribute, and lone files with it.
 */
export function attributeSweep(dir: string): { writableShared: string[]; loneImmutable: string[] } {
  const files = [...snapshot(dir)].filter(([, s]) => s.type === 'file');
  const out = { writableShared: [] as string[], loneImmutable: [] as string[] };
  if (files.length === 0) return out;
  const r = spawnSync('lsattr', ['-d', '--', ...files.map(([rel]) => path.join(dir, rel))], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`lsattr: ${r.stderr}`);
  const lines = r.stdout.split('\n').filter(Boolean);
  if (lines.length !== files.length) throw new Error(`lsattr: ${lines.length} lines for ${files.length} files`);
  files.forEach(([rel, s], i) => {
    const imm = lines[i].split(/\s+/)[0].includes('i');
    if (s.nlink > 1n && !imm) out.writableShared.push(rel);
    if (s.nlink === 1n && imm) out.loneImmutable.push(rel);
  });
  return out;
}
