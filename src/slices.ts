// Slices: a first unify of a large farm goes through scan, hash, plan, apply and the report
// a few folders at a time, the same folders in every root at once, so what it holds in
// memory is one slice's records and decisions, not the farm's (issue 18). Pure: paths in,
// paths out.
import { splitRel, type RelPath } from './fsx/rootdir.js';

/**
 * Server candidate files per slice (VUNIFY_SLICE_FILES overrides it, for tests and the bench).
 * A first unify of 250,000 files peaked at 244 MB with 20,000 and at 193 MB with 10,000 (and
 * the CLI's 4 MB young generation), in the same time; 5,000 was 13% slower.
 */
export const SLICE_FILES = 10_000;

export interface Slice {
  /** The reference's candidates in the slice's folders (their packageMissing lines come with it). */
  refPaths: RelPath[];
  /** Per server (in the order given), its candidates in the slice's folders. */
  serverPaths: RelPath[][];
}

export function sliceFiles(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number(env.VUNIFY_SLICE_FILES);
  return Number.isInteger(n) && n > 0 ? n : SLICE_FILES;
}

/**
 * Cuts the candidates into slices of whole folders, in folder order, each holding about
 * `size` server files (a folder is never split: one folder of more files is one slice).
 */
export function cutSlices(refPaths: RelPath[], serverPaths: RelPath[][], size: number): Slice[] {
  const weight = new Map<RelPath, number>();
  const folderOf = (k: RelPath) => splitRel(k).dir;
  for (const k of refPaths) { const d = folderOf(k); weight.set(d, weight.get(d) ?? 0); }
  for (const paths of serverPaths) for (const k of paths) { const d = folderOf(k); weight.set(d, (weight.get(d) ?? 0) + 1); }
  const sliceOf = new Map<RelPath, number>();
  let n = 0;
  let filled = 0;
  for (const d of [...weight.keys()].sort()) {
    if (filled > 0 && filled + weight.get(d)! > size) { n++; filled = 0; }
    sliceOf.set(d, n);
    filled += weight.get(d)!;
  }
  const slices: Slice[] = Array.from({ length: weight.size ? n + 1 : 0 }, () => ({ refPaths: [], serverPaths: serverPaths.map(() => []) }));
  for (const k of refPaths) slices[sliceOf.get(folderOf(k))!].refPaths.push(k);
  serverPaths.forEach((paths, i) => { for (const k of paths) slices[sliceOf.get(folderOf(k))!].serverPaths[i].push(k); });
  return slices;
}
