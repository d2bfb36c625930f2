// Builds real dpkg roots for tests: .debs made by dpkg-deb and installed by the host's
// dpkg into bare roots. Needs root (owners, and dpkg refuses --root installs otherwise)
// and dpkg, dpkg-deb, dpkg-divert (always there on Debian). The test packages have no
// maintainer scripts, so nothing runs chrooted in the root.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';

export interface DebFile {
  /** Absolute path inside the root, e.g. '/usr/bin/vu-tool'. */
  path: string;
  /** Content of a regular file (default: empty). */
  content?: string | Buffer;
  /** Permission bits (default 0o644); ignored for symlinks. */
  mode?: number;
  /** Listed in DEBIAN/conffiles. */
  conffile?: boolean;
  /** Make a symlink with this target instead of a regular file. */
  symlinkTo?: string;
}

export interface DebSpec {
  name: string;
  version: string;
  /** Default 'all'. */
  arch?: string;
  /** 'same' makes dpkg name the info files PKG:ARCH.list. */
  multiArch?: 'same' | 'foreign' | 'allowed';
  files: DebFile[];
}

/** Mtime of every packaged file; fixed so installs give identical files across roots. */
export const DEB_EPOCH = 1_700_000_000;

const BASE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

function env(): NodeJS.ProcessEnv {
  return {
    // dpkg checks that ldconfig and start-stop-daemon are on PATH, which lives in sbin.
    PATH: `${process.env.PATH ?? ''}:${BASE_PATH}`,
    LC_ALL: 'C',
    TZ: 'UTC',
    SOURCE_DATE_EPOCH: String(DEB_EPOCH),
  };
}

function mustRun(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: env(), maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}):\n${r.stderr}${r.stdout}`);
  return r.stdout;
}

function checkPath(p: string, what: string): void {
  const parts = p.split('/').slice(1);
  if (!p.startsWith('/') || /[\n\r\0]/.test(p) || parts.some((c) => c === '' || c === '.' || c === '..')) {
    throw new Error(`dpkgfarm: unsupported ${what} ${JSON.stringify(p)}`);
  }
}

function checkWord(w: string, what: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.+~:-]*$/.test(w)) throw new Error(`dpkgfarm: unsupported ${what} ${JSON.stringify(w)}`);
}

function touchTree(dir: string): void {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) touchTree(p);
    fs.lutimesSync(p, DEB_EPOCH, DEB_EPOCH);
  }
  fs.utimesSync(dir, DEB_EPOCH, DEB_EPOCH);
}

/** Builds spec into outDir and returns the .deb's path (NAME_VERSION_ARCH.deb, epoch dropped). */
export function buildDeb(spec: DebSpec, outDir: string): string {
  const arch = spec.arch ?? 'all';
  checkWord(spec.name, 'package name');
  checkWord(spec.version, 'version');
  checkWord(arch, 'arch');
  fs.mkdirSync(outDir, { recursive: true });
  const stage = fs.mkdtempSync(path.join(path.resolve(outDir), `.debbuild-${spec.name}-`));
  try {
    // The staging folder becomes "./" in the package: 0700 from mkdtemp would be applied to /.
    fs.chmodSync(stage, 0o755);
    const mkdir = (d: string) => {
      fs.mkdirSync(d, { recursive: true, mode: 0o755 });
    };
    const debian = path.join(stage, 'DEBIAN');
    mkdir(debian);
    const conffiles: string[] = [];
    for (const f of spec.files) {
      checkPath(f.path, 'path');
      const dest = path.join(stage, f.path);
      mkdir(path.dirname(dest));
      if (f.symlinkTo !== undefined) {
        fs.symlinkSync(f.symlinkTo, dest);
      } else {
        fs.writeFileSync(dest, f.content ?? '');
        fs.chmodSync(dest, f.mode ?? 0o644);
      }
      if (f.conffile) conffiles.push(f.path);
    }
    const control = [
      `Package: ${spec.name}`,
      `Version: ${spec.version}`,
      `Architecture: ${arch}`,
      ...(spec.multiArch ? [`Multi-Arch: ${spec.multiArch}`] : []),
      'Maintainer: vunify tests <tests@vunify.invalid>',
      `Description: vunify test package ${spec.name}`,
      '',
    ].join('\n');
    fs.writeFileSync(path.join(debian, 'control'), control, { mode: 0o644 });
    if (conffiles.length > 0) fs.writeFileSync(path.join(debian, 'conffiles'), conffiles.join('\n') + '\n', { mode: 0o644 });
    touchTree(stage);
    const out = path.join(path.resolve(outDir), `${spec.name}_${spec.version.replace(/^\d+:/, '')}_${arch}.deb`);
    mustRun('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', stage, out]);
    fs.utimesSync(out, DEB_EPOCH, DEB_EPOCH);
    return out;
  } finally {
    fs.rmSync(stage, { recursive: true, force: true });
  }
}

/**
 * A bare root dpkg can install into: empty status, info/ and updates/, minimal passwd and group.
 * mergedUsr makes bin, sbin, lib symlinks to usr/bin..., as on Debian 12, so packaged /bin/x
 * lands in usr/bin/x while the .list still says /bin/x.
 */
export function makeDpkgRoot(root: string, opts: { mergedUsr?: boolean } = {}): void {
  const admin = path.join(root, 'var/lib/dpkg');
  for (const d of ['info', 'updates', 'triggers']) fs.mkdirSync(path.join(admin, d), { recursive: true });
  fs.writeFileSync(path.join(admin, 'status'), '');
  fs.writeFileSync(path.join(admin, 'available'), '');
  fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  fs.writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\n');
  if (opts.mergedUsr) {
    for (const d of ['bin', 'sbin', 'lib']) {
      fs.mkdirSync(path.join(root, 'usr', d), { recursive: true });
      fs.symlinkSync(`usr/${d}`, path.join(root, d));
    }
  }
}

// --log keeps the host's /var/log/dpkg.log out of it; --force-unsafe-io skips fsyncs that a
// throwaway test root does not need.
function dpkgArgs(root: string): string[] {
  return ['--root', path.resolve(root), '--log=/dev/null', '--force-unsafe-io'];
}

export function installDebs(root: string, debs: string[]): void {
  if (debs.length === 0) return;
  mustRun('dpkg', [...dpkgArgs(root), '-i', ...debs.map((d) => path.resolve(d))]);
}

/** dpkg -r: a package with conffiles stays in the status file as "deinstall ok config-files". */
export function removePackages(root: string, names: string[], purge = false): void {
  if (names.length === 0) return;
  mustRun('dpkg', [...dpkgArgs(root), purge ? '-P' : '-r', ...names]);
}

/** Lets the root install packages of a foreign architecture (e.g. i386 on amd64). */
export function addArchitecture(root: string, arch: string): void {
  checkWord(arch, 'arch');
  mustRun('dpkg', [...dpkgArgs(root), '--add-architecture', arch]);
}

/**
 * Diverts `path` to `divertTo` for every package but `pkg` (a local diversion when pkg is
 * undefined). With rename (default), an already installed file is moved to divertTo.
 */
export function addDiversion(root: string, d: { path: string; divertTo: string; pkg?: string; rename?: boolean }): void {
  checkPath(d.path, 'path');
  checkPath(d.divertTo, 'diversion target');
  const args = ['--root', path.resolve(root)];
  if (d.pkg === undefined) args.push('--local');
  else {
    checkWord(d.pkg, 'package name');
    args.push('--package', d.pkg);
  }
  if (d.rename !== false) args.push('--rename');
  args.push('--divert', d.divertTo, '--add', d.path);
  mustRun('dpkg-divert', args);
}
