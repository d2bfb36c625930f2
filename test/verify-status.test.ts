// verify and status on a real RPM farm: real links made by the real CLI, the real
// immutable attribute, real tampering with chattr, cp and rename; then the table helpers.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VunifyError } from '../src/errors.js';
import { tryLock } from '../src/fsx/sys.js';
import { makeRpmFarm, removeFarm, type Farm } from './builders/rpmfarm.js';
import { formatStatus, status } from '../src/status.js';
import { formatTable, toCsv } from '../src/table.js';
import { formatVerify, verifyIndex, type Drift } from '../src/verify.js';
import { lsattrHasImmutable, snapshot, vunify } from './helpers/tree.js';

const PKGS = ['vu-base', 'vu-extra'];
const SERVERS = ['s1', 's2', 's3'];

let farm: Farm;
let db: string;
let env: NodeJS.ProcessEnv;
/** The parts of `vunify unify --json` compared here. */
interface Counts { unified: number; bytesSaved: number }
let unified: { servers: Record<string, Counts>; totals: Counts };

const file = (server: string, rel: string) => path.join(farm.root(server), rel);
const chattr = (flag: '+i' | '-i', p: string) => execFileSync('chattr', [flag, p]);
const snapAll = () => new Map(['ref', ...SERVERS].map((s) => [s, snapshot(farm.root(s))]));
const brief = (d: Drift) => ({ server: d.server, path: d.path, reason: d.reason });

/** Gives `server` a private copy of `rel` in place of its link, the way an admin would. */
function privateCopy(server: string, rel: string) {
  const p = file(server, rel);
  const tmp = path.join(path.dirname(p), '.private-copy');
  execFileSync('cp', ['-p', '--', p, tmp]);
  chattr('-i', p); // renaming over an immutable file is refused
  fs.renameSync(tmp, p);
}

beforeAll(async () => {
  farm = await makeRpmFarm();
  db = path.join(farm.base, 'index');
  env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: db };
  const r = vunify(['unify', '--json', 'ref', ...SERVERS, '--', ...PKGS], env);
  if (r.status !== 0) throw new Error(`unify failed (${r.status}): ${r.stderr}`);
  unified = JSON.parse(r.stdout);
});

afterAll(async () => {
  if (farm) await removeFarm(farm);
});

