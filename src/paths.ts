// Where things are by default, and how a server token names a root folder.
import path from 'node:path';

export const DEFAULT_VSERVERS_DIR = '/vservers';
export const DEFAULT_DB = '/var/lib/vunify/index';

/** A server is a name under the vservers folder, or a path (anything with a slash). */
export function serverPath(token: string, vserversDir: string): string {
  return token.includes('/') ? path.resolve(token) : path.join(vserversDir, token);
}

/** Per-root run locks: on the host, where no vserver reaches (VUNIFY_LOCK_DIR for tests). */
export const DEFAULT_LOCK_DIR = '/run/vunify/locks';
export const lockDir = (): string => process.env.VUNIFY_LOCK_DIR || DEFAULT_LOCK_DIR;

/** The pool's folder in the vservers folder, unless --pool-dir says otherwise. */
export const POOL_DIR_NAME = '.vunify-pool';

/** The pool folder's absolute path, or null without --pool (--pool-dir implies it). */
export function poolDirOf(opts: { pool?: boolean; poolDir?: string; vserversDir?: string }): string | null {
  if (!opts.pool && opts.poolDir === undefined) return null;
  return path.resolve(opts.poolDir ?? path.join(opts.vserversDir ?? DEFAULT_VSERVERS_DIR, POOL_DIR_NAME));
}
