// node apply.mjs DIR ID: makes break ID (breaks.mjs) in the copy at DIR. Exit 3 when a `from`
// string is not found exactly once (the code moved on: fix the break, it proves nothing).
// node apply.mjs --list [ID...]: one line per break: id, test file, -t filter.
import fs from 'node:fs';
import path from 'node:path';
import { breaks } from './breaks.mjs';

const [a, ...rest] = process.argv.slice(2);
if (a === '--list') {
  for (const b of breaks) if (rest.length === 0 || rest.includes(b.id)) console.log([b.id, b.test, b.only ?? ''].join('\t'));
  process.exit(0);
}
const b = breaks.find((x) => x.id === rest[0]);
if (!b) { console.error(`no break ${rest[0]}`); process.exit(2); }
for (const e of b.edits) {
  const f = path.join(a, e.file);
  const text = fs.readFileSync(f, 'utf8');
  const n = text.split(e.from).length - 1;
  if (n !== 1) { console.error(`${b.id}: ${e.file}: the text to replace occurs ${n} times`); process.exit(3); }
  fs.writeFileSync(f, text.replace(e.from, () => e.to));
}
