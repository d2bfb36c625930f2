// Every command takes the common options (issue 17 item 3): scripts and systemd units pass
// the same ones to each command; those a command does not use are accepted and ignored.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { buildProgram } from '../src/cli-program.js';
import { makeTreeRoots, removeTree } from './helpers/treefarm.js';
import { vunify } from './helpers/tree.js';

const base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-opts-'));
afterAll(() => removeTree(base));
makeTreeRoots(base, ['ref', 's1'], 3);
const db = path.join(base, 'index');
const common = ['--vservers-dir', base, '--db', db, '--quiet', '-v'];
const servers = ['--all-files', 'ref', 's1'];
// unify first (the index-only commands then have links to read), undo last.
const commands: [string, string[]][] = [
  ['unify', servers], ['plan', servers], ['scan', servers],
  ['report', []], ['status', []], ['verify', []], ['gc', []], ['recover', []],
  ['undo', servers],
];

describe('the common options', () => {
  it('are taken by every command, after it, with --json', () => {
    for (const [cmd, args] of commands) {
      const r = vunify([cmd, ...common, '--json', ...args]);
      expect(r.stderr, cmd).not.toMatch(/unknown option/);
      expect(r.status, `${cmd}: ${r.stderr}`).toBe(0);
      expect(JSON.parse(r.stdout).command, cmd).toBe(cmd);
    }
  });

  it('are taken by every command, before it, without --json', () => {
    for (const [cmd, args] of commands) {
      const r = vunify([...common, cmd, ...args]);
      expect(r.stderr, cmd).not.toMatch(/unknown option/);
      expect(r.status, `${cmd}: ${r.stderr}`).toBe(0);
    }
  });

  it('-q leaves verify, gc and recover silent when all is well; status and report still print', () => {
    expect(vunify(['unify', ...common, ...servers]).status).toBe(0);
    for (const cmd of ['verify', 'gc', 'recover']) {
      const r = vunify([cmd, ...common]);
      expect([r.status, r.stdout, r.stderr], cmd).toEqual([0, '', '']);
    }
    expect(vunify(['status', ...common]).stdout).toContain('s1');
    expect(vunify(['report', ...common]).stdout).toContain('s1');
  });

  it('-q makes verify print its drifts only, one line each, on stderr', () => {
    const s1 = path.join(base, 's1');
    fs.renameSync(s1, `${s1}.away`);
    try {
      const r = vunify(['verify', ...common]);
      expect(r.status).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^(vunify: s1: \S+: .+\n)+$/);
      expect(r.stderr).toContain('vunify: s1: (root): root missing');
    } finally {
      fs.renameSync(`${s1}.away`, s1);
    }
  });
});

describe('completion/vunify.bash', () => {
  const file = fileURLToPath(new URL('../completion/vunify.bash', import.meta.url));
  for (const cmd of buildProgram([], () => {}).commands) {
    it(`offers every option of ${cmd.name()}`, () => {
      const script = `source "$1"; COMP_WORDS=(vunify ${cmd.name()} --); COMP_CWORD=2; _vunify; printf '%s\\n' "\${COMPREPLY[@]}"`;
      const r = spawnSync('bash', ['-c', script, 'bash', file], { encoding: 'utf8' });
      const offered = new Set(r.stdout.split('\n'));
      for (const opt of cmd.options) expect(offered, `${cmd.name()} ${opt.long}`).toContain(opt.long);
    });
  }
});

describe('docs/cli.md', () => {
  const sections = fs.readFileSync(new URL('../docs/cli.md', import.meta.url), 'utf8').split(/^## /m);
  for (const cmd of buildProgram([], () => {}).commands) {
    it(`lists every option of ${cmd.name()} in its own section`, () => {
      const own = sections.find((t) => new RegExp(`^Options of [^\\n]*\\b${cmd.name()}\\b`).test(t));
      expect(own, cmd.name()).toBeDefined();
      for (const opt of cmd.options) expect(own, `${cmd.name()} ${opt.long}`).toContain(`\`${opt.long}`);
    });
  }
});