describe('verify and status on a real farm', () => {
  it('right after unify: no drift, every link and every shared inode checked, nothing changed', async () => {
    expect(unified.totals.unified).toBeGreaterThan(20);
    const before = snapAll();
    const r = await verifyIndex({ db });
    expect(r.drifts).toEqual([]);
    expect(r.command).toBe('verify');
    expect(r.checked.links).toBe(unified.totals.unified);
    expect(r.checked.inodes).toBeGreaterThan(0);
    expect(r.checked.inodes).toBeLessThan(r.checked.links);
    expect(r.checked.contentChecked).toBe(r.checked.inodes);
    expect(r.unfinished).toBe(0);
    expect(formatVerify(r)).toMatch(/^vunify verify: \d+ link\(s\) to \d+ shared inode\(s\), content of \d+ hashed: no drift \(\d+ ms\)\n$/);
    expect(snapAll()).toEqual(before); // read-only: not even an atime moved
  });

  it('status counts what unify reported, per server and in total', async () => {
    const s = await status({ db });
    expect(s.command).toBe('status');
    expect(s.schema).toBe(2);
    expect(s.indexBytes).toBe(fs.statSync(path.join(db, 'data.mdb')).size);
    expect(s.indexBytes).toBeGreaterThan(0);
    expect(s.servers.map((x) => x.name)).toEqual(SERVERS);
    for (const x of s.servers) {
      expect(x.root).toBe(farm.root(x.name));
      expect(x.linkedFiles).toBe(unified.servers[x.name].unified);
      expect(x.bytesSaved).toBe(unified.servers[x.name].bytesSaved);
    }
    expect(s.totals.linkedFiles).toBe(unified.totals.unified);
    expect(s.totals.bytesSaved).toBe(unified.totals.bytesSaved);
    expect(s.packages).toEqual(PKGS);
    expect(s.totals.packages).toBe(2);
    const v = await verifyIndex({ db });
    expect(s.totals.sharedInodes).toBe(v.checked.inodes);
    expect(s.totals.immutableInodes).toBe(v.checked.inodes);
    expect(s.roots.map((x) => [x.name, x.role])).toEqual([['ref', 'reference'], ['s1', 'server'], ['s2', 'server'], ['s3', 'server']]);
    for (const x of s.roots) {
      expect(x.files).toBeGreaterThan(10);
      expect(x.lastScanAt).toMatch(/^\d{4}-\d\d-\d\dT/);
      expect(x.lastScanMs).toBeGreaterThanOrEqual(0);
    }
    const text = formatStatus(s);
    expect(text).toMatch(/^total +\d+ +[\d.]+ KiB$/m);
    for (const n of SERVERS) expect(text).toMatch(new RegExp(`^${n} +${unified.servers[n].unified} `, 'm'));
    expect(text).toContain(`${unified.totals.unified} linked file(s) in 3 server(s)`);
  });

  it('reports each kind of tampering at the right path, and nothing else', async () => {
    // (a) the attribute cleared on a shared inode (through a server's path: it is the inode's)
    chattr('-i', file('s1', 'usr/share/vu/data.txt'));
    expect(lsattrHasImmutable(file('ref', 'usr/share/vu/data.txt'))).toBe(false);
    // (b) another shared inode: attribute cleared and the content changed, size kept, so
    // only the hash can tell
    const b = file('s3', 'usr/share/vu-extra/b.txt');
    chattr('-i', b);
    const fd = fs.openSync(b, 'r+');
    expect(fs.readFileSync(b, 'utf8').startsWith('extra b')).toBe(true);
    fs.writeSync(fd, 'E', 0);
    fs.closeSync(fd);
    // (c) one server's link replaced with a private copy; the attribute put back on the
    // shared inode, so that only the link is gone
    privateCopy('s2', 'usr/share/vu-extra/with space.txt');
    chattr('+i', file('ref', 'usr/share/vu-extra/with space.txt'));

    const before = snapAll();
    const r = await verifyIndex({ db });
    expect(snapAll()).toEqual(before);
    expect(r.drifts.map(brief)).toEqual([
      { server: 'ref', path: '/usr/share/vu-extra/b.txt', reason: 'attribute cleared' },
      { server: 'ref', path: '/usr/share/vu-extra/b.txt', reason: 'content changed' },
      { server: 'ref', path: '/usr/share/vu/data.txt', reason: 'attribute cleared' },
      { server: 's2', path: '/usr/share/vu-extra/with space.txt', reason: 'not linked any more' },
    ]);
    expect(r.drifts.every((d) => d.root === farm.root(d.server))).toBe(true);
    expect(r.drifts.find((d) => d.reason === 'content changed')!.detail).toMatch(/^BLAKE3 /);
    expect(r.drifts.find((d) => d.reason === 'not linked any more')!.detail).toMatch(/a private copy/);
    expect(r.checked.links).toBe(unified.totals.unified);

    const text = formatVerify(r);
    const lines = text.trimEnd().split('\n');
    expect(lines[0]).toMatch(/: 4 drift\(s\) \(\d+ ms\)$/);
    expect(lines).toHaveLength(1 + 1 + 4); // summary, table head, one line per drift
    expect(lines[5]).toMatch(/^s2 +\/usr\/share\/vu-extra\/with space\.txt +not linked any more +inode \d+/);

    // a sample of 0 hashes nothing, so the same-size change goes unseen; everything else is still checked
    const none = await verifyIndex({ db, sample: 0 });
    expect(none.checked.contentChecked).toBe(0);
    expect(none.drifts.map(brief)).toEqual(r.drifts.map(brief).filter((d) => d.reason !== 'content changed'));
    const one = await verifyIndex({ db, sample: 1 });
    expect(one.checked.contentChecked).toBe(1);
    expect((await verifyIndex({ db, sample: 0, full: true })).checked.contentChecked).toBe(r.checked.contentChecked);
    await expect(verifyIndex({ db, sample: -1 })).rejects.toMatchObject({ code: 'USAGE' });
  });

  it('a missing link and a replaced reference file', async () => {
    // (d) a server's linked file deleted
    const gone = file('s3', 'usr/share/vu-extra/a.txt');
    chattr('-i', gone);
    fs.unlinkSync(gone);
    chattr('+i', file('ref', 'usr/share/vu-extra/a.txt'));
    // (e) the reference's own copy replaced: the servers still share the old inode
    privateCopy('ref', 'usr/share/doc/vu-base/README');
    chattr('+i', file('s1', 'usr/share/doc/vu-base/README'));
    const r = await verifyIndex({ db });
    const rest = r.drifts.map(brief).filter((d) => !['/usr/share/vu-extra/b.txt', '/usr/share/vu/data.txt', '/usr/share/vu-extra/with space.txt'].includes(d.path));
    expect(rest).toEqual([
      { server: 'ref', path: '/usr/share/doc/vu-base/README', reason: 'reference changed' },
      { server: 's3', path: '/usr/share/vu-extra/a.txt', reason: 'missing' },
    ]);
    expect(r.drifts).toHaveLength(4 + 2);
  });

  it('status reads the index alone: tampering with the farm does not change it', async () => {
    const s = await status({ db });
    expect(s.totals.linkedFiles).toBe(unified.totals.unified);
    expect(s.totals.bytesSaved).toBe(unified.totals.bytesSaved);
  });

  it('after a rescan the drifts in the farm are still reported', async () => {
    const before = await verifyIndex({ db });
    const r = vunify(['scan', '-q', 'ref', ...SERVERS, '--', ...PKGS], env);
    expect(r.status, r.stderr).toBe(0);
    const after = await verifyIndex({ db });
    // A scan re-records a changed shared inode without reading it (its paths share one
    // inode: nothing to compare), so the index may lose the hash the change is seen by;
    // every other drift stays, and the lost hashes are counted, not taken as checked.
    const notContent = (ds: Drift[]) => ds.filter((d) => d.reason !== 'content changed').map(brief);
    expect(notContent(after.drifts)).toEqual(notContent(before.drifts));
    expect(after.checked.contentChecked + after.checked.contentUnknown).toBe(before.checked.contentChecked + before.checked.contentUnknown);
  });

  it('verify waits for no one: it fails with LOCKED while another run holds the lock', async () => {
    const fd = fs.openSync(`${db}.run-lock`, 'a');
    try {
      expect(tryLock(fd)).toBe(true);
      const err = await verifyIndex({ db }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(VunifyError);
      expect(err).toMatchObject({ code: 'LOCKED' });
      expect((await status({ db })).totals.linkedFiles).toBe(unified.totals.unified); // no lock needed
    } finally {
      fs.closeSync(fd);
    }
  });

  it('no index: a clear INDEX error, and no index is created', async () => {
    const nowhere = path.join(farm.base, 'no-index');
    await expect(verifyIndex({ db: nowhere })).rejects.toMatchObject({ code: 'INDEX' });
    await expect(status({ db: nowhere })).rejects.toMatchObject({ code: 'INDEX' });
    expect(fs.existsSync(nowhere)).toBe(false);
    expect(fs.existsSync(`${nowhere}.run-lock`)).toBe(false);
  });
});

describe('formatTable and toCsv', () => {
  it('aligns: first column left, numeric columns right, text columns left, no trailing spaces', () => {
    expect(formatTable(['server', 'files', 'saved', 'note'], [
      ['s1', '9', '241.2 KiB', 'ok'],
      ['web-long', '1234', '12 B', ''],
      ['total', '1243', '1.0 MiB', 'all servers'],
    ])).toBe(
      'server    files      saved  note\n' +
      's1            9  241.2 KiB  ok\n' +
      'web-long   1234       12 B\n' +
      'total      1243    1.0 MiB  all servers\n');
  });

  it('takes an explicit alignment, pads short rows, and escapes control characters', () => {
    expect(formatTable(['a', 'b'], [['1', 'x'], ['22']], ['r', 'r'])).toBe(' a  b\n 1  x\n22\n');
    const t = formatTable(['path', 'n'], [['/a\nb', '1'], ['/\x1b[31mred', '22'], ['/tab\there', '3']]);
    expect(t).toBe(
      'path           n\n' +
      '/a\\nb          1\n' +
      '/\\x1b[31mred  22\n' +
      '/tab\\there     3\n');
    expect(t.split('\n')).toHaveLength(5);
  });

  it('counts wide and combining characters as the terminal shows them', () => {
    expect(formatTable(['name', 'n'], [['日本', '1'], ['e\u0301', '2'], ['abcd', '3']])).toBe(
      'name  n\n' +
      '日本  1\n' +
      'e\u0301     2\n' +
      'abcd  3\n');
  });

  it('an empty table is its head', () => {
    expect(formatTable(['a', 'bb'], [])).toBe('a  bb\n');
  });

  it('CSV quotes exactly the fields RFC 4180 says, doubling quotes', () => {
    expect(toCsv(['path', 'size', 'note'], [
      ['/plain', 1, 'x'],
      ['/with,comma', 2, 'say "hi"'],
      ['/line\nfeed', 3, 'cr\rhere'],
      [' spaced ', 0, ''],
      ['"', -1.5, 'crlf\r\n'],
    ])).toBe(
      'path,size,note\r\n' +
      '/plain,1,x\r\n' +
      '"/with,comma",2,"say ""hi"""\r\n' +
      '"/line\nfeed",3,"cr\rhere"\r\n' +
      ' spaced ,0,\r\n' +
      '"""",-1.5,"crlf\r\n"\r\n');
    expect(toCsv(['only'], [])).toBe('only\r\n');
  });
});
