// A reviewed plan, applied as reviewed (issue 20): `plan --save FILE` writes every decision,
// `apply FILE` carries out exactly its link decisions, each checked again, on a real RPM farm.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeRpmFarm, removeFarm, type Farm } from './builders/rpmfarm.js';
import { lsattrHasImmutable, snapshot, vunify } from './helpers/tree.js';

const PKGS = ['vu-base', 'vu-extra'];
const SERVERS = ['s1', 's2', 's3'];
const CHANGED = 'usr/share/vu/data.txt'; // in s1, after the plan
const HEALED = 'usr/share/vu-extra/b.txt'; // in s2: differs at plan time, identical after it

let farm: Farm;
let env: NodeJS.ProcessEnv;
let planFile: string;
let plan: PlanDoc;
let links: Array<{ server: string; path: string; refPath: string }>;

interface PlanDoc {
  format: string; version: number;
  index: { path: string; dev: string; ino: string };
  options: Record<string, unknown>;
  roots: Array<{ role: string; name: string; path: string; dev: string; ino: string }>;
  decisions: Array<{ server: string; path: string; action: string; refPath?: string; reason?: string; hash?: string; ref?: Record<string, unknown>; srv?: Record<string, unknown> }>;
}

const root = (s: string) => farm.root(s);
const run = (...args: string[]) => vunify(args, env);
const snapAll = () => new Map(['ref', ...SERVERS].map((s) => [s, snapshot(root(s))]));
const json = (r: { status: number; stdout: string; stderr: string }) => {
  expect(r.status, r.stderr).toBeLessThan(2);
  return JSON.parse(r.stdout);
};
/** A refusal: exit 2, one line on stderr, nothing printed on stdout. */
const refused = (r: { status: number; stdout: string; stderr: string }, why: RegExp) => {
  expect(r.status, r.stderr).toBe(2);
  expect(r.stderr).toMatch(/^vunify: error: [^\n]+\n$/);
  expect(r.stderr).toMatch(why);
  expect(r.stdout).toBe('');
};

beforeAll(async () => {
  farm = await makeRpmFarm();
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: path.join(farm.base, 'index') };
  planFile = path.join(farm.base, 'reviewed.plan.json');
  fs.appendFileSync(path.join(root('s2'), HEALED), 'local change\n');
});

afterAll(async () => {
  if (farm) await removeFarm(farm);
});

