// What a test file needs from the machine (tools, root, a Debian mirror). When something is
// missing, its tests are skipped with one line saying what, except in CI (CI=true): there the
// file fails, with that line, so CI can never go green without them. .ci/run installs them.
import { spawnSync } from 'node:child_process';
import { it } from 'vitest';

export const has = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
export const isRoot = process.getuid?.() === 0;
const inCI = !!process.env.CI && process.env.CI !== 'false' && process.env.CI !== '0';

/**
 * True when the tests that need these must be skipped. Each need is a name and whether it is
 * there. Outside CI a missing one prints one line; in CI it registers a test that fails with it.
 */
export function missing(file: string, needs: Record<string, boolean>): boolean {
  const lacking = Object.entries(needs).filter(([, ok]) => !ok).map(([what]) => what);
  if (lacking.length === 0) return false;
  const line = `${file}: cannot run without ${lacking.join(', ')} (.ci/run installs or checks them)`;
  if (inCI) {
    it('has what it needs on this machine', () => { throw new Error(line); });
  } else {
    process.stderr.write(`${line}: skipped\n`);
  }
  return true;
}
