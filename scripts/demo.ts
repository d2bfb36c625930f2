// `npm run demo`: builds a sample farm of real RPM vservers in a temporary folder and runs
// vunify's main job on it through the real command line, showing each command.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { makeRpmFarm, removeFarm } from '../test/builders/rpmfarm.js';

// Compiled by tsconfig.scripts.json to build/scripts/demo.js; the CLI is the package's own dist/cli.js.
const cli = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
const keep = process.argv.includes('--keep');

function show(title: string, cmd: string, args: string[], env: NodeJS.ProcessEnv): number {
  process.stdout.write(`\n## ${title}\n$ ${[cmd, ...args].join(' ')}\n`);
  const r = spawnSync(cmd === 'vunify' ? process.execPath : cmd, cmd === 'vunify' ? [cli, ...args] : args, {
    stdio: 'inherit',
    env: { ...process.env, ...env },
  });
  return r.status ?? -1;
}

const farm = await makeRpmFarm();
const env = { VUNIFY_VSERVERS_DIR: farm.vserversDir, VUNIFY_DB: path.join(farm.base, 'index') };
const servers = farm.servers.filter((s) => s !== 'ref');
let failed = false;
try {
  process.stdout.write(`Sample farm: ${farm.vserversDir} (servers ${farm.servers.join(', ')}; s3 has a newer vu-base)\n`);
  const steps: Array<[string, string, string[]]> = [
    ['What would be linked (dry run, changes nothing)', 'vunify', ['plan', 'ref', ...servers, '--', ...farm.packages]],
    ['Unify (seed syntax)', 'vunify', ['ref', ...servers, '--', ...farm.packages]],
    ['One shared inode in ref, s1 and s2 (s3 has another version), immutable', 'sh', ['-c', `ls -li ${farm.vserversDir}/*/usr/lib/vu/libvu.so.1; lsattr ${farm.vserversDir}/ref/usr/lib/vu/libvu.so.1`]],
    ['rpm -V in s1 still finds nothing to report', 'rpm', ['--root', farm.root('s1'), '--dbpath', '/var/lib/rpm', '-V', ...farm.packages]],
    ['A rescan: everything is already unified, nothing is read again', 'vunify', ['ref', ...servers, '--', ...farm.packages]],
    ['Undo: private copies with their original metadata', 'vunify', ['--undo', 'ref', ...servers, '--', ...farm.packages]],
  ];
  for (const [title, cmd, args] of steps) {
    const code = show(title, cmd, args, env);
    if (code !== 0) { failed = true; process.stderr.write(`demo: step failed with exit code ${code}\n`); break; }
  }
} finally {
  if (keep) process.stdout.write(`\nKept the farm in ${farm.base} (remove it with: chattr -R -i ${farm.base}; rm -rf ${farm.base})\n`);
  else await removeFarm(farm);
}
process.exitCode = failed ? 1 : 0;
