// The long fuzz run (not part of `npm test`): every fuzz target of test/helpers/fuzz.ts with its
// long case count, over 10^6 cases in all. Prints a table, writes JSON, exits 1 on the first failure
// (fast-check prints the seed and the smallest failing case to replay it).
//   npm run fuzz [-- --scale 0.1] [-- --seed N] [-- --json FILE]
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fuzzTargets, runFuzzTarget } from '../test/helpers/fuzz.js';

const { values } = parseArgs({ options: { scale: { type: 'string', default: '1' }, seed: { type: 'string' }, json: { type: 'string' } } });
const scale = Number(values.scale);
if (!(scale > 0)) throw new Error(`--scale must be a positive number, not ${values.scale}`);
const seed = values.seed === undefined ? Date.now() & 0x7fffffff : Number(values.seed);
const rows: { target: string; cases: number; seconds: number; ok: boolean }[] = [];
let failed = false;
for (const target of fuzzTargets) {
  const cases = Math.max(1, Math.round(target.runs.long * scale));
  const t0 = performance.now();
  try {
    await runFuzzTarget(target, cases, seed);
    rows.push({ target: target.name, cases, seconds: (performance.now() - t0) / 1000, ok: true });
  } catch (err) {
    rows.push({ target: target.name, cases, seconds: (performance.now() - t0) / 1000, ok: false });
    console.error(String(err));
    failed = true;
    break;
  }
  const r = rows[rows.length - 1];
  console.error(`${r.target}: ${r.cases} cases in ${r.seconds.toFixed(1)} s`);
}
const total = rows.reduce((n, r) => n + r.cases, 0);
console.log(`\nFuzz run, seed ${seed}\n\n| target | cases | seconds | result |\n|---|---|---|---|`);
for (const r of rows) console.log(`| ${r.target} | ${r.cases} | ${r.seconds.toFixed(1)} | ${r.ok ? 'ok' : 'FAILED'} |`);
console.log(`| all | ${total} | ${rows.reduce((n, r) => n + r.seconds, 0).toFixed(1)} | ${failed ? 'FAILED' : 'ok'} |`);
if (values.json) writeFileSync(values.json, JSON.stringify({ seed, scale, total, rows, node: process.version, at: new Date().toISOString() }, null, 2));
process.exit(failed ? 1 : 0);
