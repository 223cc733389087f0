#!/usr/bin/env node
// Large images: a synthetic pair of N x N points (src/synthetic.ts, seed 7) written as v0 .dat,
// then `tiematch ann` on it in each mode, its wall time and peak memory (GNU time's max RSS).
// Usage: node scripts/large-images.mjs N[,N...] [--modes exact,approx] [--threads T] [--dir D]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const pkg = fileURLToPath(new URL('..', import.meta.url));
const { serializeKeypoints, syntheticPair } = await import(join(pkg, 'dist', 'index.js'));
const { positionals, values } = parseArgs({ allowPositionals: true, options: { modes: { type: 'string', default: 'exact,approx' }, threads: { type: 'string', default: '2' }, dir: { type: 'string', default: join(tmpdir(), 'tiematch-large') } } });
const sizes = (positionals[0] ?? '100000').split(',').map(Number);
mkdirSync(values.dir, { recursive: true });
const rows = [];
for (const n of sizes) {
  const a = join(values.dir, `a${n}.dat`);
  const b = join(values.dir, `b${n}.dat`);
  if (!existsSync(a) || !existsSync(b)) {
    const pair = syntheticPair(n, n, 7);
    writeFileSync(a, serializeKeypoints(pair.a, 0));
    writeFileSync(b, serializeKeypoints(pair.b, 0));
  }
  for (const mode of values.modes.split(',')) {
    const out = join(values.dir, `${mode}${n}.result`);
    const r = spawnSync('/usr/bin/time', ['-f', '%M', process.execPath, join(pkg, 'dist', 'cli', 'main.js'), 'ann', a, b, out, '--mode', mode, '--threads', values.threads, '--json'], { encoding: 'utf8', maxBuffer: 1 << 26 });
    if (r.status !== 0) throw new Error(`n = ${n}, ${mode}: ${r.stderr}`);
    const s = JSON.parse(r.stdout);
    const row = { points: n, mode, threads: s.threads, total_s: s.total_ms / 1000, search_s: s.search_ms / 1000, peak_rss_gib: Number(r.stderr.trim().split('\n').pop()) / 2 ** 20, ratio_matches: s.ratio_matches, matches: s.matches };
    rows.push(row);
    console.error(JSON.stringify(row));
  }
}
console.log(JSON.stringify(rows, null, 2));
