// A root's candidates (path -> Owned) as the run keeps them from the walk or the package
// database to the end: one sorted array of paths and one small number per path (which of
// the root's few distinct Owned values it has), not a Map. A Map costs about 37 bytes an
// entry (37 MB at 1,000,000 files, held all run); this costs about 12. Pure.
import type { RelPath } from './fsx/rootdir.js';
import type { Owned, OwnedPaths } from './model.js';

const GONE = -1;

export class OwnedTable implements OwnedPaths {
  private readonly paths: RelPath[];
  private readonly kinds: Int32Array;
  private readonly values: Owned[];
  private count: number;
  /** Where the last lookup ended: runs ask in path order, mostly, so the next is often next. */
  private finger = 0;

  /** `sorted` must be sorted (the `<` order) and without repeats; it is kept, not copied. */
  private constructor(sorted: RelPath[], kinds: Int32Array, values: Owned[]) {
    this.paths = sorted;
    this.kinds = kinds;
    this.values = values;
    this.count = sorted.length;
  }

  /** From paths in ascending order, each with its Owned (equal values are shared). */
  static sorted(paths: RelPath[], ownedOf: (k: RelPath, i: number) => Owned): OwnedTable {
    const kinds = new Int32Array(paths.length);
    const values: Owned[] = [];
    const byValue = new Map<string, number>();
    for (let i = 0; i < paths.length; i++) {
      if (i > 0 && !(paths[i - 1] < paths[i])) {
        throw new RangeError(`OwnedTable: ${JSON.stringify(paths[i])} ${paths[i - 1] === paths[i] ? 'twice' : 'not in order'}`);
      }
      const o = ownedOf(paths[i], i);
      const key = `${o.config ? 1 : 0}${o.pkg}`;
      let kind = byValue.get(key);
      if (kind === undefined) {
        kind = values.length;
        values.push(Object.freeze({ pkg: o.pkg, config: o.config }));
        byValue.set(key, kind);
      }
      kinds[i] = kind;
    }
    return new OwnedTable(paths, kinds, values);
  }

  /** From any entries (a Map while a package listing is read). */
  static of(entries: Iterable<[RelPath, Owned]>): OwnedTable {
    const all = [...entries].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    return OwnedTable.sorted(all.map(([k]) => k), (_k, i) => all[i][1]);
  }

  get size(): number {
    return this.count;
  }

  private find(k: RelPath): number {
    const a = this.paths;
    const f = this.finger;
    if (a[f] === k) return f;
    if (a[f + 1] === k) return (this.finger = f + 1);
    let lo = 0;
    let hi = a.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const v = a[mid];
      if (v === k) return (this.finger = mid);
      if (v < k) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  get(k: RelPath): Owned | undefined {
    const i = this.find(k);
    return i < 0 || this.kinds[i] === GONE ? undefined : this.values[this.kinds[i]];
  }

  has(k: RelPath): boolean {
    const i = this.find(k);
    return i >= 0 && this.kinds[i] !== GONE;
  }

  delete(k: RelPath): boolean {
    const i = this.find(k);
    if (i < 0 || this.kinds[i] === GONE) return false;
    this.kinds[i] = GONE;
    this.count--;
    return true;
  }

  *keys(): IterableIterator<RelPath> {
    for (let i = 0; i < this.paths.length; i++) if (this.kinds[i] !== GONE) yield this.paths[i];
  }

  *[Symbol.iterator](): IterableIterator<[RelPath, Owned]> {
    for (let i = 0; i < this.paths.length; i++) if (this.kinds[i] !== GONE) yield [this.paths[i], this.values[this.kinds[i]]];
  }
}
