// docs/cli.md stays a full reference: every command and every option of the commander
// program must appear in it, each in its command's own "Options of" section. CSV output is checked on a small real tree farm.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildProgram, commandFirst } from '../src/cli-program.js';
import { clearImmutableTree } from './builders/rpmfarm.js';
import { vunify } from './helpers/tree.js';

const doc = fs.readFileSync(new URL('../docs/cli.md', import.meta.url), 'utf8');
const program = buildProgram([], () => {});

/** The "## Options of ..." sections of docs/cli.md: the commands each names, and its table's rows. */
const sections = [...doc.matchAll(/^## Options of (.+)\n([\s\S]*?)(?=^## |(?![\s\S]))/gm)].map((m) => ({
  commands: m[1].split(/, | and /).map((c) => c.trim()),
  rows: m[2].split('\n').filter((l) => /^\| `/.test(l)).map((l) => {
    const [, first, meaning] = l.split(/(?<!\\)\|/).map((c) => c.trim());
    return { flags: [...first.matchAll(/`(-[^\s`]+)/g)].map((f) => f[1]), meaning };
  }),
}));

describe('docs/cli.md', () => {
  for (const cmd of program.commands) {
    it(`documents the ${cmd.name()} command and each of its options, in the command's own section`, () => {
      expect(doc).toContain(`vunify ${cmd.name()}`);
      const own = sections.filter((s) => s.commands.includes(cmd.name()));
      expect(own, `a section "## Options of ... ${cmd.name()}"`).toHaveLength(1);
      const { commands, rows } = own[0];
      for (const opt of cmd.options) {
        const names = [opt.long, opt.short].filter((f): f is string => !!f);
        const row = rows.find((r) => r.flags.some((f) => names.includes(f)));
        expect(row, `${cmd.name()} ${names.join(', ')}: a row of its own section`).toBeDefined();
        // In a section shared by several commands, an option some of them lack says whose it is
        // ("unify only: ...", "unify and plan: ...").
        const having = commands.filter((c) => program.commands.find((x) => x.name() === c)!.options.some((o) => names.includes(o.long ?? o.short!)));
        if (having.length < commands.length) {
          const whose = /^([a-z]+(?:(?:, | and )[a-z]+)*)(?: only)?:/.exec(row!.meaning)?.[1].split(/, | and /);
          expect(whose?.sort(), `${names.join(', ')}: the row says which of ${commands.join(', ')} take it`).toEqual(having.sort());
        }
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

  // Made in beforeAll: a run filtered to other tests (-t) runs no hook here, and leaves nothing.
  let base = '';
  beforeAll(() => { base = fs.mkdtempSync(path.join(os.tmpdir(), 'vunify-csv-')); });
  afterAll(() => { if (!base) return; clearImmutableTree(base); fs.rmSync(base, { recursive: true, force: true }); });
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
