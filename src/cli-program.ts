// The command line: parses options, calls the library, prints the report, maps errors
// to one line and an exit code. `vunify REF SERVER... -- PKG...` stays the seed syntax.
// cli.ts runs it; tests import the program from here.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
// The pipeline loads only when needed: a quick rescan of an unchanged farm needs none of it.
import type { CommonOptions, UnifyOptions } from './engine.js';
import type { terminalProgress } from './cli-progress-bar.js';
import { DEFAULT_DB, DEFAULT_VSERVERS_DIR } from './paths.js';
import { quickReport } from './quick/check.js';
import { EXIT, VunifyError, oneLine } from './errors.js';
import { formatCsv, formatText, type Report } from './report.js';
import { measure, measured, writePending } from './metrics.js';

// commander is CommonJS: required, not imported through its ES module wrapper (2-3 ms at start).
const { Command, CommanderError, Option } = createRequire(import.meta.url)('commander') as typeof import('commander');
type Command = InstanceType<typeof Command>;

const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };

interface Flags {
  vserversDir: string;
  db: string;
  rpm: string;
  allPackages?: boolean;
  json?: boolean;
  csv?: boolean;
  quiet?: boolean;
  verbose?: number;
  dryRun?: boolean;
  immutable?: boolean;
  undo?: boolean;
  rebuildIndex?: boolean;
  top?: string;
  packageManager?: 'auto' | 'rpm' | 'dpkg' | 'none';
  allFiles?: boolean;
  exclude?: string[];
  excludeFrom?: string[];
  defaultExcludes?: boolean;
  progress?: boolean;
  sample?: string;
  full?: boolean;
  save?: string;
  metrics?: string;
  method?: 'link' | 'reflink';
  pool?: boolean;
  poolDir?: string;
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

const methodOption = () => new Option('--method <method>', 'link: hard links to the reference, immutable; reflink: shared extents, each file keeps its inode (btrfs, XFS)')
  .choices(['link', 'reflink']).default('link');

const metricsOption = () => new Option('--metrics <file>', 'write the run\'s outcome to FILE in Prometheus text format (node_exporter textfile collector)');

const dbOption = () => new Option('--db <path>', 'the LMDB index').env('VUNIFY_DB').default(DEFAULT_DB);

type Shared = '--vservers-dir' | '--quiet' | '--verbose';

/**
 * The options every command takes, so that scripts and units can pass the same ones to each
 * (`vunify status --vservers-dir /srv/vs --db X` must not fail); `unused` are accepted and ignored.
 */
function shared(cmd: Command, unused: Shared[] = []): Command {
  const says = (flag: Shared, what: string) => unused.includes(flag) ? `accepted for scripts; ${cmd.name()} ignores it` : what;
  return cmd
    .addOption(new Option('--vservers-dir <dir>', says('--vservers-dir', 'where server names are looked up')).env('VUNIFY_VSERVERS_DIR').default(DEFAULT_VSERVERS_DIR))
    .addOption(dbOption())
    .option('--json', 'print the report as one JSON document on stdout')
    .option('-q, --quiet', says('--quiet', 'print errors only'))
    .option('-v, --verbose', says('--verbose', 'list the files linked or restored, and those that failed; -vv: every file and its reason'),
      (_v: string, prev: number) => prev + 1, 0);
}

function common(cmd: Command): Command {
  return shared(cmd
    .argument('<reference>', 'the reference server: its copy of each file becomes the shared one')
    .argument('<servers...>', 'servers to unify with the reference (names under --vservers-dir, or paths)'))
    .option('--rebuild-index', 'if the index cannot be read, move it aside and start a new one')
    .addOption(new Option('--rpm <program>', 'the rpm program used to read package databases').env('VUNIFY_RPM').default('rpm'))
    .option('--all-packages', 'every package installed in the reference, instead of a list after --')
    .addOption(new Option('--package-manager <kind>', 'package database to read (detected per root by default)').choices(['auto', 'rpm', 'dpkg', 'none']).default('auto'))
    .option('--all-files', 'tree mode: every regular file of the roots, minus the excludes (config files of a package database stay out)')
    .option('--exclude <pattern>', 'tree mode: leave out paths matching this glob (repeatable; /x anchors at the root, a bare name matches at any depth)', collect)
    .option('--exclude-from <file>', 'tree mode: leave out the patterns in this file, one per line (repeatable)', collect)
    .option('--no-default-excludes', 'tree mode: do not start from the built-in list (/etc, /var, /tmp, /home, keys...)')
    .option('--progress', 'show progress on stderr even when it is not a terminal')
    .option('--csv', 'print the report as CSV on stdout (per server; with -v, one row per file)')
    .option('--pool', 'share files the reference lacks among the servers that hold them, through a host-only pool (VSERVERS_DIR/.vunify-pool)')
    .option('--pool-dir <dir>', 'the pool folder (implies --pool): outside every root, on the same filesystem');
}

async function runOptions(ref: string, servers: string[], flags: Flags, packages: string[]): Promise<CommonOptions> {
  if (flags.allPackages && packages.length > 0) throw new VunifyError('USAGE', 'give packages after -- or --all-packages, not both');
  return {
    reference: ref,
    servers,
    packages: flags.allPackages ? 'all' : packages,
    vserversDir: flags.vserversDir,
    db: flags.db,
    rpm: flags.rpm,
    verbose: flags.verbose ?? 0,
    rebuildIndex: flags.rebuildIndex,
    log: flags.quiet || flags.json ? undefined : (line) => process.stderr.write(`vunify: ${line}\n`),
    progress: await progressFor(flags),
    trace: process.env.VUNIFY_TRACE ? trace : undefined,
    packageManager: flags.packageManager,
    allFiles: flags.allFiles,
    exclude: flags.exclude,
    excludeFrom: flags.excludeFrom,
    defaultExcludes: flags.defaultExcludes,
    method: flags.method,
    pool: flags.pool || flags.poolDir !== undefined,
    poolDir: flags.poolDir,
  };
}

/** VUNIFY_TRACE=1: each phase's time, the memory in use after it (resident; JS heap used of committed; live heap with node --expose-gc) and the peak during it. */
function trace(phase: string, ms: number): void {
  // Under node --expose-gc, the heap figure is what is alive, not what awaits collection.
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  const mb = (n: number) => `${Math.round(n / 2 ** 20)} MB`;
  // Resident memory split into anonymous (heap, malloc) and file pages (the index's map).
  let split = '';
  try {
    const st = readFileSync('/proc/self/status', 'utf8');
    const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(st)?.[1] ?? 0) * 1024;
    split = ` = anon ${mb(kb('RssAnon'))} + file ${mb(kb('RssFile'))}; peak ${mb(kb('VmHWM'))} during it`;
    // The next line's peak is its phase's own (this resets VmHWM; only under VUNIFY_TRACE).
    writeFileSync('/proc/self/clear_refs', '5');
  } catch { /* not Linux */ }
  process.stderr.write(`vunify: trace: ${phase} ${ms.toFixed(0)} ms, at ${process.uptime().toFixed(1)} s (rss ${mb(m.rss)}${split}; heap ${mb(m.heapUsed)} of ${mb(m.heapTotal)}, buffers ${mb(m.arrayBuffers)})\n`);
}

