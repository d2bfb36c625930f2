// The plan file (`vunify plan --save FILE`): a versioned JSON document of every decision of
// a dry run, for review, that `vunify apply FILE` carries out. It records what apply must
// find again: the options, the index, each root's path, device and inode, and for each
// link the stat signature and hash of both sides. Paths are shown as UTF-8; a path that
// is not UTF-8 also carries its bytes (pathBase64), so the file names exactly what was planned.
import fs from 'node:fs';
import path from 'node:path';
import { VunifyError, oneLine } from './errors.js';
import { writeFileAtomic } from './fsx/atomic-file.js';
import { display, toBytes, type RelPath } from './fsx/rootdir.js';
import { SKIP_REASONS, type Decision, type FileRecord, type SkipReason } from './model.js';
import { makeExcluder } from './sources/tree.js';
import { LMDB_DATA_FILE } from './store/names.js';

export const PLAN_FORMAT = 'vunify-plan';
export const PLAN_VERSION = 1;

/** The options of the plan run that apply needs to open the same farm the same way. */
export interface PlanOptions {
  reference: string;
  servers: string[];
  packages: string[] | 'all';
  vserversDir: string;
  rpm: string;
  packageManager: 'auto' | 'rpm' | 'dpkg' | 'none';
  allFiles: boolean;
  exclude: string[];
  excludeFrom: string[];
  defaultExcludes: boolean;
  immutable: boolean;
}

export interface PlanRootId { role: 'reference' | 'server'; name: string; path: string; dev: string; ino: string }

/** A file as scanned: what apply compares with the live file (stat signature, hashes, package). */
export type Signature = FileRecord;

interface EntryBase { server: string; path: string; pathBase64?: string; pkg: string }
export type PlanEntry =
  | (EntryBase & { action: 'link' | 'already'; refPath: string; refPathBase64?: string; hash: string; ref: Signature; srv: Signature })
  | (EntryBase & { action: 'skip'; reason: SkipReason; detail?: string });

export interface PlanDocument {
  format: typeof PLAN_FORMAT;
  version: typeof PLAN_VERSION;
  createdAt: string;
  vunify: string;
  /** The index the plan was made with: its path, and its data file's device and inode. */
  index: { path: string; dev: string; ino: string };
  options: PlanOptions;
  tree: boolean;
  packages: string[];
  roots: PlanRootId[];
  decisions: PlanEntry[];
}

/** The device and inode of the index's data file (a rebuilt, upgraded or compacted index is another file). */
export function indexIdentity(dbPath: string): { dev: string; ino: string } | null {
  try {
    const st = fs.statSync(dbPath, { bigint: true });
    const file = st.isDirectory() ? fs.statSync(path.join(dbPath, LMDB_DATA_FILE), { bigint: true }) : st;
    return { dev: String(file.dev), ino: String(file.ino) };
  } catch {
    return null;
  }
}

function shownPath(rel: RelPath): { path: string; bytes?: string } {
  const shown = display(rel);
  const bytes = toBytes(rel);
  return Buffer.from(shown, 'utf8').equals(bytes) ? { path: `/${shown}` } : { path: `/${shown}`, bytes: bytes.toString('base64') };
}

function relOf(shown: string, base64: string | undefined): RelPath {
  return base64 !== undefined ? Buffer.from(base64, 'base64').toString('latin1') : Buffer.from(shown.slice(1), 'utf8').toString('latin1');
}

const signature = (r: FileRecord): Signature => ({
  dev: r.dev, ino: r.ino, size: r.size, mode: r.mode, uid: r.uid, gid: r.gid,
  mtimeNs: r.mtimeNs, ctimeNs: r.ctimeNs, nlink: r.nlink, hash: r.hash, xattrs: r.xattrs, ...(r.pkg !== undefined ? { pkg: r.pkg } : {}),
});

export function planEntry(d: Decision): PlanEntry {
  const p = shownPath(d.path);
  const base: EntryBase = { server: d.server, path: p.path, ...(p.bytes ? { pathBase64: p.bytes } : {}), pkg: d.pkg };
  if (d.kind === 'skip') return { ...base, action: 'skip', reason: d.reason, ...(d.detail ? { detail: d.detail } : {}) };
  const r = shownPath(d.refPath);
  return {
    ...base, action: d.kind, refPath: r.path, ...(r.bytes ? { refPathBase64: r.bytes } : {}),
    hash: d.srv.hash || d.ref.hash, ref: signature(d.ref), srv: signature(d.srv),
  };
}

/** Header pretty-printed, one decision per line: a plan of a large farm stays readable and greppable. */
export function writePlan(file: string, doc: PlanDocument): void {
  const { decisions, ...head } = doc;
  const text = `${JSON.stringify(head, null, 2).slice(0, -2)},\n  "decisions": [\n${decisions.map((d) => `    ${JSON.stringify(d)}`).join(',\n')}\n  ]\n}\n`;
  try {
    writeFileAtomic(file, text, 0o600);
  } catch (err) {
    throw new VunifyError('IO', `cannot write the plan: ${oneLine(err)}`, file);
  }
}

const bad = (file: string, why: string) => new VunifyError('BAD_PLAN', why, file);

