// Builds a real RPM-based vserver farm (noarch test packages installed by the host's rpm
// into bare roots) for tests and the demo (scripts/demo.ts). Needs root, rpm and rpmbuild
// (Debian: apt-get install rpm).
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

export interface PackageFile {
  /** Absolute path inside the root, e.g. '/usr/bin/vu-tool'. */
  path: string;
  /** Content of a regular file (default: empty). */
  content?: string | Buffer;
  /** Permission bits incl. setuid etc. (default 0o644); ignored for symlinks. */
  mode?: number;
  owner?: string;
  group?: string;
  /** %config(noreplace) */
  config?: boolean;
  /** Make a symlink with this target instead of a regular file. */
  symlinkTo?: string;
  /** %caps(...), e.g. 'cap_net_raw=ep'. */
  caps?: string;
}

export interface PackageSpec {
  name: string;
  version: string;
  release?: string;
  files: PackageFile[];
  /** Lines added verbatim to %install and %files (for names no PackageFile can carry). */
  rawInstall?: string[];
  rawFiles?: string[];
}

export interface Farm {
  base: string;
  vserversDir: string;
  rpmDir: string;
  servers: string[];
  root(name: string): string;
  packages: string[];
}

/** Build time and file mtime of every package; fixed so builds and installs are reproducible. */
export const SOURCE_DATE_EPOCH = 1_700_000_000;

export const VUSER_UID = 1234;
export const VGROUP_GID = 1234;

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, {
    encoding: 'utf8',
    maxBuffer: 256 * 1024 * 1024,
    env: env ?? { ...process.env, LC_ALL: 'C' },
  });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

function mustRun(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  const r = run(cmd, args, env);
  if (r.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}):\n${r.stderr}${r.stdout}`);
  }
  return r.stdout;
}

// The spec file goes through macro expansion, %files globbing and the shell; rather than
// escape for all three, refuse the characters that would need it.
const UNSUPPORTED_PATH = /["'\\\n\r*?[\]{}$`]/;

function checkPath(p: string, what: string): void {
  if (!p.startsWith('/') || UNSUPPORTED_PATH.test(p)) {
    throw new Error(`rpmfarm: unsupported ${what} ${JSON.stringify(p)} (absolute, no quotes, backslashes, globs, $ or newlines)`);
  }
}

function checkWord(w: string, what: string): void {
  if (!/^[A-Za-z0-9_.+=,:-]+$/.test(w)) throw new Error(`rpmfarm: unsupported ${what} ${JSON.stringify(w)}`);
}

