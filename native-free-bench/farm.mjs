// Synthetic vserver farm for the benchmark: FARM/vservers/s0 (the reference) .. s{N-1}, every
// file under usr/. Deterministic: every size, byte, mode, owner and mtime is a pure function of
// (seed, server, file index), computed with a 32-bit hash, so any file can be re-derived without
// state (the 1% change step and the tests rely on that). Plain ESM, Node built-ins only.
//
// Per file index i, the reference s0 holds the "base" file. Each other server s holds, for the
// same path, one variant drawn per (s, i):
//   identical  ~90%  same bytes, mode, owner and mtime as s0 (a separate inode)
//   oneByte     ~3%  same size and mtime, one byte different (near the start, middle or last byte)
//   mode        ~2%  same bytes, group/other permission bits differ
//   owner       ~2%  same bytes, owned by 1000:1000 (only when generating as root; else identical)
//   unique      ~3%  other content and other size (a local change)
// One-byte and unique variants are unique to their server. The mode (or owner) variants of one
// path in two servers are alike, so a peer may link those to each other (never to s0, which
// differs); vunify links to the reference only. linkCensus() counts links to s0 only.
import fs from 'node:fs';
import path from 'node:path';

export const GENERATOR_VERSION = 1;
const KiB = 1024;
const MiB = 1024 * 1024;
const HEADER = 16; // per-file stamp: seed, index, content version, tag

/** Farm profiles. `default` is ~21,000 files / ~3.1 GB like shared/notes/peers.md. */
export const PROFILES = {
  default: {
    servers: 7, filesPerServer: 3000,
    smallMin: 1 * KiB, smallMax: 64 * KiB, // log-uniform
    largeFraction: 0.03, largeMin: 512 * KiB, largeMax: 8 * MiB, // uniform
  },
  small: {
    // ~500,000 small files (~2.2 GB): metadata-bound rather than read-bound.
    servers: 7, filesPerServer: 71429,
    smallMin: 512, smallMax: 16 * KiB,
    largeFraction: 0, largeMin: 512 * KiB, largeMax: 8 * MiB,
  },
  // The memory profiles (issue 18's peak-RSS targets): many small files (512 B-4 KiB, one
  // block each), quick to write and to copy. 10 roots x 25,000 = 250,000 files (~0.6 GB) and
  // 10 roots x 100,000 = 1,000,000 files (~2.3 GB).
  quarter: {
    servers: 10, filesPerServer: 25000,
    smallMin: 512, smallMax: 4 * KiB,
    largeFraction: 0, largeMin: 512 * KiB, largeMax: 8 * MiB,
  },
  million: {
    servers: 10, filesPerServer: 100000,
    smallMin: 512, smallMax: 4 * KiB,
    largeFraction: 0, largeMin: 512 * KiB, largeMax: 8 * MiB,
  },
};

export const VARIANT_FRACTIONS = { oneByte: 0.03, mode: 0.02, owner: 0.02, unique: 0.03 };
export const VARIANTS = ['identical', 'oneByte', 'mode', 'owner', 'unique'];

const TOPS = ['bin', 'lib', 'lib', 'share', 'share', 'share', 'libexec', 'include'];
const SUBS = ['', '', 'doc/', 'data/'];
const FILES_PER_PACKAGE = 40;
const BASE_MTIME = 1_600_000_000;

// Hash salts, one per purpose.
const S_SIZE = 1, S_LARGE = 2, S_OFF = 3, S_TOP = 4, S_SUB = 5, S_MTIME = 6, S_VAR = 7, S_POS = 8,
  S_POSKIND = 9, S_USIZE = 10, S_UOFF = 11, S_POOL = 12, S_PICK = 13, S_CSIZE = 14, S_COFF = 15;

function fmix(h) {
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h;
}

/** A 32-bit hash of (seed, a, b, c): the benchmark's seeded, order-independent PRNG. */
export function h32(seed, a, b = 0, c = 0) {
  let x = fmix((seed | 0) ^ 0x5bd1e995);
  x = fmix(x ^ Math.imul((a | 0) + 0x9e3779b9, 0x85ebca6b));
  x = fmix(x ^ Math.imul((b | 0) + 0x7f4a7c15, 0xc2b2ae35));
  x = fmix(x ^ Math.imul((c | 0) + 0x165667b1, 0x27d4eb2f));
  return x >>> 0;
}
const rnd = (seed, a, b, c) => h32(seed, a, b, c) / 4294967296;