describe('plan --save and apply on a real RPM farm', () => {
  it('plan --save writes every decision, with the roots, the index and both sides\' signatures', () => {
    const rep = json(run('plan', '--save', planFile, '--json', 'ref', ...SERVERS, '--', ...PKGS));
    plan = JSON.parse(fs.readFileSync(planFile, 'utf8'));
    expect(plan.format).toBe('vunify-plan');
    expect(plan.version).toBe(1);
    expect(fs.readdirSync(farm.base).filter((n) => n.includes('.tmp'))).toEqual([]); // written by rename
    const idx = fs.statSync(path.join(farm.base, 'index'));
    const data = idx.isDirectory() ? fs.statSync(path.join(farm.base, 'index', 'data.mdb')) : idx;
    expect(plan.index).toEqual({ path: path.join(farm.base, 'index'), dev: String(data.dev), ino: String(data.ino) });
    expect(plan.options).toMatchObject({ reference: 'ref', servers: SERVERS, packages: PKGS, vserversDir: farm.vserversDir });
    expect(plan.roots.map((r) => [r.role, r.name, r.path])).toEqual([['reference', 'ref', root('ref')], ...SERVERS.map((s) => ['server', s, root(s)])]);
    for (const r of plan.roots) {
      const st = fs.statSync(r.path);
      expect([r.dev, r.ino]).toEqual([String(st.dev), String(st.ino)]);
    }
    links = plan.decisions.filter((d) => d.action === 'link').map((d) => ({ server: d.server, path: d.path.slice(1), refPath: d.refPath!.slice(1) }));
    for (const s of SERVERS) {
      expect(links.filter((l) => l.server === s)).toHaveLength(rep.servers[s].unified);
      const skips = plan.decisions.filter((d) => d.server === s && d.action === 'skip');
      expect(skips.length).toBe(Object.values(rep.servers[s].skipped as Record<string, number>).reduce((a, b) => a + b, 0));
      expect(skips.every((d) => typeof d.reason === 'string')).toBe(true);
    }
    expect(plan.decisions).toContainEqual(expect.objectContaining({ server: 's2', path: `/${HEALED}`, action: 'skip', reason: 'contentDiffers' }));
    const l = plan.decisions.find((d) => d.server === 's1' && d.path === `/${CHANGED}`)!;
    expect(l.action).toBe('link');
    const st = fs.lstatSync(path.join(root('s1'), CHANGED), { bigint: true });
    const rst = fs.lstatSync(path.join(root('ref'), CHANGED), { bigint: true });
    expect(l.srv).toMatchObject({ dev: String(st.dev), ino: String(st.ino), size: Number(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs) });
    expect(l.ref).toMatchObject({ dev: String(rst.dev), ino: String(rst.ino), size: Number(rst.size), mtimeNs: String(rst.mtimeNs) });
    expect(l.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(links.length).toBeGreaterThan(20);
  });

  it('refuses a plan made from a copy of the farm at other paths, changing nothing in either', () => {
    const copy = path.join(farm.base, 'copy');
    fs.mkdirSync(copy);
    for (const s of ['ref', ...SERVERS]) expect(spawnSync('cp', ['-a', root(s), path.join(copy, s)]).status).toBe(0);
    const copyPlan = path.join(farm.base, 'copy.plan.json');
    expect(run('plan', '--save', copyPlan, '-q', '--vservers-dir', copy, 'ref', ...SERVERS, '--', ...PKGS).status).toBe(0);
    const copyBefore = snapshot(copy);
    const before = snapAll(); // cp moved atimes
    refused(run('apply', copyPlan), /the plan was made for .*\/copy\/ref, not this farm's .*\/vservers\/ref/);
    expect(snapAll()).toEqual(before);
    expect(snapshot(copy)).toEqual(copyBefore);
    fs.rmSync(copy, { recursive: true });
  });

  it('refuses another index, options that no longer parse, and a root that is another folder at the same path', () => {
    const before = snapAll();
    refused(run('apply', '--db', path.join(farm.base, 'other-index'), planFile), /made with the index .*\/index, not .*other-index; make a new plan/);
    expect(fs.existsSync(path.join(farm.base, 'other-index'))).toBe(false);
    const edited = path.join(farm.base, 'edited.plan.json');
    const edit = (f: (p: PlanDoc) => void) => {
      const p = structuredClone(plan);
      f(p);
      fs.writeFileSync(edited, JSON.stringify(p));
      return run('apply', edited);
    };
    refused(edit((p) => { p.options.packageManager = 'yum'; }), /options no longer parse: packageManager "yum"/);
    refused(edit((p) => { p.options.method = 'copy'; }), /options no longer parse: unknown option "method"/);
    refused(edit((p) => { p.version = 2; }), /plan format version 2 is not the supported 1/);
    refused(edit((p) => { delete p.decisions[0].server; }), /decision 1: server/);
    fs.writeFileSync(edited, '{"decisions": [');
    refused(run('apply', edited), /not a plan file/);
    expect(snapAll()).toEqual(before);
    const s3 = root('s3');
    fs.renameSync(s3, `${s3}.away`);
    try {
      expect(spawnSync('cp', ['-a', `${s3}.away`, s3]).status).toBe(0);
      const copied = snapAll();
      copied.set('s3.away', snapshot(`${s3}.away`));
      refused(run('apply', planFile), /s3: is another folder than when the plan was made/);
      expect(new Map([...snapAll(), ['s3.away', snapshot(`${s3}.away`)]])).toEqual(copied);
    } finally {
      fs.rmSync(s3, { recursive: true });
      fs.renameSync(`${s3}.away`, s3);
    }
  });

  it('apply --dry-run shows what still applies; a file changed since the plan does not, and nothing changes', () => {
    // Same size and mtime, other bytes: only its ctime tells (and then the bytes).
    const f = path.join(root('s1'), CHANGED);
    const st = fs.statSync(f);
    const text = fs.readFileSync(f, 'latin1');
    fs.writeFileSync(f, text.slice(0, -2) + 'X\n', 'latin1');
    fs.utimesSync(f, st.atime, st.mtime);
    // A file the plan left private becomes identical: unify would link it now, apply must not.
    const ref = path.join(root('ref'), HEALED);
    fs.copyFileSync(ref, path.join(root('s2'), HEALED));
    const rst = fs.statSync(ref);
    fs.utimesSync(path.join(root('s2'), HEALED), rst.atime, rst.mtime);
    const before = snapAll();
    const rep = json(run('apply', '--dry-run', '--json', '-v', planFile));
    expect(rep.command).toBe('apply');
    expect(rep.dryRun).toBe(true);
    expect(rep.totals.unified).toBe(links.length - 1);
    expect(rep.totals.skipped.changed).toBe(1);
    expect(rep.files).toContainEqual({ server: 's1', path: `/${CHANGED}`, action: 'skip:changed', detail: 'not as planned' });
    expect(snapAll()).toEqual(before);
    const now = json(run('plan', '--json', '--full', 'ref', ...SERVERS, '--', ...PKGS));
    expect(now.servers.s2.unified).toBe(links.filter((l) => l.server === 's2').length + 1); // the healed file
  });

  it('apply links every planned file but the changed one, which stays private; nothing else changes', () => {
    const before = snapAll();
    const r = run('apply', '--json', '-v', planFile);
    const rep = json(r);
    expect(r.status, r.stderr).toBe(0);
    expect(rep.command).toBe('apply');
    expect(rep.totals.unified).toBe(links.length - 1);
    expect(rep.servers.s1.skipped.changed).toBe(1);
    expect(rep.files).toContainEqual(expect.objectContaining({ server: 's1', path: `/${CHANGED}`, action: 'skip:changed' }));
    expect(rep.errors).toEqual([]);
    const after = snapAll();
    const linked = new Set(links.filter((l) => !(l.server === 's1' && l.path === CHANGED)).map((l) => `${l.server}:${l.path}`));
    const refShared = new Set(links.map((l) => l.refPath));
    for (const l of links) {
      const a = after.get(l.server)!.get(l.path)!;
      const b = before.get(l.server)!.get(l.path)!;
      if (!linked.has(`${l.server}:${l.path}`)) continue;
      expect(a.ino, `${l.server}:${l.path}`).toBe(after.get('ref')!.get(l.refPath)!.ino);
      expect({ ...a, ino: 0n, nlink: 0n, ctimeNs: 0n, atimeNs: 0n }).toEqual({ ...b, ino: 0n, nlink: 0n, ctimeNs: 0n, atimeNs: 0n });
    }
    // The changed file: its own inode and bytes.
    expect(after.get('s1')!.get(CHANGED)).toEqual(before.get('s1')!.get(CHANGED));
    expect(after.get('s1')!.get(CHANGED)!.nlink).toBe(1n);
    // Everything else is as it was: the healed file, config files, every file not planned.
    for (const s of ['ref', ...SERVERS]) {
      for (const [k, b] of before.get(s)!) {
        if (linked.has(`${s}:${k}`)) continue;
        const a = after.get(s)!.get(k)!;
        if (b.type === 'dir') expect({ ...a, ctimeNs: 0n, atimeNs: 0n }, `${s}:${k}`).toEqual({ ...b, ctimeNs: 0n, atimeNs: 0n });
        else if (s === 'ref' && refShared.has(k)) expect({ ...a, nlink: 0n, ctimeNs: 0n }, `${s}:${k}`).toEqual({ ...b, nlink: 0n, ctimeNs: 0n });
        else expect(a, `${s}:${k}`).toEqual(b);
      }
      expect([...after.get(s)!.keys()].sort()).toEqual([...before.get(s)!.keys()].sort());
    }
    expect(after.get('s2')!.get(HEALED)!.nlink).toBe(1n);
    for (const k of refShared) expect(lsattrHasImmutable(path.join(root('ref'), k)), k).toBe(true);
    // The same journal and records as unify: nothing left under way, verify finds the links intact.
    const v = json(run('verify', '--json'));
    expect(v.drifts).toEqual([]);
    expect(v.checked.links).toBe(links.length - 1);
  });

  it('apply twice: the second links nothing and changes nothing', () => {
    const before = snapAll();
    const rep = json(run('apply', '--json', planFile));
    expect(rep.totals.unified).toBe(0);
    expect(rep.totals.alreadyUnified).toBe(links.length - 1);
    expect(rep.totals.skipped.changed).toBe(1);
    expect(snapAll()).toEqual(before);
    const dry = json(run('apply', '--dry-run', '--json', planFile));
    expect([dry.totals.unified, dry.totals.alreadyUnified]).toEqual([0, links.length - 1]);
  });
});