/** Single-quoted for sh, '%' doubled for rpm's macro expansion. */
function shq(s: string): string {
  return `'${s.replace(/%/g, '%%')}'`;
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

function specText(spec: PackageSpec, release: string): string {
  const sources: string[] = [];
  const install: string[] = [];
  const files: string[] = [];
  const dirs = new Set<string>();
  spec.files.forEach((f, i) => {
    checkPath(f.path, 'path');
    const owner = f.owner ?? 'root';
    const group = f.group ?? 'root';
    checkWord(owner, 'owner');
    checkWord(group, 'group');
    const dir = path.posix.dirname(f.path);
    if (!dirs.has(dir)) {
      dirs.add(dir);
      install.push(`mkdir -p %{buildroot}${shq(dir)}`);
    }
    const dest = `%{buildroot}${shq(f.path)}`;
    if (f.symlinkTo !== undefined) {
      if (f.symlinkTo === '' || /["'\\\n\r$`]/.test(f.symlinkTo)) {
        throw new Error(`rpmfarm: unsupported symlink target ${JSON.stringify(f.symlinkTo)}`);
      }
      install.push(`ln -s ${shq(f.symlinkTo)} ${dest}`);
    } else {
      sources.push(`Source${i}: src-${i}.bin`);
      install.push(`cp %{SOURCE${i}} ${dest}`);
    }
    let line = '';
    if (f.config) line += '%config(noreplace) ';
    if (f.caps !== undefined) {
      checkWord(f.caps, 'caps');
      line += `%caps(${f.caps}) `;
    }
    const mode = f.symlinkTo !== undefined ? '-' : octal(f.mode ?? 0o644);
    line += `%attr(${mode},${owner},${group}) "${f.path.replace(/%/g, '%%')}"`;
    files.push(line);
  });
  return [
    `Name: ${spec.name}`,
    `Version: ${spec.version}`,
    `Release: ${release}`,
    `Summary: vunify test package ${spec.name}`,
    'License: GPL-2.0-or-later',
    'BuildArch: noarch',
    // No generated Requires/Provides: installs use --nodeps anyway and content is arbitrary.
    'AutoReqProv: no',
    ...sources,
    '',
    '%description',
    `Test package ${spec.name} for vunify.`,
    '',
    '%prep',
    '%build',
    '%install',
    ...install,
    ...(spec.rawInstall ?? []),
    '',
    '%files',
    ...files,
    ...(spec.rawFiles ?? []),
    '',
  ].join('\n');
}

/**
 * Builds a noarch .rpm from spec into outDir and returns its path. Deterministic: the same
 * spec gives the same bytes, and the file's mtime is SOURCE_DATE_EPOCH.
 */
export function buildRpm(spec: PackageSpec, outDir: string): string {
  checkWord(spec.name, 'package name');
  checkWord(spec.version, 'version');
  const release = spec.release ?? '1';
  checkWord(release, 'release');
  fs.mkdirSync(outDir, { recursive: true });
  const top = fs.mkdtempSync(path.join(path.resolve(outDir), `.rpmbuild-${spec.name}-`));
  try {
    const sourceDir = path.join(top, 'SOURCES');
    fs.mkdirSync(sourceDir);
    spec.files.forEach((f, i) => {
      if (f.symlinkTo === undefined) fs.writeFileSync(path.join(sourceDir, `src-${i}.bin`), f.content ?? '');
    });
    const specFile = path.join(top, `${spec.name}.spec`);
    fs.writeFileSync(specFile, specText(spec, release));
    const defines: [string, string][] = [
      ['_topdir', top],
      ['_dbpath', path.join(top, 'hostdb')],
      ['_rpmdir', path.resolve(outDir)],
      ['_build_name_fmt', '%%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm'],
      ['_buildhost', 'vunify.invalid'],
      ['debug_package', '%{nil}'],
      ['__os_install_post', '%{nil}'],
      ['_build_id_links', 'none'],
      ['use_source_date_epoch_as_buildtime', '1'],
      ['clamp_mtime_to_source_date_epoch', '1'],
    ];
    const args = ['-bb', '--quiet'];
    for (const [k, v] of defines) args.push('--define', `${k} ${v}`);
    args.push(specFile);
    mustRun('rpmbuild', args, {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      // A private HOME keeps ~/.rpmmacros of the host out of the build.
      HOME: top,
      LC_ALL: 'C',
      TZ: 'UTC',
      SOURCE_DATE_EPOCH: String(SOURCE_DATE_EPOCH),
    });
    const out = path.join(path.resolve(outDir), `${spec.name}-${spec.version}-${release}.noarch.rpm`);
    fs.utimesSync(out, SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH);
    return out;
  } finally {
    fs.rmSync(top, { recursive: true, force: true });
  }
}

/**
 * A bare root: etc/passwd and etc/group (rpm resolves %attr names inside the root, so vuser
 * must exist there) and an empty var/lib/rpm.
 */
export function makeRoot(root: string): void {
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  fs.mkdirSync(path.join(root, 'var/lib/rpm'), { recursive: true });
  fs.writeFileSync(
    path.join(root, 'etc/passwd'),
    `root:x:0:0:root:/root:/bin/sh\nvuser:x:${VUSER_UID}:${VGROUP_GID}:vunify test user:/home/vuser:/bin/sh\n`,
  );
  fs.writeFileSync(path.join(root, 'etc/group'), `root:x:0:\nvgroup:x:${VGROUP_GID}:\n`);
}

// Debian's rpm defaults to ~/.rpmdb, which --root would silently resolve inside the root.
function rootArgs(root: string): string[] {
  return ['--root', path.resolve(root), '--dbpath', '/var/lib/rpm'];
}

export function installRpms(root: string, rpms: string[]): void {
  if (rpms.length === 0) return;
  mustRun('rpm', [
    ...rootArgs(root),
    '--define', '_db_backend sqlite',
    '--force-debian', '--nodeps', '--noscripts', '--notriggers',
    '-i', ...rpms.map((r) => path.resolve(r)),
  ]);
}

/**
 * `rpm -V` for pkgs (or -Va) in root, as sorted lines joined by '\n' ('' when everything
 * verifies). rpm -V exits non-zero when something differs, so the exit code is not an error.
 */
export function rpmVerify(root: string, pkgs?: string[]): string {
  const db = path.join(root, 'var/lib/rpm');
  // Querying a root without a database would create an empty one in it.
  if (!fs.existsSync(path.join(db, 'rpmdb.sqlite')) && !fs.existsSync(path.join(db, 'Packages'))) {
    throw new Error(`rpmVerify: no rpm database in ${root}`);
  }
  const args = [...rootArgs(root), '-V'];
  if (pkgs && pkgs.length > 0) args.push('--', ...pkgs);
  else args.push('-a');
  const r = run('rpm', args);
  // rpm -V reports problems on stdout; a bad invocation gives only stderr.
  if (r.status !== 0 && r.stdout.trim() === '') {
    throw new Error(`rpm ${args.join(' ')} failed (exit ${r.status}):\n${r.stderr}`);
  }
  return r.stdout
    .split('\n')
    .filter((l) => l !== '')
    .sort()
    .join('\n');
}

// Deterministic pseudo-random bytes (mulberry32 seeded by a string).
function prng(seed: string): () => number {
  let h = 1779033703 ^ seed.length;
  for (let i = 0; i < seed.length; i++) {
    h = Math.imul(h ^ seed.charCodeAt(i), 3432918353);
    h = (h << 13) | (h >>> 19);
  }
  let a = h >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

export function pseudoRandomBytes(seed: string, size: number): Buffer {
  const next = prng(seed);
  const buf = Buffer.alloc(size);
  for (let i = 0; i < size; i += 4) {
    const v = next();
    for (let j = 0; j < 4 && i + j < size; j++) buf[i + j] = (v >>> (8 * j)) & 0xff;
  }
  return buf;
}

export function pseudoRandomText(seed: string, size: number): string {
  const next = prng(seed);
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  let out = '';
  let line = 0;
  while (out.length < size) {
    let word = '';
    const n = 2 + (next() % 9);
    for (let i = 0; i < n; i++) word += letters[next() % 26];
    line += word.length + 1;
    if (line > 72) {
      out += '\n';
      line = word.length + 1;
    } else if (out.length > 0) out += ' ';
    out += word;
  }
  return out.slice(0, size - 1) + '\n';
}

/** The sample packages: v1 has vu-base 1.0 and vu-extra 1.0, v2 vu-base 2.0. */
export function sampleSpecs(): { v1: PackageSpec[]; v2: PackageSpec[] } {
  const base = (version: string, tool: string, lib: string): PackageSpec => ({
    name: 'vu-base',
    version,
    files: [
      { path: '/usr/bin/vu-tool', mode: 0o755, content: pseudoRandomText(tool, 20 * 1024) },
      { path: '/usr/bin/vu-suid', mode: 0o4755, content: 'vu-suid: pretend setuid program\n' + pseudoRandomText('vu-suid', 4096) },
      // rpm 4.18 on Debian has libcap: installing as root sets security.capability.
      { path: '/usr/bin/vu-ping', mode: 0o755, caps: 'cap_net_raw=ep', content: 'vu-ping: pretend ping\n' + pseudoRandomText('vu-ping', 2048) },
      { path: '/usr/share/vu/data.txt', owner: 'vuser', group: 'vgroup', mode: 0o644, content: 'vu data\n' + pseudoRandomText('data', 8192) },
      { path: '/etc/vu/vu.conf', config: true, content: '# vu configuration\nlevel = 3\nname = vu\n' },
      { path: '/usr/share/vu/link', symlinkTo: 'data.txt' },
      { path: '/usr/share/vu/empty' },
      { path: '/usr/lib/vu/libvu.so.1', mode: 0o755, content: pseudoRandomBytes(lib, 200 * 1024) },
      { path: '/usr/share/doc/vu-base/README', content: 'vu-base: sample package for vunify tests.\n' },
    ],
  });
  const extraA = 'extra a\n' + pseudoRandomText('extra-a', 6000);
  const extra: PackageSpec = {
    name: 'vu-extra',
    version: '1.0',
    files: [
      { path: '/usr/share/vu-extra/a.txt', content: extraA },
      { path: '/usr/share/vu-extra/b.txt', content: 'extra b\n' + pseudoRandomText('extra-b', 6000) },
      { path: '/usr/share/vu-extra/same-as-a.txt', content: extraA },
      { path: '/usr/share/vu-extra/with space.txt', content: 'a file name with a space\n' },
      { path: '/etc/vu-extra.conf', config: true, content: 'extra = yes\n' },
    ],
  };
  return {
    v1: [base('1.0', 'vu-tool-1', 'libvu-1'), extra],
    v2: [base('2.0', 'vu-tool-2', 'libvu-2')],
  };
}

/**
 * Builds the sample rpms into base/rpms and installs them into base/vservers/{ref,s1,s2,s3}:
 * ref, s1, s2 get vu-base 1.0 + vu-extra 1.0, s3 gets vu-base 2.0 + vu-extra 1.0.
 */
export async function makeRpmFarm(base?: string): Promise<Farm> {
  const dir = base ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'vunify-farm-')));
  try {
    return buildFarm(dir);
  } catch (e) {
    // Only a folder we made ourselves is ours to remove.
    if (base === undefined) await removeFarm(dir);
    throw e;
  }
}