/** Resolve farm parameters from a profile name plus overrides (servers, filesPerServer, scale, seed...). */
export function farmParams(opts = {}) {
  const profile = opts.profile ?? 'default';
  const base = PROFILES[profile];
  if (!base) throw new Error(`unknown profile ${profile} (known: ${Object.keys(PROFILES).join(', ')})`);
  const p = { profile, ...base, seed: 1, scale: 1 };
  for (const k of ['servers', 'filesPerServer', 'smallMin', 'smallMax', 'largeFraction', 'largeMin', 'largeMax', 'seed', 'scale']) {
    if (opts[k] !== undefined && opts[k] !== null) p[k] = Number(opts[k]);
  }
  p.filesPerServer = Math.max(1, Math.round(p.filesPerServer * p.scale));
  if (!(p.servers >= 2)) throw new Error('a farm needs at least 2 servers (s0 is the reference)');
  p.smallMin = Math.max(HEADER + 1, p.smallMin);
  p.largeMin = Math.max(p.smallMin, p.largeMin);
  p.smallMax = Math.max(p.smallMin, p.smallMax);
  p.largeMax = Math.max(p.largeMin, p.largeMax);
  p.generator = GENERATOR_VERSION;
  return p;
}

function poolSize(p) {
  return Math.max(p.largeMax, p.smallMax) * 2 + 2 * MiB;
}

let poolCache = null;
/** The random byte pool every file body is a slice of (filled once with a seeded xorshift). */
export function bytePool(p) {
  const size = poolSize(p);
  if (poolCache && poolCache.seed === p.seed && poolCache.buf.length === size) return poolCache.buf;
  const buf = Buffer.allocUnsafe(size);
  const words = new Uint32Array(buf.buffer, buf.byteOffset, size >>> 2);
  let x = h32(p.seed, S_POOL) | 1;
  for (let k = 0; k < words.length; k++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    words[k] = x;
  }
  poolCache = { seed: p.seed, buf };
  return buf;
}

/** The base (reference) spec of file index i. */
export function fileSpec(p, i) {
  const seed = p.seed;
  const pkg = Math.floor(i / FILES_PER_PACKAGE);
  const top = TOPS[h32(seed, S_TOP, pkg) % TOPS.length];
  const sub = SUBS[h32(seed, S_SUB, i) % SUBS.length];
  const large = rnd(seed, S_LARGE, i) < p.largeFraction;
  const size = large
    ? Math.floor(p.largeMin + rnd(seed, S_SIZE, i) * (p.largeMax - p.largeMin))
    : Math.floor(p.smallMin * Math.pow(p.smallMax / p.smallMin, rnd(seed, S_SIZE, i)));
  const exec = top === 'bin' || top === 'libexec';
  return {
    i,
    rel: `usr/${top}/pkg${String(pkg).padStart(5, '0')}/${sub}f${String(i).padStart(6, '0')}${exec ? '' : '.dat'}`,
    size,
    large,
    mode: exec ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    mtime: BASE_MTIME + (h32(seed, S_MTIME, i) % 100_000_000),
    off: h32(seed, S_OFF, i) % (poolSize(p) - size - HEADER),
    version: 0,
    tag: 0,
    flip: null,
  };
}

/** Which variant server s (1..N-1) holds for file index i. s0 always holds the base. */
export function variantOf(p, s, i) {
  if (s === 0) return 'identical';
  const r = rnd(p.seed, S_VAR, s, i);
  const f = VARIANT_FRACTIONS;
  if (r < f.oneByte) return 'oneByte';
  if (r < f.oneByte + f.mode) return 'mode';
  if (r < f.oneByte + f.mode + f.owner) return 'owner';
  if (r < f.oneByte + f.mode + f.owner + f.unique) return 'unique';
  return 'identical';
}

/** The full spec of the file server s holds at index i (content, metadata and variant). */
export function serverFileSpec(p, s, i, canChown = isRoot()) {
  const base = fileSpec(p, i);
  let variant = variantOf(p, s, i);
  if (variant === 'owner' && !canChown) variant = 'identical';
  const spec = { ...base, variant };
  const seed = p.seed;
  switch (variant) {
    case 'oneByte': {
      const bodyLen = base.size - HEADER;
      const kind = h32(seed, S_POSKIND, s, i) % 3; // 0: within the first 4 KiB, 1: middle, 2: last byte
      let pos;
      if (kind === 0) pos = HEADER + (h32(seed, S_POS, s, i) % Math.min(bodyLen, 4 * KiB - HEADER));
      else if (kind === 1) pos = HEADER + Math.floor(bodyLen / 2);
      else pos = base.size - 1;
      spec.flip = { pos, xor: 1 + (s % 255) }; // differs per server: no two variants alike
      break;
    }
    case 'mode': spec.mode = base.mode & ~0o007; break;
    case 'owner': spec.uid = 1000; spec.gid = 1000; break;
    case 'unique': {
      spec.tag = s;
      spec.size = Math.max(HEADER + 1, Math.floor(base.size * (0.5 + rnd(seed, S_USIZE, s, i))) + 1);
      spec.off = h32(seed, S_UOFF, s, i) % (poolSize(p) - spec.size - HEADER);
      break;
    }
    default: break;
  }
  return spec;
}

