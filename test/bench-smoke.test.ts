// Smoke test of native-free-bench: the farm generator keeps its promises, and the runner works
// end to end on a tiny farm (peers skipped) and writes its JSON.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import * as farmLib from '../native-free-bench/farm.mjs';

const RUN = fileURLToPath(new URL('../native-free-bench/run.mjs', import.meta.url));
const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));

const temps: string[] = [];
function tempDir(prefix: string): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  temps.push(d);
  return d;
}

afterAll(() => {
  for (const d of temps) {
    spawnSync('chattr', ['-R', '-i', d], { stdio: 'ignore' });
    fs.rmSync(d, { recursive: true, force: true });
  }
});

// Small sizes so the farm is quick; enough files that every variant occurs.
const PARAMS = { servers: 3, filesPerServer: 400, largeMin: 64 * 1024, largeMax: 512 * 1024, largeFraction: 0.05, seed: 7 };

describe('native-free-bench farm generator', () => {
  it('writes identical, one-byte-different, mode, owner and unique variants as promised, deterministically', () => {
    const base = tempDir('vunify-benchfarm-');
    const p = farmLib.farmParams(PARAMS);
    const m = farmLib.writeFarm(path.join(base, 'a'), p);
    expect(m.files).toBe(3 * 400);
    const root = (s: number) => path.join(m.vserversDir, `s${s}`);
    const seen: Record<string, number> = { identical: 0, oneByte: 0, mode: 0, owner: 0, unique: 0 };
    for (let s = 1; s < p.servers; s++) {
      for (let i = 0; i < p.filesPerServer; i++) {
        const spec = farmLib.serverFileSpec(p, s, i);
        const refPath = path.join(root(0), spec.rel);
        const srvPath = path.join(root(s), spec.rel);
        expect(spec.rel.startsWith('usr/')).toBe(true);
        const a = fs.lstatSync(refPath);
        const b = fs.lstatSync(srvPath);
        const ca = fs.readFileSync(refPath);
        const cb = fs.readFileSync(srvPath);
        expect(b.ino).not.toBe(a.ino); // separate copies, nothing linked yet
        seen[spec.variant]++;
        switch (spec.variant) {
          case 'identical':
            expect(cb.equals(ca)).toBe(true);
            expect([b.mode, b.uid, b.gid, b.mtimeMs]).toEqual([a.mode, a.uid, a.gid, a.mtimeMs]);
            break;
          case 'oneByte': {
            expect(b.size).toBe(a.size);
            expect(b.mtimeMs).toBe(a.mtimeMs);
            let diffs = 0;
            for (let k = 0; k < ca.length; k++) if (ca[k] !== cb[k]) diffs++;
            expect(diffs).toBe(1);
            break;
          }
          case 'mode':
            expect(cb.equals(ca)).toBe(true);
            expect(b.mode).not.toBe(a.mode);
            break;
          case 'owner':
            expect(cb.equals(ca)).toBe(true);
            expect(b.uid).not.toBe(a.uid);
            break;
          case 'unique':
            expect(cb.equals(ca)).toBe(false);
            break;
        }
      }
    }
    expect(seen).toEqual(m.serverVariants);
    const total = Object.values(seen).reduce((x, y) => x + y, 0);
    expect(seen.identical / total).toBeGreaterThan(0.85);
    for (const v of ['oneByte', 'mode', 'unique']) expect(seen[v]).toBeGreaterThan(0);
    if (process.getuid?.() === 0) expect(seen.owner).toBeGreaterThan(0);

    // Deterministic: the same seed gives the same bytes and metadata.
    const m2 = farmLib.writeFarm(path.join(base, 'b'), p);
    for (let i = 0; i < p.filesPerServer; i += 7) {
      const rel = farmLib.fileSpec(p, i).rel;
      for (const s of [0, 2]) {
        const x = path.join(m.vserversDir, `s${s}`, rel);
        const y = path.join(m2.vserversDir, `s${s}`, rel);
        expect(fs.readFileSync(y).equals(fs.readFileSync(x))).toBe(true);
        expect(fs.statSync(y).mtimeMs).toBe(fs.statSync(x).mtimeMs);
      }
    }
  });
});

describe('native-free-bench runner', () => {
  it('runs a tiny farm with peers skipped and writes JSON with the contenders and numeric medians', () => {
    expect(fs.existsSync(CLI), 'dist/cli.js: build first (npx tsc -p tsconfig.json)').toBe(true);
    const dir = tempDir('vunify-bench-');
    const out = path.join(dir, 'out.json');
    const r = spawnSync(process.execPath, [RUN, '--servers', '2', '--files', '30', '--runs', '1', '--no-peers', '-q',
      '--dir', path.join(dir, 'work'), '--json-out', out], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr + r.stdout).toBe(0);
    expect(r.stdout).toMatch(/vunify unify, first run/);
    expect(r.stdout).toMatch(/targets:/);
    const j = JSON.parse(fs.readFileSync(out, 'utf8'));
    const byId = new Map<string, any>(j.contenders.map((c: any) => [c.id, c]));
    for (const id of ['vunify.first', 'vunify.rescan', 'vunify.rescanFull', 'vunify.change', 'floor.cat', 'floor.cat8', 'floor.stat', 'floor.replace', 'floor.replace16']) {
      const c = byId.get(id);
      expect(c?.status, id).toBe('ok');
      expect(typeof c.medianSeconds, id).toBe('number');
      expect(c.medianSeconds, id).toBeGreaterThan(0);
      expect(c.runs).toHaveLength(1);
    }
    for (const id of ['hardlink.first', 'hardlink.second', 'jdupes.first', 'rdfind.first']) {
      expect(byId.get(id)?.status, id).toBe('skipped (--no-peers)');
    }
    expect(byId.get('vunify.first').ratioToFirstUnify).toBe(1);
    // vunify linked exactly the identical files, nothing else.
    const census = byId.get('vunify.first').census;
    expect(census.linkedIdentical).toBe(census.expectedIdentical);
    expect(census.linkedContentDiffers).toBe(0);
    expect(census.linkedMetadataDiffers).toBe(0);
    expect(j.vunifyTotals.first.unified).toBe(census.expectedIdentical);
    // The replace floors linked the same identical copies, and only those.
    for (const id of ['floor.replace', 'floor.replace16']) {
      expect(byId.get(id).census, id).toEqual({ ...census, linkedMetadataDiffers: 0 });
    }
    const first = j.targets.find((t: any) => t.id === 'first-vs-hardlink');
    expect(first.floor).toBeGreaterThanOrEqual(0);
    expect(first.belowFloor).toBe(null); // no hardlink figure, so no limit
    expect(j.vunifyTotals.first.filesHashed).toBeGreaterThan(0);
    expect(j.vunifyTotals.rescan.filesHashed).toBe(0);
    expect(j.vunifyTotals.rescan.quick).toBe(true);
    // The full rescan reads nothing either, and agrees.
    expect(j.vunifyTotals.rescanFull).toMatchObject({ quick: false, filesHashed: 0, alreadyUnified: j.vunifyTotals.rescan.alreadyUnified });
    expect(j.vunifyTotals.change.quick).toBe(false);
    expect(j.farm.files).toBe(60);
    expect(typeof j.machine.nproc).toBe('number');
    expect(j.targets.map((t: any) => t.id)).toEqual(['first-vs-hardlink', 'rescan-vs-stat', 'rescan-vs-hardlink', 'change-vs-first']);
    // The copies are gone; the farm too (no --keep-farm).
    expect(fs.readdirSync(path.join(dir, 'work'))).toEqual([]);
  });
});
