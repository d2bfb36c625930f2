// Where things are by default, and how a server token names a root folder.
import path from 'node:path';

export const DEFAULT_VSERVERS_DIR = '/vservers';
// The index's default path and the lock folder are on-disk names: store/names.ts.
export { DEFAULT_DB, DEFAULT_LOCK_DIR, POOL_DIR_NAME, lockDir } from './store/names.js';
import { POOL_DIR_NAME } from './store/names.js';

/** A server is a name under the vservers folder, or a path (anything with a slash). */
export function serverPath(token: string, vserversDir: string): string {
  return token.includes('/') ? path.resolve(token) : path.join(vserversDir, token);
}

/** The pool folder's absolute path, or null without --pool (--pool-dir implies it). */
export function poolDirOf(opts: { pool?: boolean; poolDir?: string; vserversDir?: string }): string | null {
  if (!opts.pool && opts.poolDir === undefined) return null;
  return path.resolve(opts.poolDir ?? path.join(opts.vserversDir ?? DEFAULT_VSERVERS_DIR, POOL_DIR_NAME));
}
