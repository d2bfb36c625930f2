// README's "Install on a host" works as written (issue 17 item 4): in a clean clone (the
// files git has or would take; no node_modules, no dist/) its commands build the tarball and
// install it into a prefix with its dependencies, without one npm warning, and the installed
// vunify runs from there: --version, a small unify, verify and undo.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTreeRoots, removeTree } from './helpers/treefarm.js';

const repo = fileURLToPath(new URL('..', import.meta.url));
const pkg = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')) as { version: string };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-install-'));
afterAll(() => removeTree(tmp));

/** The shell lines of the README section's code block, comments left out. */
function installCommands(): string[] {
  const readme = fs.readFileSync(path.join(repo, 'README.md'), 'utf8');
  const block = /^## Install on a host\n[^]*?^```sh\n([^]*?)^```/m.exec(readme)?.[1] ?? '';
  return block.split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter(Boolean);
}

describe('Install on a host (README)', () => {
  it('builds, packs and installs without warnings, and the installed vunify runs', () => {
    const commands = installCommands();
    expect(commands.some((c) => c.includes('npm pack')), 'README: a section "Install on a host" with npm pack').toBe(true);
    expect(commands.some((c) => c.includes('npm install -g')), 'README: npm install -g').toBe(true);

    const clone = path.join(tmp, 'clone');
    const files = execFileSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: repo, encoding: 'utf8' });
    for (const f of files.split('\0').filter(Boolean)) {
      if (/^(node_modules|dist)(\/|$)/.test(f)) continue; // a worktree may link them in
      if (fs.existsSync(path.join(repo, f))) fs.cpSync(path.join(repo, f), path.join(clone, f));
    }

    // npm's own variables (when run under `npm test`) would point the inner npm at this repo.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
    const prefix = path.join(tmp, 'prefix');
    Object.assign(env, { npm_config_prefix: prefix, npm_config_prefer_offline: 'true', npm_config_update_notifier: 'false' });
    for (const command of commands) {
      const r = spawnSync('sh', ['-ec', command], { cwd: clone, env, encoding: 'utf8' });
      expect(r.status, `${command}: ${r.stderr}`).toBe(0);
      expect(r.stdout + r.stderr, command).not.toMatch(/npm (warn|WARN)/);
    }

    const bin = path.join(prefix, 'bin/vunify');
    const run = (...args: string[]) => spawnSync(bin, args, { cwd: tmp, encoding: 'utf8' });
    const v = run('--version');
    expect([v.status, v.stdout.trim()], v.stderr).toEqual([0, pkg.version]);
    expect(fs.existsSync(path.join(prefix, 'lib/node_modules/vunify/completion/vunify.bash'))).toBe(true);

    const farm = path.join(tmp, 'farm');
    makeTreeRoots(farm, ['a', 'b'], 3);
    const db = ['--db', path.join(tmp, 'index')];
    const opts = ['--vservers-dir', farm, ...db];
    const ino = (root: string) => fs.statSync(path.join(farm, root, 'usr/share/t/f1')).ino;
    const unify = run('--all-files', ...opts, 'a', 'b');
    expect(unify.status, unify.stderr).toBe(0);
    expect(ino('b')).toBe(ino('a'));
    const verify = run('verify', ...db);
    expect(verify.status, verify.stderr).toBe(0);
    const undo = run('undo', '--all-files', ...opts, 'a', 'b');
    expect(undo.status, undo.stderr).toBe(0);
    expect(ino('b')).not.toBe(ino('a'));
  }, 300_000);
});