let bars: ReturnType<typeof terminalProgress> | null = null;

/** A live display on a terminal (stdout and stderr both), never with --quiet; --progress forces it. */
async function progressFor(flags: Flags) {
  const tty = process.stdout.isTTY && process.stderr.isTTY;
  if (flags.quiet || !(flags.progress || tty)) return undefined;
  bars ??= (await import('./cli-progress-bar.js')).terminalProgress();
  return bars.sink;
}

/**
 * V8 lets its old space grow to up to 4x the live data between full collections: a first
 * unify of 500,000 files peaked at 1.99 GB that way, 1.77 GB growing by 20% at a time, in the
 * same wall time. V8 reads the flag at each collection, so setting it now takes effect. Set
 * here, where a run starts to hold the farm in memory, not at start: a quick rescan never
 * gets there.
 */
async function heavy<T>(load: () => Promise<T>): Promise<T> {
  (await import('node:v8')).setFlagsFromString('--heap-growing-percent=20');
  return load();
}

const engine = () => heavy(() => import('./engine.js'));

/** The quick rescan first; the full pipeline only when it cannot tell. */
async function runUnify(o: UnifyOptions): Promise<Report> {
  const started = Date.now();
  const quick = o.full || o.method === 'reflink' ? null : quickReport(o, started);
  if (quick) return quick;
  const t0 = performance.now();
  const e = await engine();
  o.trace?.('engine loaded', performance.now() - t0);
  return e.unify({ ...o, quickTried: true });
}

