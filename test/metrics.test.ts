// --metrics FILE (issue 20): the Prometheus text exposition format for node_exporter's textfile
// collector, on a real RPM farm. The file is read with a strict line grammar (every line a
// HELP, a TYPE or a sample `vunify_…{labels} value` of the family just announced), and its
// values are held to the JSON report of the same run.
import fs from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeRpmFarm, removeFarm, type Farm } from './builders/rpmfarm.js';
import { vunify } from './helpers/tree.js';

const PKGS = ['vu-base', 'vu-extra'];
const SERVERS = ['s1', 's2', 's3'];
const REASONS = ['config', 'packageMissing', 'notInReference', 'missing', 'notRegular', 'symlinkInPath', 'empty', 'otherFilesystem',
  'contentDiffers', 'metadataDiffers', 'immutable', 'appendOnly', 'inUse', 'otherNames', 'linkLimit', 'changed', 'error'];

let farm: Farm;
let env: NodeJS.ProcessEnv;
let dir: string;

interface Sample { labels: Record<string, string>; value: number }
interface Family { help: string; type: string; samples: Sample[] }

const NAME = 'vunify_[a-z][a-z0-9_]*';
const LABEL = '[a-z_][a-z0-9_]*="(?:[^"\\\\\\n]|\\\\["\\\\n])*"';
const SAMPLE = new RegExp(`^(${NAME})\\{(${LABEL}(?:,${LABEL})*)\\} (-?[0-9]+(?:\\.[0-9]+)?)$`);

/** The exposition text, strictly: HELP, then TYPE, then the family's samples, each family once. */
function parse(text: string): Map<string, Family> {
  const lines = text.split('\n');
  expect(lines.pop(), 'ends with a newline').toBe('');
  const out = new Map<string, Family>();
  let cur: Family | null = null;
  let curName = '';
  for (const line of lines) {
    let m = new RegExp(`^# HELP (${NAME}) (\\S.*)$`).exec(line);
    if (m) {
      expect(out.has(m[1]), `${m[1]} announced once`).toBe(false);
      cur = { help: m[2], type: '', samples: [] };
      curName = m[1];
      out.set(m[1], cur);
      continue;
    }
    m = new RegExp(`^# TYPE (${NAME}) (gauge|counter)$`).exec(line);
    if (m) {
      expect([m[1], cur?.type, cur?.samples.length], line).toEqual([curName, '', 0]);
      cur!.type = m[2];
      continue;
    }
    m = SAMPLE.exec(line);
    expect(m, `a sample line: ${JSON.stringify(line)}`).not.toBeNull();
    expect(m![1], `${line}: of the family announced`).toBe(curName);
    expect(cur!.type, `${line}: after its TYPE`).not.toBe('');
    const labels = Object.fromEntries([...m![2].matchAll(/([a-z_][a-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2].replace(/\\(.)/g, (_x, c: string) => (c === 'n' ? '\n' : c))]));
    expect(cur!.samples.some((s) => JSON.stringify(s.labels) === JSON.stringify(labels)), `${line}: one sample per label set`).toBe(false);
    cur!.samples.push({ labels, value: Number(m![3]) });
  }
  for (const [name, f] of out) {
    // Prometheus naming: counters end in _total, units are in the name and nothing else says them.
    if (f.type === 'counter') expect(name).toMatch(/_total$/);
    expect(name).not.toMatch(/_(bytes|seconds)_/);
  }
  return out;
}

function reader(file: string) {
  const fams = parse(fs.readFileSync(file, 'utf8'));
  const value = (name: string, labels: Record<string, string>) => {
    const f = fams.get(name);
    expect(f, name).toBeDefined();
    const s = f!.samples.filter((x) => JSON.stringify(Object.entries(x.labels).sort()) === JSON.stringify(Object.entries(labels).sort()));
    expect(s, `${name}${JSON.stringify(labels)}`).toHaveLength(1);
    return s[0].value;
  };
  return { fams, value };
}

const run = (...args: string[]) => vunify(args, env);

beforeAll(async () => {
  farm = await makeRpmFarm();
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: path.join(farm.base, 'index') };
  dir = path.join(farm.base, 'textfile');
  fs.mkdirSync(dir);
  fs.appendFileSync(path.join(farm.root('s2'), 'usr/share/vu-extra/b.txt'), 'local change\n');
  fs.chmodSync(path.join(farm.root('s2'), 'usr/share/doc/vu-base/README'), 0o600);
});

afterAll(async () => {
  if (farm) await removeFarm(farm);
});

/** Each run report counter, in total and per server, as the JSON report has it. */
function expectRunReport(file: string, command: string, rep: Record<string, any>, exitCode: number, t0: number, t1: number): void {
  const { value } = reader(file);
  const c = { command };
  expect(value('vunify_last_run_exit_code', c)).toBe(exitCode);
  const start = value('vunify_last_run_start_timestamp_seconds', c);
  const took = value('vunify_last_run_duration_seconds', c);
  expect(start * 1000).toBeGreaterThanOrEqual(t0 - 1);
  expect((start + took) * 1000).toBeLessThanOrEqual(t1 + 1);
  expect(took * 1000).toBeGreaterThanOrEqual(rep.durationMs - 1);
  const pairs: Array<[string, string]> = [
    ['files_unified', 'unified'], ['files_already_unified', 'alreadyUnified'], ['files_restored', 'restored'],
    ['saved_apparent_bytes', 'bytesSaved'], ['saved_disk_bytes', 'diskSaved'],
  ];
  for (const [metric, field] of pairs) {
    expect(value(`vunify_${metric}`, c), metric).toBe(rep.totals[field]);
    for (const s of SERVERS) expect(value(`vunify_server_${metric}`, { ...c, server: s }), `${metric} ${s}`).toBe(rep.servers[s][field]);
  }
  for (const reason of REASONS) {
    expect(value('vunify_files_skipped', { ...c, reason }), reason).toBe(rep.totals.skipped[reason]);
    for (const s of SERVERS) expect(value('vunify_server_files_skipped', { ...c, server: s, reason })).toBe(rep.servers[s].skipped[reason]);
  }
  expect(value('vunify_files_read', c)).toBe(rep.totals.filesHashed);
  expect(value('vunify_read_bytes', c)).toBe(rep.totals.bytesHashed);
  expect(value('vunify_errors', c)).toBe(rep.errors.length);
}

