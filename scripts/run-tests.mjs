// Runs every *.test.ts in the given test folders with node:test and tsx (Node 20 does not glob).
// Usage: node scripts/run-tests.mjs DIR... [-- NAME-FILTER...]
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

const args = process.argv.slice(2);
const split = args.indexOf('--');
const dirs = (split < 0 ? args : args.slice(0, split)).map((d) => resolve(d));
const only = split < 0 ? [] : args.slice(split + 1);
const files = dirs.flatMap((dir) =>
  readdirSync(dir)
    .filter((f) => f.endsWith('.test.ts'))
    .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
    .sort()
    .map((f) => join(dir, f)),
);
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