/** Reads and checks a plan file; anything it does not recognize is refused in one line. */
export function readPlan(file: string): PlanDocument {
  let doc: unknown;
  try {
    doc = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw bad(file, `not a plan file (${oneLine(err)})`);
  }
  const d = doc as Partial<PlanDocument> | null;
  if (!isObject(d) || d.format !== PLAN_FORMAT) throw bad(file, 'not a plan file (no "format": "vunify-plan")');
  if (d.version !== PLAN_VERSION) throw bad(file, `plan format version ${JSON.stringify(d.version)} is not the supported ${PLAN_VERSION}`);
  if (!isObject(d.index) || !isStr(d.index.path) || !isId(d.index.dev) || !isId(d.index.ino)) throw bad(file, 'the plan names no index');
  checkOptions(file, d.options);
  if (typeof d.tree !== 'boolean' || !isStrArray(d.packages)) throw bad(file, 'the plan has no tree or packages field');
  if (!Array.isArray(d.roots) || !d.roots.every((r) => isObject(r) && (r.role === 'reference' || r.role === 'server') && isStr(r.name) && isStr(r.path) && isId(r.dev) && isId(r.ino))) {
    throw bad(file, 'the plan\'s roots are not a list of {role, name, path, dev, ino}');
  }
  if (d.roots.filter((r) => r.role === 'reference').length !== 1) throw bad(file, 'the plan names no single reference');
  if (!Array.isArray(d.decisions)) throw bad(file, 'the plan has no decisions');
  const servers = new Set(d.roots.filter((r) => r.role === 'server').map((r) => r.name));
  d.decisions.forEach((e, i) => {
    const why = entryProblem(e, servers);
    if (why) throw bad(file, `decision ${i + 1}: ${why}`);
  });
  return d as PlanDocument;
}

const OPTION_KEYS: Array<keyof PlanOptions> = [
  'reference', 'servers', 'packages', 'vserversDir', 'rpm', 'packageManager', 'allFiles', 'exclude', 'excludeFrom', 'defaultExcludes', 'immutable',
];

/** The options must be ones this vunify takes: a plan from another version may mean something else by them. */
function checkOptions(file: string, o: unknown): asserts o is PlanOptions {
  if (!isObject(o)) throw bad(file, 'the plan has no options');
  const no = (what: string) => bad(file, `its options no longer parse: ${what}`);
  for (const k of Object.keys(o)) if (!OPTION_KEYS.includes(k as keyof PlanOptions)) throw no(`unknown option ${JSON.stringify(k)}`);
  const v = o as Record<string, unknown>;
  if (!isStr(v.reference) || !isStrArray(v.servers) || v.servers.length === 0) throw no('reference and servers');
  if (v.packages !== 'all' && !isStrArray(v.packages)) throw no('packages');
  if (!isStr(v.vserversDir) || !isStr(v.rpm)) throw no('vserversDir, rpm');
  if (!['auto', 'rpm', 'dpkg', 'none'].includes(v.packageManager as string)) throw no(`packageManager ${JSON.stringify(v.packageManager)}`);
  for (const k of ['allFiles', 'defaultExcludes', 'immutable']) if (typeof v[k] !== 'boolean') throw no(k);
  if (!isStrArray(v.exclude) || !isStrArray(v.excludeFrom)) throw no('exclude, excludeFrom');
  try {
    makeExcluder(v.exclude);
  } catch (err) {
    throw no(`exclude (${oneLine(err)})`);
  }
}

function entryProblem(e: unknown, servers: Set<string>): string | null {
  if (!isObject(e)) return 'not an object';
  const x = e as Record<string, unknown>;
  if (!isStr(x.server) || !servers.has(x.server)) return `server ${JSON.stringify(x.server)} is not one of the plan's roots`;
  if (!isStr(x.path) || !x.path.startsWith('/') || (x.pathBase64 !== undefined && !isStr(x.pathBase64)) || !isStr(x.pkg)) return 'no path or package';
  if (x.action === 'skip') return SKIP_REASONS.includes(x.reason as SkipReason) ? null : `unknown skip reason ${JSON.stringify(x.reason)}`;
  if (x.action !== 'link' && x.action !== 'already') return `unknown action ${JSON.stringify(x.action)}`;
  if (!isStr(x.refPath) || !x.refPath.startsWith('/') || (x.refPathBase64 !== undefined && !isStr(x.refPathBase64)) || !isStr(x.hash)) return 'no reference path or hash';
  return isSignature(x.ref) && isSignature(x.srv) ? null : 'a stat signature is incomplete';
}

function isSignature(s: unknown): s is Signature {
  if (!isObject(s)) return false;
  const r = s as Record<string, unknown>;
  return isId(r.dev) && isId(r.ino) && isStr(r.mtimeNs) && (r.pkg === undefined || isStr(r.pkg)) && isStr(r.ctimeNs) && isStr(r.hash) && isStr(r.xattrs) &&
    ['size', 'mode', 'uid', 'gid', 'nlink'].every((k) => Number.isSafeInteger(r[k]) && (r[k] as number) >= 0);
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x);
const isStr = (x: unknown): x is string => typeof x === 'string';
const isId = (x: unknown): x is string => isStr(x) && /^\d+$/.test(x);
const isStrArray = (x: unknown): x is string[] => Array.isArray(x) && x.every(isStr);

/** The plan's link decisions, as the planner made them (records with their package). */
export function linkDecisions(doc: PlanDocument): Array<Extract<Decision, { kind: 'link' }>> {
  const out: Array<Extract<Decision, { kind: 'link' }>> = [];
  for (const e of doc.decisions) {
    if (e.action !== 'link') continue;
    out.push({
      server: e.server, path: relOf(e.path, e.pathBase64), pkg: e.pkg, kind: 'link',
      refPath: relOf(e.refPath, e.refPathBase64), ref: { ...e.ref }, srv: { ...e.srv },
    });
  }
  return out;
}