function timed(...args: string[]) {
  const t0 = Date.now();
  const r = run(...args);
  return { r, t0, t1: Date.now() };
}

describe('--metrics on a real RPM farm', () => {
  it('plan and unify write the report\'s counters, per server and in total, atomically', () => {
    const file = path.join(dir, 'vunify.prom');
    for (const command of ['plan', 'unify']) {
      const { r, t0, t1 } = timed(command, '--json', '--metrics', file, 'ref', ...SERVERS, '--', ...PKGS);
      expect(r.status, r.stderr).toBe(0);
      const rep = JSON.parse(r.stdout);
      expect(rep.totals.unified).toBeGreaterThan(20);
      expect(rep.totals.diskSaved).toBeGreaterThan(0);
      expectRunReport(file, command, rep, 0, t0, t1);
      expect(fs.readdirSync(dir)).toEqual(['vunify.prom']); // no temporary left beside it
    }
    expect(fs.statSync(file).mode & 0o777).toBe(0o644); // node_exporter runs as another user
  });

  it('scan writes its counters too', () => {
    const file = path.join(dir, 'scan.prom');
    const { r, t0, t1 } = timed('scan', '--json', '--metrics', file, 'ref', ...SERVERS, '--', ...PKGS);
    expect(r.status, r.stderr).toBe(0);
    expectRunReport(file, 'scan', JSON.parse(r.stdout), 0, t0, t1);
  });

  it('verify writes its drift count and exit code: none, then one', () => {
    const file = path.join(dir, 'verify.prom');
    let r = run('verify', '--json', '--metrics', file);
    expect(r.status, r.stderr).toBe(0);
    let m = reader(file);
    expect(m.value('vunify_verify_drifts', { command: 'verify' })).toBe(0);
    expect(m.value('vunify_last_run_exit_code', { command: 'verify' })).toBe(0);
    expect(m.value('vunify_verify_checked_links', { command: 'verify' })).toBe(JSON.parse(r.stdout).checked.links);
    const shared = path.join(farm.root('ref'), 'usr/share/vu/data.txt');
    expect(spawnSync('chattr', ['-i', shared]).status).toBe(0);
    try {
      r = run('verify', '--json', '--metrics', file);
      expect(r.status).toBe(1);
      const rep = JSON.parse(r.stdout);
      expect(rep.drifts.length).toBeGreaterThan(0);
      m = reader(file);
      expect(m.value('vunify_verify_drifts', { command: 'verify' })).toBe(rep.drifts.length);
      expect(m.value('vunify_last_run_exit_code', { command: 'verify' })).toBe(1);
    } finally {
      spawnSync('chattr', ['+i', shared]);
    }
  });

  it('report writes the index\'s savings, per server and in total', () => {
    const file = path.join(dir, 'report.prom');
    const r = run('report', '--json', '--metrics', file);
    expect(r.status, r.stderr).toBe(0);
    const rep = JSON.parse(r.stdout);
    const { value } = reader(file);
    const c = { command: 'report' };
    const pairs: Array<[string, string]> = [
      ['linked_files', 'linkedFiles'], ['saved_apparent_bytes', 'bytesSaved'], ['possible_files', 'possibleFiles'], ['possible_apparent_bytes', 'possibleBytes'],
    ];
    expect(rep.totals.linkedFiles).toBeGreaterThan(20);
    for (const [metric, field] of pairs) {
      expect(value(`vunify_index_${metric}`, c)).toBe(rep.totals[field]);
      for (const s of SERVERS) expect(value(`vunify_index_server_${metric}`, { ...c, server: s })).toBe(rep.servers[s][field]);
    }
  });

  it('a run that fails still writes its start, duration and exit code', () => {
    const file = path.join(dir, 'vunify.prom');
    const r = run('unify', '--metrics', file, 'ref', 'no-such-server', '--', ...PKGS);
    expect(r.status).toBe(2);
    const { fams, value } = reader(file);
    expect(value('vunify_last_run_exit_code', { command: 'unify' })).toBe(2);
    expect([...fams.keys()].sort()).toEqual(['vunify_last_run_duration_seconds', 'vunify_last_run_exit_code', 'vunify_last_run_start_timestamp_seconds']);
  });

  it('a metrics file that cannot be written is one line and exit 1, after the run', () => {
    const r = run('plan', '-q', '--metrics', path.join(dir, 'no-such-folder', 'x.prom'), 'ref', ...SERVERS, '--', ...PKGS);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^vunify: error: .*x\.prom: cannot write the metrics: ENOENT[^\n]*\n$/);
  });
});
