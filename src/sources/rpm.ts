// The RPM database of a root, as a package whitelist. The database files are copied
// (through the no-symlink root access) into a private temporary folder and queried
// there: `rpm --root` can create or touch files inside the vserver, and a vserver's
// root could point var/lib/rpm anywhere.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { VunifyError, isErrno } from '../errors.js';
import { copyFd } from '../fsx/content.js';
import { RootDir, isSafeRel, type RelPath } from '../fsx/rootdir.js';
import { RPMDB_TMP_PREFIX } from '../store/names.js';
import type { InstalledPackage, PackageListing, PackageSource, SourceInputs } from './types.js';

const DB_DIRS: RelPath[] = ['var/lib/rpm', 'usr/lib/sysimage/rpm'];
// Separators that cannot appear in package names and are checked for in file names.
const REC = '\x1e';
const FLD = '\x1f';
const TAG = '\x1d';
const QF =
  `${TAG}P${FLD}%{NAME}${FLD}%{EPOCHNUM}:%{VERSION}-%{RELEASE}${FLD}%{ARCH}${REC}` +
  `[${TAG}F${FLD}%{FILENAMES}${FLD}%{FILEFLAGS:fflags}${REC}]`;

interface DbLocation { dir: RelPath; backend: 'sqlite' | 'bdb_ro'; files: string[] }

async function findDb(root: RootDir): Promise<DbLocation | null> {
  for (const dir of DB_DIRS) {
    let st: fs.BigIntStats | null;
    try {
      st = await root.lstat(`${dir}/rpmdb.sqlite`);
    } catch {
      continue; // a symlinked or missing folder on the way
    }
    if (st?.isFile()) {
      const files = ['rpmdb.sqlite'];
      for (const extra of ['rpmdb.sqlite-wal', 'rpmdb.sqlite-shm']) {
        if ((await root.lstat(`${dir}/${extra}`))?.isFile()) files.push(extra);
      }
      return { dir, backend: 'sqlite', files };
    }
    const pk = await root.lstat(`${dir}/Packages`).catch(() => null);
    if (pk?.isFile()) return { dir, backend: 'bdb_ro', files: ['Packages'] };
  }
  return null;
}

let rpmChecked: string | null = null;

/** Fails with NO_RPM when the rpm program cannot be run. */
export async function checkRpm(rpmBin: string): Promise<void> {
  if (rpmChecked === rpmBin) return;
  await new Promise<void>((res, rej) =>
    execFile(rpmBin, ['--version'], (err) => {
      if (!err) return res();
      if (isErrno(err, 'ENOENT', 'EACCES'))
        rej(new VunifyError('NO_RPM', `cannot run '${rpmBin}' (${(err as NodeJS.ErrnoException).code}); install rpm (Debian: apt-get install rpm) or set VUNIFY_RPM`));
      else rej(new VunifyError('NO_RPM', `'${rpmBin} --version' failed: ${err.message.split('\n')[0]}`));
    }),
  );
  rpmChecked = rpmBin;
}

export function parseRpmOutput(out: Buffer): PackageListing {
  const text = out.toString('latin1');
  const packages: InstalledPackage[] = [];
  const notInstalled: string[] = [];
  let rejectedPaths = 0;
  let current: InstalledPackage | null = null;
  for (const raw of text.split(REC)) {
    const at = raw.indexOf(TAG);
    const before = at < 0 ? raw : raw.slice(0, at);
    for (const m of before.matchAll(/package (.+) is not installed/g)) notInstalled.push(m[1]);
    if (at < 0) continue;
    const f = raw.slice(at + 1).split(FLD);
    if (f[0] === 'P' && f.length === 4) {
      current = { name: f[1], version: f[2].replace(/^0:/, ''), arch: f[3], files: [] };
      packages.push(current);
    } else if (f[0] === 'F' && f.length === 3 && current) {
      const abs = f[1];
      if (abs === '(none)') continue;
      const rel = abs.replace(/^\/+/, '');
      if (!abs.startsWith('/') || !isSafeRel(rel)) { rejectedPaths++; continue; }
      current.files.push({ path: rel, config: f[2].includes('c'), ghost: f[2].includes('g') });
    } else {
      throw new VunifyError('RPM_FAILED', `unexpected rpm output near '${raw.slice(0, 80).replace(/[\x00-\x1f]/g, '?')}' (a file name with control characters?)`);
    }
  }
  return { packages, missing: notInstalled, rejectedPaths };
}

export class RpmSource implements PackageSource {
  readonly kind = 'rpm' as const;
  private constructor(
    private readonly root: RootDir,
    private readonly db: DbLocation,
    private readonly rpmBin: string,
  ) {}

  get location(): string { return `/${this.db.dir}`; }
  // The database and its write-ahead log; not -shm (rewritten by every reader) nor the lock.
  get inputs(): SourceInputs {
    const files = this.db.backend === 'sqlite' ? ['rpmdb.sqlite', 'rpmdb.sqlite-wal'] : ['Packages'];
    return { folders: [], files: files.map((f) => `${this.db.dir}/${f}`) };
  }

  /** The RPM source of a root, or null when the root has no RPM database. */
  static async open(root: RootDir, rpmBin = 'rpm'): Promise<RpmSource | null> {
    const db = await findDb(root);
    return db ? new RpmSource(root, db, rpmBin) : null;
  }

  async list(names: string[] | 'all'): Promise<PackageListing> {
    await checkRpm(this.rpmBin);
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), RPMDB_TMP_PREFIX));
    try {
      for (const name of this.db.files) {
        const src = await this.root.openFile(`${this.db.dir}/${name}`);
        const dst = await fsp.open(path.join(tmp, name), 'wx', 0o600);
        try { await copyFd(src.fd, dst.fd); } finally { await src.close(); await dst.close(); }
      }
      const args = ['--dbpath', tmp, '--define', `_db_backend ${this.db.backend}`, '-q', '--qf', QF];
      if (names === 'all') args.push('-a');
      else args.push('--', ...names);
      const out = await new Promise<Buffer>((res, rej) =>
        execFile(this.rpmBin, args, { encoding: 'buffer', maxBuffer: 1 << 30 }, (err, stdout, stderr) => {
          // rpm -q exits with the number of packages not installed: not a failure here.
          if (err && typeof err.code !== 'number') return rej(err);
          if (err && stdout.length === 0 && stderr.length > 0)
            return rej(new VunifyError('RPM_FAILED', `rpm query failed: ${stderr.toString().trim().split('\n')[0]}`, this.root.path));
          res(stdout);
        }),
      );
      return parseRpmOutput(out);
    } finally {
      await fsp.rm(tmp, { recursive: true, force: true });
    }
  }
}
