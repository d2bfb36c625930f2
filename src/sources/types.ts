import type { RelPath } from '../fsx/rootdir.js';

/** One file of an installed package, as the package database lists it. */
export interface PackageFile {
  path: RelPath; // relative to the root, no leading slash
  config: boolean;
  ghost: boolean;
}

export interface InstalledPackage {
  name: string;
  /** epoch:version-release (rpm) or version (dpkg). */
  version: string;
  arch: string;
  files: PackageFile[];
}

export interface PackageListing {
  /** Installed packages; a name may appear twice (multilib). */
  packages: InstalledPackage[];
  /** Requested names that are not installed. */
  missing: string[];
  /** Listed paths that are not plain relative paths (".." and the like): never used. */
  rejectedPaths: number;
}

export interface SourceInputs { folders: RelPath[]; files: RelPath[] }

/** A package database of one root, read without changing the root. */
export interface PackageSource {
  readonly kind: 'rpm' | 'dpkg';
  /** Where the database lives below the root, for messages. */
  readonly location: string;
  /**
   * What decides what list() gives (for the quick rescan): folders whose listings and
   * regular files count, and single files (present or absent). Caches a reader rewrites,
   * such as SQLite's -shm, stay out: a query inside a vserver must not void it.
   */
  readonly inputs: SourceInputs;
  list(names: string[] | 'all'): Promise<PackageListing>;
}