function buildFarm(dir: string): Farm {
  const rpmDir = path.join(dir, 'rpms');
  const vserversDir = path.join(dir, 'vservers');
  const { v1, v2 } = sampleSpecs();
  const built = new Map<string, string>();
  for (const spec of [...v1, ...v2]) built.set(`${spec.name}-${spec.version}`, buildRpm(spec, rpmDir));
  const get = (k: string): string => {
    const p = built.get(k);
    if (!p) throw new Error(`rpmfarm: no package ${k}`);
    return p;
  };
  const servers = ['ref', 's1', 's2', 's3'];
  for (const s of servers) {
    const r = path.join(vserversDir, s);
    makeRoot(r);
    installRpms(r, s === 's3' ? [get('vu-base-2.0'), get('vu-extra-1.0')] : [get('vu-base-1.0'), get('vu-extra-1.0')]);
  }
  return {
    base: dir,
    vserversDir,
    rpmDir,
    servers,
    root: (name: string) => path.join(vserversDir, name),
    packages: ['vu-base', 'vu-extra'],
  };
}

/**
 * Clears the immutable (and append-only) attribute below dir so it can be removed. Errors
 * (files that cannot hold attributes, missing dir) are ignored; chattr -R does not follow
 * symlinks, and a symlink given as dir is skipped so nothing outside is touched.
 */
export function clearImmutableTree(dir: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(dir);
  } catch {
    return;
  }
  if (!st.isDirectory() && !st.isFile()) return;
  spawnSync('chattr', ['-R', '-f', '-i', '-a', path.resolve(dir)], { stdio: 'ignore' });
}

export async function removeFarm(farm: Farm | string): Promise<void> {
  const dir = typeof farm === 'string' ? farm : farm.base;
  clearImmutableTree(dir);
  await fsp.rm(dir, { recursive: true, force: true });
}
