// The module layout (issue 18 item 4): no import cycle among src/ modules (type-only
// imports count: a circle of types is still a circle to read), and the pure planner and the
// shared types import nothing from the store, the scan or the engine. Reads the sources; no
// build needed.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const src = fileURLToPath(new URL('../src/', import.meta.url));

/** Every src/ module (path relative to src/, with .ts) and the src/ modules it imports. */
function importGraph(): Map<string, string[]> {
  const files = (fs.readdirSync(src, { recursive: true }) as string[])
    .map((f) => f.split(path.sep).join('/'))
    .filter((f) => f.endsWith('.ts'));
  const graph = new Map<string, string[]>();
  for (const f of files) {
    const text = fs.readFileSync(path.join(src, f), 'utf8');
    const deps = new Set<string>();
    // import ... from './x.js', export ... from './x.js' (over several lines too), import('./x.js')
    for (const m of text.matchAll(/^\s*(?:import|export)\b[^'";]*?\bfrom\s*'(\.[^']+)'|\bimport\(\s*'(\.[^']+)'\s*\)/gm)) {
      deps.add(path.posix.join(path.posix.dirname(f), m[1] ?? m[2]).replace(/\.js$/, '.ts'));
    }
    graph.set(f, [...deps]);
  }
  return graph;
}

/** One cycle per strongly connected component of more than one module (or a self-import). */
function cyclesOf(graph: Map<string, string[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  let next = 0;
  const visit = (v: string): void => {
    index.set(v, next); low.set(v, next); next++;
    stack.push(v); onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); }
      else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const scc: string[] = [];
    let w: string;
    do { w = stack.pop()!; onStack.delete(w); scc.push(w); } while (w !== v);
    if (scc.length > 1 || graph.get(v)!.includes(v)) found.push(scc.sort());
  };
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v);
  return found;
}

describe('module layout', () => {
  const graph = importGraph();

  it('reads the imports it checks', () => {
    expect(graph.get('engine.ts')).toContain('plan.ts');
    expect(graph.get('cli-program.ts')).toContain('engine.ts'); // import('./engine.js')
    expect(graph.get('index.ts')).toContain('engine.ts'); // export ... from
  });

  it('has no import cycle among src/ modules', () => {
    expect(cyclesOf(graph)).toEqual([]);
  });

  it('finds a cycle when there is one', () => {
    expect(cyclesOf(new Map([['a.ts', ['b.ts']], ['b.ts', ['c.ts']], ['c.ts', ['a.ts']], ['d.ts', ['a.ts']]])))
      .toEqual([['a.ts', 'b.ts', 'c.ts']]);
  });

  it('keeps the planner and the shared types free of the store, the scan and the engine', () => {
    const banned = /^(store\/|scan\.ts$|engine\.ts$|prepare\.ts$|apply\.ts$)/;
    for (const m of ['plan.ts', 'model.ts']) {
      expect(graph.get(m)!.filter((d) => banned.test(d)), m).toEqual([]);
    }
  });

  it('keeps the quick rescan in quick/, called by the pipeline and calling none of it', () => {
    const quick = [...graph.keys()].filter((m) => m.startsWith('quick/'));
    expect(quick.length).toBeGreaterThan(0);
    const pipeline = /^(engine|prepare|scan|plan|apply|apply-plan|reflink|cli-program)\.ts$|^store\/(index-db|existing)\.ts$/;
    for (const m of quick) expect(graph.get(m)!.filter((d) => pipeline.test(d)), m).toEqual([]);
    expect([...graph.keys()].filter((m) => /^quick[^/]*\.ts$/.test(m))).toEqual([]);
  });

  it('names what vunify writes on disk in store/names.ts only', () => {
    // A name's literal: '.vunify-tmp.', '/var/lib/vunify/...', 'data.mdb', '-lock', or a
    // suffix added to a path in a template (`${dbPath}.quick`). Comments are left out.
    const name = /['"`](\.vunify|vunify-rpmdb|\/var\/lib\/vunify|\/run\/vunify|data\.mdb['"`]|-lock['"`])|\}[.-](run-lock|write-failed|upgrade|broken|compact|old|quick|tmp|lock)\b/;
    const found: string[] = [];
    for (const m of graph.keys()) {
      if (m === 'store/names.ts') continue;
      const lines = fs.readFileSync(path.join(src, m), 'utf8').split('\n');
      lines.forEach((l, i) => { if (!/^\s*(\/\/|\*|\/\*)/.test(l) && name.test(l)) found.push(`${m}:${i + 1}: ${l.trim()}`); });
    }
    expect(found).toEqual([]);
  });
});