/** The spec of the new version (1, 2, ...) of file index i, the same in every server. */
export function changedFileSpec(p, i, version) {
  const base = fileSpec(p, i);
  const size = Math.max(HEADER + 1, Math.floor(base.size * (0.9 + 0.2 * rnd(p.seed, S_CSIZE, i, version))));
  return {
    ...base, variant: 'identical', version, size,
    off: h32(p.seed, S_COFF, i, version) % (poolSize(p) - size - HEADER),
    mtime: base.mtime + 86_400 * version,
  };
}

/** The exact bytes of a spec, as buffers to writev (slices of the pool; no copy of the body). */
export function specBuffers(p, spec, header = Buffer.alloc(HEADER)) {
  header.writeUInt32LE(p.seed >>> 0, 0);
  header.writeUInt32LE(spec.i, 4);
  header.writeUInt32LE(spec.version, 8);
  header.writeUInt32LE(spec.tag, 12);
  const pool = bytePool(p);
  const body = pool.subarray(spec.off, spec.off + spec.size - HEADER);
  if (!spec.flip) return [header, body];
  const at = spec.flip.pos - HEADER; // always inside the body
  const flipped = Buffer.from([body[at] ^ spec.flip.xor]);
  return [header, body.subarray(0, at), flipped, body.subarray(at + 1)];
}

/** Full content of a spec as one buffer (tests and checks; the writer uses specBuffers). */
export function specContent(p, spec) {
  return Buffer.concat(specBuffers(p, spec));
}

