// Where things are by default, and how a server token names a root folder.
import path from 'node:path';

export const DEFAULT_VSERVERS_DIR = '/vservers';
// The index's default path and the lock folder are on-disk names: store/names.ts.
export { DEFAULT_DB, DEFAULT_LOCK_DIR, lockDir } from './store/names.js';

/** A server is a name under the vservers folder, or a path (anything with a slash). */
export function serverPath(token: string, vserversDir: string): string {
  return token.includes('/') ? path.resolve(token) : path.join(vserversDir, token);
}
