// docs/cli.md stays a full reference: every command and every option of the commander
// program must appear in it. CSV output is checked on a small real tree farm.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildProgram, commandFirst } from '../src/cli-program.js';
import { clearImmutableTree } from '../src/testing/rpmfarm.js';
import { vunify } from './helpers/tree.js';

const doc = fs.readFileSync(new URL('../docs/cli.md', import.meta.url), 'utf8');
const program = buildProgram([], () => {});

describe('docs/cli.md', () => {
  for (const cmd of program.commands) {
    it(`documents the ${cmd.name()} command and each of its options`, () => {
      expect(doc).toContain(`vunify ${cmd.name()}`);
      for (const opt of cmd.options) {
        const flag = opt.long ?? opt.short!;
        expect(doc, `${cmd.name()} ${flag}`).toContain(`\`${flag}`);
      }
    });
  }
  it('lists every exit code the errors use', () => {
    for (const code of [0, 1, 2, 3, 4]) expect(doc).toMatch(new RegExp(`^\\| ${code} \\|`, 'm'));
  });
});

describe('the command line', () => {
  it('lets options stand before the command', () => {
    expect(commandFirst(['-q', '--db', 'x', 'undo', 'ref', 's1'])).toEqual(['undo', '-q', '--db', 'x', 'ref', 's1']);
    expect(commandFirst(['--db', 'undo', 'ref', 's1'])).toEqual(['--db', 'undo', 'ref', 's1']); // a value, not a command
    expect(commandFirst(['ref', 'scan'])).toEqual(['ref', 'scan']); // a server named like a command
  });

  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-csv-'));
  afterAll(() => { clearImmutableTree(base); fs.rmSync(base, { recursive: true, force: true }); });
  it('prints CSV reports, per server and per file', () => {
    for (const t of ['a', 'b']) {
      fs.mkdirSync(path.join(base, t, 'usr/x'), { recursive: true });
      fs.writeFileSync(path.join(base, t, 'usr/x/same, "quoted"'), 'same\n');
      fs.writeFileSync(path.join(base, t, 'usr/x/own'), `own ${t}\n`);
      for (const f of ['same, "quoted"', 'own']) fs.utimesSync(path.join(base, t, 'usr/x', f), 1_700_000_000, 1_700_000_000);
    }
    const env = { VUNIFY_VSERVERS_DIR: base, VUNIFY_DB: path.join(base, 'index') };
    const plan = vunify(['plan', '--csv', '--all-files', 'a', 'b'], env);
    expect(plan.status, plan.stderr).toBe(0);
    const [head, row, total] = plan.stdout.split('\r\n');
    expect(head.split(',').slice(0, 3)).toEqual(['server', 'unified', 'alreadyUnified']);
    expect(row.split(',').slice(0, 2)).toEqual(['b', '1']);
    expect(total.split(',').slice(0, 2)).toEqual(['total', '1']);
    const files = vunify(['unify', '--csv', '-vv', '--all-files', 'a', 'b'], env);
    expect(files.stdout).toContain('b,linked,"/usr/x/same, ""quoted""",\r\n');
    expect(files.stdout).toContain('b,skip:contentDiffers,/usr/x/own,');
    expect(vunify(['unify', '--csv', '--json', '--all-files', 'a', 'b'], env).status).toBe(2);
  });
});
