// The dpkg database of a root, as a package whitelist. Everything is read through the
// no-symlink root access and parsed here: running dpkg-query against a vserver would
// trust a tree its root user controls. Text is decoded as latin1 (one char per byte),
// so file names stay binary strings.
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import pLimit from 'p-limit';
import { VunifyError, isErrno } from '../errors.js';
import { RootDir, UnsafePathError, display, isSafeRel, type RelPath } from '../fsx/rootdir.js';
import type { InstalledPackage, PackageFile, PackageListing, PackageSource, SourceInputs } from './types.js';

const ADMIN: RelPath = 'var/lib/dpkg';
const STATUS: RelPath = `${ADMIN}/status`;
const DIVERSIONS: RelPath = `${ADMIN}/diversions`;
const INFO: RelPath = `${ADMIN}/info`;

// Names end up in info/ file names: anything else could walk out of info/.
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9+.-]*$/;
const ARCH_RE = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
// Merged /usr (Debian 12): these are symlinks to usr/NAME, while .list files still say /lib/...
const USR_ALIASES = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'libo32'];

export interface DpkgStanza {
  name: string;
  version: string;
  arch: string;
  status: string;
  multiArchSame: boolean;
  /** Absolute paths from the Conffiles field. */
  conffiles: string[];
}

interface Diversion { to: string; by: string }

function readAt(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((res, rej) => fs.read(fd, buf, 0, buf.length, pos, (e, n) => (e ? rej(e) : res(n))));
}

async function readAll(fd: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let pos = 0;
  for (;;) {
    const buf = Buffer.allocUnsafe(1 << 18);
    const n = await readAt(fd, buf, pos);
    if (n === 0) return Buffer.concat(chunks, pos);
    chunks.push(buf.subarray(0, n));
    pos += n;
  }
}

/** Installed per dpkg: the third word of Status ("install ok installed", "hold ok installed"). */
export function isInstalled(status: string): boolean {
  return status.trim().split(/\s+/)[2] === 'installed';
}

/** Conffiles field lines: "/path md5 [obsolete] [remove-on-upgrade]"; paths may hold spaces. */
function conffileFieldPath(line: string): string | null {
  let l = line.replace(/^[ \t]/, '');
  for (;;) {
    const m = / (obsolete|remove-on-upgrade)$/.exec(l);
    if (!m) break;
    l = l.slice(0, m.index);
  }
  const sp = l.lastIndexOf(' ');
  if (sp <= 0) return null;
  const p = l.slice(0, sp);
  return p.startsWith('/') ? p : null;
}

/** Parses a status file (latin1 text) into stanzas; lines that fit no field are counted. */
export function parseStatus(text: string): { stanzas: DpkgStanza[]; badLines: number } {
  const stanzas: DpkgStanza[] = [];
  let badLines = 0;
  let fields = new Map<string, string[]>();
  let last: string[] | null = null;
  const flush = () => {
    if (fields.size === 0) return;
    const one = (k: string) => (fields.get(k)?.[0] ?? '').trim();
    const name = one('package');
    if (name !== '') {
      stanzas.push({
        name,
        version: one('version'),
        arch: one('architecture'),
        status: one('status'),
        multiArchSame: one('multi-arch') === 'same',
        conffiles: (fields.get('conffiles') ?? [])
          .slice(1)
          .map(conffileFieldPath)
          .filter((p): p is string => p !== null),
      });
    }
    fields = new Map();
    last = null;
  };
  for (const line of text.split('\n')) {
    if (line.trim() === '') { flush(); continue; }
    if (line[0] === ' ' || line[0] === '\t') {
      if (last) (last as string[]).push(line);
      else badLines++;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) { badLines++; last = null; continue; }
    last = [line.slice(colon + 1)];
    fields.set(line.slice(0, colon).toLowerCase(), last);
  }
  flush();
  return { stanzas, badLines };
}

/** The diversions file: records of three lines (from, to, package; ':' = local). */
export function parseDiversions(text: string): { map: Map<string, Diversion>; bad: number } {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const map = new Map<string, Diversion>();
  let i = 0;
  for (; i + 2 < lines.length; i += 3) map.set(lines[i], { to: lines[i + 1], by: lines[i + 2] });
  return { map, bad: lines.length - i };
}

export class DpkgSource implements PackageSource {
  readonly kind = 'dpkg' as const;
  readonly location = `/${ADMIN}`;
  // The root folder too: the merged-/usr symlinks decide where listed paths point.
  readonly inputs: SourceInputs = { folders: ['', ADMIN, `${ADMIN}/info`], files: [] };

  private constructor(private readonly root: RootDir) {}

  /** The dpkg source of a root, or null when var/lib/dpkg/status is not a regular file (or the way to it is a symlink). */
  static async open(root: RootDir): Promise<DpkgSource | null> {
    try {
      const st = await root.lstat(STATUS);
      return st?.isFile() ? new DpkgSource(root) : null;
    } catch (err) {
      if (err instanceof UnsafePathError || isErrno(err, 'ENOENT', 'ENOTDIR')) return null;
      throw err;
    }
  }