export function isRoot() {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

function writeAll(fd, bufs) {
  let total = 0;
  for (const b of bufs) total += b.length;
  let written = fs.writevSync(fd, bufs);
  while (written < total) {
    // Rare short write: finish with plain writes from the right place.
    let skip = written;
    for (const b of bufs) {
      if (skip >= b.length) { skip -= b.length; continue; }
      let o = skip;
      while (o < b.length) o += fs.writeSync(fd, b, o, b.length - o);
      written += b.length - skip;
      skip = 0;
    }
  }
}

const header = Buffer.alloc(HEADER);
/** Write one spec at abs: open, one writev, fchmod, fchown when needed, futimes, close. */
export function writeSpec(p, abs, spec, { exclusive = true } = {}) {
  const flags = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | (exclusive ? fs.constants.O_EXCL : 0);
  const fd = fs.openSync(abs, flags, spec.mode);
  try {
    writeAll(fd, specBuffers(p, spec, header));
    fs.fchmodSync(fd, spec.mode); // the umask applied at open
    if ((spec.uid !== 0 || spec.gid !== 0) && isRoot()) fs.fchownSync(fd, spec.uid, spec.gid);
    fs.futimesSync(fd, spec.mtime, spec.mtime);
  } finally {
    fs.closeSync(fd);
  }
}

export const serverName = (s) => `s${s}`;
export const serverNames = (p) => Array.from({ length: p.servers }, (_, s) => serverName(s));
export const manifestPath = (farmDir) => path.join(farmDir, 'farm.json');

/**
 * Write the farm into farmDir (FARM/vservers/sN/usr/...) and return its manifest, also saved as
 * FARM/farm.json (written last: its presence means the farm is complete). An existing farm with
 * the same parameters is reused unless force is set.
 */
export function writeFarm(farmDir, params, { force = false, log = () => {} } = {}) {
  const p = params.generator ? params : farmParams(params);
  const mpath = manifestPath(farmDir);
  if (!force && fs.existsSync(mpath)) {
    try {
      const m = JSON.parse(fs.readFileSync(mpath, 'utf8'));
      if (JSON.stringify(m.params) === JSON.stringify(p)) return { ...m, reused: true };
    } catch { /* regenerate */ }
  }
  fs.rmSync(farmDir, { recursive: true, force: true });
  const vserversDir = path.join(farmDir, 'vservers');
  const t0 = process.hrtime.bigint();
  const canChown = isRoot();
  bytePool(p);
  const counts = Object.fromEntries(VARIANTS.map((v) => [v, 0]));
  let totalBytes = 0;
  let largeFiles = 0;
  for (let s = 0; s < p.servers; s++) {
    const root = path.join(vserversDir, serverName(s));
    const made = new Set();
    for (let i = 0; i < p.filesPerServer; i++) {
      const spec = s === 0 ? fileSpec(p, i) : serverFileSpec(p, s, i, canChown);
      const abs = path.join(root, spec.rel);
      const dir = path.dirname(abs);
      if (!made.has(dir)) { fs.mkdirSync(dir, { recursive: true, mode: 0o755 }); made.add(dir); }
      writeSpec(p, abs, spec);
      totalBytes += spec.size;
      if (spec.large) largeFiles++;
      if (s > 0) counts[spec.variant]++;
    }
    log(`  farm: wrote ${serverName(s)} (${p.filesPerServer} files)`);
  }
  const manifest = {
    params: p,
    dir: farmDir,
    vserversDir,
    servers: serverNames(p),
    files: p.servers * p.filesPerServer,
    bytes: totalBytes,
    largeFiles,
    serverVariants: counts, // over servers s1..s{N-1}
    ownerVariantsWritten: canChown,
    generationSeconds: Number(process.hrtime.bigint() - t0) / 1e9,
    createdAt: new Date().toISOString(),
  };
  fs.writeFileSync(mpath, JSON.stringify(manifest, null, 2) + '\n');
  return { ...manifest, reused: false };
}

/** The file indexes the change step rewrites: `percent`% of them, chosen by the seed. */
export function changedIndexes(p, percent, version = 1) {
  const want = Math.max(1, Math.round((p.filesPerServer * percent) / 100));
  const picked = [];
  for (let i = 0; i < p.filesPerServer; i++) picked.push([h32(p.seed, S_PICK, i, version), i]);
  picked.sort((a, b) => a[0] - b[0]);
  return picked.slice(0, want).map(([, i]) => i).sort((a, b) => a - b);
}

/**
 * The 1% change: a package upgrade applied to every root. For each picked index, write version
 * `version` to a temporary name beside the file and rename it over the old one, in every server
 * (the reference included), so the new files are identical across servers again. The caller must
 * clear the immutable attribute of the old files first. Returns the indexes changed.
 */
export function changeFarm(vserversDir, p, indexes, version = 1) {
  for (let s = 0; s < p.servers; s++) {
    const root = path.join(vserversDir, serverName(s));
    for (const i of indexes) {
      const spec = changedFileSpec(p, i, version);
      const abs = path.join(root, spec.rel);
      const tmp = `${abs}.bench-new`;
      writeSpec(p, tmp, spec);
      fs.renameSync(tmp, abs);
    }
  }
  return indexes;
}

/**
 * Which server paths now share the reference's inode, by the variant the generator put there:
 * linkedIdentical of expectedIdentical; linkedMetadataDiffers (mode/owner variants: fine for a
 * content-only tool, wrong for one that promises metadata checks); linkedContentDiffers (always a
 * bug: one-byte or unique variants). `changed` indexes count as identical (all roots rewritten).
 */
export function linkCensus(vserversDir, p, changed = []) {
  const changedSet = new Set(changed);
  const canChown = isRoot();
  const c = { expectedIdentical: 0, linkedIdentical: 0, metadataVariants: 0, linkedMetadataDiffers: 0, linkedContentDiffers: 0 };
  const refIno = new Array(p.filesPerServer);
  for (let i = 0; i < p.filesPerServer; i++) {
    refIno[i] = fs.lstatSync(path.join(vserversDir, 's0', fileSpec(p, i).rel), { bigint: true }).ino;
  }
  for (let s = 1; s < p.servers; s++) {
    for (let i = 0; i < p.filesPerServer; i++) {
      const base = fileSpec(p, i);
      let v = changedSet.has(i) ? 'identical' : variantOf(p, s, i);
      if (v === 'owner' && !canChown) v = 'identical';
      const linked = fs.lstatSync(path.join(vserversDir, serverName(s), base.rel), { bigint: true }).ino === refIno[i];
      if (v === 'identical') { c.expectedIdentical++; if (linked) c.linkedIdentical++; }
      else if (v === 'mode' || v === 'owner') { c.metadataVariants++; if (linked) c.linkedMetadataDiffers++; }
      else if (linked) c.linkedContentDiffers++;
    }
  }
  return c;
}