function print(report: Report, flags: Flags): number {
  bars?.stop();
  if (flags.json && flags.csv) throw new VunifyError('USAGE', 'choose --json or --csv, not both');
  if (flags.json) process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  else if (flags.csv) process.stdout.write(formatCsv(report));
  else if (!flags.quiet) process.stdout.write(formatText(report));
  else for (const e of report.errors) process.stderr.write(`vunify: ${e.server}: ${e.path}: ${e.reason}\n`);
  return report.errors.length > 0 ? EXIT.partial : EXIT.ok;
}

export function buildProgram(packages: string[], done: (code: number) => void): Command {
  const program = new Command('vunify')
    .description('Hard-link identical package files of vservers to a reference server, immutable, undoable.')
    .version(pkg.version)
    .usage('[options] REFERENCE SERVER... -- PACKAGE...')
    .showHelpAfterError('(run vunify --help for usage)')
    .exitOverride();

  common(program.command('unify', { isDefault: true }))
    .description('link identical files of the named packages (the default command)')
    .option('-n, --dry-run', 'report what would be linked; change nothing')
    .option('--no-immutable', 'do not set the immutable attribute (a write in one server then changes all)')
    .option('--undo', 'same as the undo command (seed syntax)')
    .option('--full', 'scan every file even if the farm is unchanged since the last complete unify (no quick rescan)')
    .addOption(methodOption())
    .addOption(metricsOption())
    .action(async (ref: string, servers: string[], flags: Flags) => {
      measure(flags.metrics, 'unify');
      const o = await runOptions(ref, servers, flags, packages);
      if (flags.undo) {
        if (flags.dryRun) throw new VunifyError('USAGE', '--undo cannot be combined with --dry-run');
        return done(print(measured(await (await engine()).undo(o)), flags));
      }
      done(print(measured(await runUnify({ ...o, dryRun: flags.dryRun, immutable: flags.immutable, full: flags.full })), flags));
    });

  common(program.command('plan'))
    .description('a dry run: report what unify would link, change nothing in any server')
    .option('--full', 'scan every file even if the farm is unchanged since the last complete unify (no quick rescan)')
    .addOption(methodOption())
    .option('--save <file>', 'write every decision to FILE (JSON, for review and vunify apply); scans in full')
    .addOption(metricsOption())
    .action(async (ref: string, servers: string[], flags: Flags) => {
      measure(flags.metrics, 'plan');
      const o = { ...(await runOptions(ref, servers, flags, packages)), dryRun: true, full: flags.full };
      if (flags.save && o.pool) throw new VunifyError('USAGE', 'plan --save does not record pool decisions; review with plan --pool, then run unify --pool');
      done(print(measured(flags.save ? await (await heavy(() => import('./apply-plan.js'))).savePlan(o, flags.save) : await runUnify(o)), flags));
    });

  shared(program.command('apply'))
    .description('carry out the link decisions of a plan saved by plan --save, each file checked again; nothing else')
    .argument('<file>', 'the plan file')
    .option('-n, --dry-run', 'show which link decisions still apply (their files as planned); change nothing')
    .option('--progress', 'show progress on stderr even when it is not a terminal')
    .option('--csv', 'print the report as CSV on stdout (per server; with -v, one row per file)')
    .addOption(metricsOption())
    .action(async (file: string, flags: Flags, cmd: Command) => {
      measure(flags.metrics, 'apply');
      const { applyPlan } = await heavy(() => import('./apply-plan.js'));
      const o = await runOptions('', [], flags, []);
      // Names resolve in the plan's vservers folder unless one is given (option or environment).
      const vserversDir = cmd.getOptionValueSource('vserversDir') === 'default' ? undefined : flags.vserversDir;
      done(print(measured(await applyPlan({ ...o, file, vserversDir, dryRun: flags.dryRun })), flags));
    });

  common(program.command('undo'))
    .description('give each server a private copy of its shared files again, with their original metadata')
    .action(async (ref: string, servers: string[], flags: Flags) => {
      done(print(await (await engine()).undo(await runOptions(ref, servers, flags, packages)), flags));
    });

  common(program.command('scan'))
    .description('refresh the index for the packages\' files (reads only what changed); link nothing')
    .addOption(methodOption())
    .addOption(metricsOption())
    .action(async (ref: string, servers: string[], flags: Flags) => {
      measure(flags.metrics, 'scan');
      done(print(measured(await (await engine()).scan(await runOptions(ref, servers, flags, packages))), flags));
    });

  shared(program.command('report'), ['--vservers-dir', '--quiet', '--verbose'])
    .description('savings so far and still possible, per server and package, from the index alone')
    .option('--top <n>', 'how many of the largest possible wins to list', '10')
    .option('--csv', 'print the report as CSV on stdout (one row per server, package and win)')
    .addOption(metricsOption())
    .action(async (flags: Flags) => {
      measure(flags.metrics, 'report');
      const { formatIndexReport, indexReport, indexReportCsv } = await import('./summary.js');
      const r = measured(await indexReport({ db: flags.db, top: Number(flags.top) }));
      process.stdout.write(flags.json ? JSON.stringify(r, null, 2) + '\n' : flags.csv ? indexReportCsv(r) : formatIndexReport(r));
      done(EXIT.ok);
    });

  shared(program.command('gc'), ['--vservers-dir', '--verbose'])
    .description('drop index entries of vanished files and servers, then compact the index')
    .option('--rebuild-index', 'if the index cannot be read, move it aside and start a new one')
    .action(async (flags: Flags) => {
      const r = await (await heavy(() => import('./maintenance.js'))).gc({ db: flags.db, rebuildIndex: flags.rebuildIndex });
      if (flags.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      else if (!flags.quiet) {
        for (const st of r.steps) process.stdout.write(`${st.name.padEnd(24)} ${String(st.dropped).padStart(8)} dropped  ${st.ms} ms\n`);
        process.stdout.write(`index ${r.index}: ${r.bytesBefore} -> ${r.bytesAfter} bytes\n`);
      }
      done(EXIT.ok);
    });

  shared(program.command('verify'), ['--vservers-dir', '--verbose'])
    .description('check that the links vunify made are intact: still linked, still immutable, same content (changes nothing)')
    .option('--sample <n>', 'hash the content of only N randomly chosen shared inodes (default: every one)')
    .addOption(metricsOption())
    .action(async (flags: Flags) => {
      measure(flags.metrics, 'verify');
      const sample = flags.sample === undefined ? undefined : Number(flags.sample);
      if (sample !== undefined && !(/^\d+$/.test(flags.sample!) && Number.isSafeInteger(sample))) {
        throw new VunifyError('USAGE', `--sample takes a whole number of inodes, not ${JSON.stringify(flags.sample)}`);
      }
      const { formatVerify, verifyIndex } = await heavy(() => import('./verify.js'));
      const r = measured(await verifyIndex({ db: flags.db, sample }));
      if (flags.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      else if (!flags.quiet) process.stdout.write(formatVerify(r));
      else { // a drift is what -q keeps: one line each, like a failed file of unify
        for (const d of r.drifts) process.stderr.write(`vunify: ${d.server}: ${d.path || '(root)'}: ${d.reason}${d.detail ? ` (${d.detail})` : ''}\n`);
        if (r.unfinished > 0) process.stderr.write(`vunify: ${r.unfinished} change(s) a killed run left under way; run vunify recover\n`);
      }
      done(r.drifts.length > 0 ? EXIT.partial : EXIT.ok);
    });

  shared(program.command('status'), ['--vservers-dir', '--quiet', '--verbose'])
    .description('what the index holds: roots and their last scan, links and bytes saved per server, from the index alone')
    .action(async (flags: Flags) => {
      const { formatStatus, status } = await import('./status.js');
      const r = await status({ db: flags.db });
      process.stdout.write(flags.json ? JSON.stringify(r, null, 2) + '\n' : formatStatus(r));
      done(EXIT.ok);
    });

  shared(program.command('recover'), ['--vservers-dir', '--verbose'])
    .description('finish or roll back the changes a killed run left under way (every command does this first)')
    .action(async (flags: Flags) => {
      const r = await (await import('./maintenance.js')).recoverRun({ db: flags.db });
      if (flags.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
      else {
        if (!flags.quiet) process.stdout.write(r.entries === 0 ? 'nothing to recover\n'
          : `recovered ${r.entries} unfinished change(s): ${r.temporariesRemoved} temporary file(s) removed, ${r.linksKept} link(s) kept, ` +
            `${r.linkRecordsDropped} link record(s) dropped, ${r.attributesRestored} attribute(s) restored` +
            (r.swappedBack ? `, ${r.swappedBack} file(s) put back on their own inode` : '') + '\n');
        for (const p of r.problems) process.stderr.write(`vunify: ${p}\n`);
      }
      done(r.problems.length ? EXIT.partial : EXIT.ok);
    });

  return program;
}

const COMMANDS = new Set(['unify', 'plan', 'apply', 'undo', 'scan', 'report', 'gc', 'recover', 'verify', 'status', 'help']);
const TAKES_VALUE = new Set(['--method', '--db', '--vservers-dir', '--rpm', '--exclude', '--exclude-from', '--package-manager', '--top', '--sample', '--save', '--metrics']);

/** Lets options come before the command too (`vunify -q undo ...`): the command moves first. */
export function commandFirst(args: string[]): string[] {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a.startsWith('-')) {
      if (TAKES_VALUE.has(a)) i++;
      continue;
    }
    return COMMANDS.has(a) && i > 0 ? [a, ...args.slice(0, i), ...args.slice(i + 1)] : args;
  }
  return args;
}

/** Runs the command line; with --metrics, writes them with the exit code, whatever the run's end. */
export async function main(argv: string[]): Promise<number> {
  return writePending(await run(argv));
}

async function run(argv: string[]): Promise<number> {
  const dd = argv.indexOf('--', 2);
  const before = [...argv.slice(0, 2), ...commandFirst((dd < 0 ? argv : argv.slice(0, dd)).slice(2))];
  const packages = dd < 0 ? [] : argv.slice(dd + 1);
  let code: number = EXIT.ok;
  const program = buildProgram(packages, (c) => { code = c; });
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  try {
    await program.parseAsync(before);
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.ok;
      return EXIT.usage; // commander printed the message
    }
    if (err instanceof VunifyError) {
      process.stderr.write(`vunify: error: ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`vunify: internal error: ${oneLine(err)}\n`);
    if (process.env.VUNIFY_TRACE) process.stderr.write(`${(err as Error)?.stack}\n`);
    return EXIT.internal;
  }
}