  /** A file below the root, or null when it does not exist. A symlink or non-file fails. */
  private async read(rel: RelPath): Promise<string | null> {
    let f;
    try {
      f = await this.root.openFile(rel);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return null;
      if (err instanceof UnsafePathError || isErrno(err, 'ELOOP', 'ENOTREG', 'ENOTDIR'))
        throw new VunifyError('BAD_PACKAGE', `/${display(rel)} (or a folder on the way) is a symlink or not a regular file`, this.root.path);
      throw err;
    }
    try {
      return (await readAll(f.fd)).toString('latin1');
    } finally {
      await f.close();
    }
  }

  /**
   * Top folders that are exactly `NAME -> usr/NAME` (or /usr/NAME) with usr/NAME a real folder.
   * Listed paths below them are rewritten to usr/NAME/...: the caller never crosses a symlink,
   * so /lib/... would otherwise be skipped, and usr/lib/... is where the bytes are.
   */
  private async usrAliases(): Promise<Set<string>> {
    const out = new Set<string>();
    for (const name of USR_ALIASES) {
      if (!(await this.root.lstat(name))?.isSymbolicLink()) continue;
      // readlink reads the link itself; the root folder is reached through its fd, as RootDir does.
      const link = await fsp.readlink(RootDir.at(this.root.rootFd, name), { encoding: 'buffer' }).catch(() => null);
      const target = link?.toString('latin1');
      if (target !== `usr/${name}` && target !== `/usr/${name}`) continue;
      const dst = await this.root.lstat(`usr/${name}`).catch(() => null);
      if (dst?.isDirectory()) out.add(name);
    }
    return out;
  }

  /** info/<name>.<ext>; Multi-Arch: same packages use <name>:<arch>.<ext>, like dpkg. */
  private async readInfo(s: DpkgStanza, ext: 'list' | 'conffiles'): Promise<string | null> {
    const plain = s.name;
    const qualified = s.arch ? `${s.name}:${s.arch}` : null;
    const order = s.multiArchSame ? [qualified, plain] : [plain, qualified];
    for (const base of order) {
      if (base === null) continue;
      const rel = `${INFO}/${base}.${ext}`;
      if (!isSafeRel(rel)) continue;
      const text = await this.read(rel);
      if (text !== null) return text;
    }
    return null;
  }

  async list(names: string[] | 'all'): Promise<PackageListing> {
    const statusText = await this.read(STATUS);
    if (statusText === null) throw new VunifyError('NO_PACKAGE_DB', `/${STATUS} disappeared`, this.root.path);
    const { stanzas, badLines } = parseStatus(statusText);
    let rejectedPaths = badLines;

    const installed = stanzas.filter((s) => {
      if (!isInstalled(s.status)) return false;
      if (NAME_RE.test(s.name) && (s.arch === '' || ARCH_RE.test(s.arch))) return true;
      rejectedPaths++;
      return false;
    });

    let selected: DpkgStanza[];
    const missing: string[] = [];
    if (names === 'all') {
      selected = installed;
    } else {
      const chosen = new Set<DpkgStanza>();
      for (const req of new Set(names)) {
        const colon = req.indexOf(':');
        const name = colon < 0 ? req : req.slice(0, colon);
        const arch = colon < 0 ? null : req.slice(colon + 1);
        const hits = installed.filter((s) => s.name === name && (arch === null || s.arch === arch));
        if (hits.length === 0) missing.push(req);
        for (const h of hits) chosen.add(h);
      }
      selected = installed.filter((s) => chosen.has(s));
    }

    let diversions = new Map<string, Diversion>();
    let aliases = new Set<string>();
    if (selected.length > 0) {
      aliases = await this.usrAliases();
      const text = await this.read(DIVERSIONS);
      if (text !== null) {
        const parsed = parseDiversions(text);
        diversions = parsed.map;
        rejectedPaths += parsed.bad;
      }
    }

    const limit = pLimit(8);
    const packages = await Promise.all(
      selected.map((s) =>
        limit(async (): Promise<InstalledPackage> => {
          const [listText, confText] = await Promise.all([this.readInfo(s, 'list'), this.readInfo(s, 'conffiles')]);
          const conf = new Set(s.conffiles);
          for (const line of confText?.split('\n') ?? []) {
            // "remove-on-upgrade /path": flags come before the path.
            const m = /^(?:[a-z-]+ )*(\/.*)$/.exec(line);
            if (m) conf.add(m[1]);
          }
          const files = new Map<RelPath, PackageFile>();
          // A missing .list means no files, as dpkg itself assumes (with a warning).
          for (const line of listText?.split('\n') ?? []) {
            if (line === '' || line === '/.') continue;
            // The .list holds the name in the package. A diversion by another package
            // (or a local one, by ':') puts this package's copy at the diverted-to path,
            // while the diverting package's own copy sits at the original path.
            const div = diversions.get(line);
            const onDisk = div && div.by !== s.name ? div.to : line;
            let rel = onDisk.slice(1);
            if (!onDisk.startsWith('/') || !isSafeRel(rel)) { rejectedPaths++; continue; }
            if (aliases.has(rel.split('/', 1)[0])) rel = `usr/${rel}`;
            // After the rewrite, /lib and /usr/lib (and files below both) may be the same path.
            const config = conf.has(line) || (files.get(rel)?.config ?? false);
            files.set(rel, { path: rel, config, ghost: false });
          }
          return { name: s.name, version: s.version, arch: s.arch, files: [...files.values()] };
        }),
      ),
    );
    return { packages, missing, rejectedPaths };
  }
}
