// tiematch bench --batch DIR: the tie-point step of a whole set, three ways, same pairs, same run:
// (a) tiematch batch; (b) Tapioca's way with the MICMAC-equivalent libann harness, one process per
// pair under make -j T; (c) tiematch ann per pair, run the same way. At each thread count, exact and
// approx. Times are wall clock of the whole step (process start-up, file reading and writing included).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeDocsBlock } from './docs.js';
import { ratioTest } from '../ann.js';
import { TiematchError } from '../errors.js';
import { readKeypointFile } from '../files.js';
import { nearestTwo, type SearchMode } from '../engine/search.js';
import { keypointPath, parseSelection, projectImages, resultPath, selectPairs, type Pair } from '../batch/pairs.js';

export interface BatchBenchOptions {
  batch: string;
  threads: string;
  modes: string;
  pairs: string;
  /** Pairs whose ratio-test matches are compared, approx against exact (evenly spread). */
  recallPairs: number;
  json?: string;
  docs?: string;
}

interface Row {
  way: 'batch' | 'per-pair' | 'libann per-pair';
  mode: SearchMode | 'libann (200 visits)';
  threads: number;
  seconds: number;
  vs_libann?: number;
  vs_per_pair?: number;
  /** batch rows: results byte-identical to tiematch ann's, of all pairs. */
  identical?: string;
  matches?: number;
}

const pkg = fileURLToPath(new URL('../../', import.meta.url));
const cli = join(pkg, 'dist', 'cli', 'main.js');

/** A Makefile with one target per pair, its recipe `command(pair, out)`; run by make -j threads. */
function makeRun(work: string, name: string, pairs: Pair[], outOf: (p: Pair) => string, recipe: (p: Pair, out: string) => string, threads: number): number {
  const file = join(work, `${name}.mk`);
  const targets = pairs.map(outOf);
  const lines = ['all: ' + targets.map((_, i) => `t${i}`).join(' '), ...pairs.flatMap((p, i) => [`t${i}:`, `\t@mkdir -p '${join(targets[i], '..')}' && ${recipe(p, targets[i])}`])];
  writeFileSync(file, lines.join('\n') + '\n');
  const t = performance.now();
  try {
    execFileSync('make', ['-s', '-j', String(threads), '-f', file], { stdio: ['ignore', 'ignore', 'inherit'] });
  } catch (e) {
    throw new TiematchError('ERR_PEER', `${name}: make failed: ${(e as Error).message}`, { cause: e });
  }
  return (performance.now() - t) / 1000;
}

const matchLines = (path: string): Set<string> => new Set(readFileSync(path, 'utf8').split('\n').filter(Boolean));

export async function runBatchBench(o: BatchBenchOptions): Promise<void> {
  const images = projectImages(o.batch);
  const pairs = selectPairs(images, parseSelection(o.pairs));
  const threadCounts = o.threads.split(',').map(Number);
  const modes = o.modes.split(',') as SearchMode[];
  const points = images.map((im) => readKeypointFile(keypointPath(o.batch, im)).points.count);
  console.error(`tiematch bench --batch: ${images.length} images (${Math.min(...points)}-${Math.max(...points)} points), ${pairs.length} pairs (${o.pairs}); installing and building peers (first run only)`);
  const peerDir = execFileSync('bash', [join(pkg, 'scripts', 'peers.sh'), 'libann'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop()!;
  const work = mkdtempSync(join(tmpdir(), 'tiematch-batch-bench-'));
  const rows: Row[] = [];
  const recall: Record<string, unknown> = {};
  try {
    // A project of links to the set's keypoints: the batch writes its results there.
    const project = join(work, 'project');
    mkdirSync(join(project, 'Pastis'), { recursive: true });
    for (const im of images) symlinkSync(keypointPath(o.batch, im), keypointPath(project, im));
    const dat = (im: string): string => keypointPath(o.batch, im);
    const node = process.execPath;
    for (const threads of threadCounts) {
      const libann = makeRun(work, `libann-${threads}`, pairs, (p) => resultPath(join(work, `libann-${threads}`), p), (p, out) => `'${join(peerDir, 'ann_harness')}' '${dat(p.a)}' '${dat(p.b)}' --threads 1 --result '${out}' > /dev/null`, threads);
      rows.push({ way: 'libann per-pair', mode: 'libann (200 visits)', threads, seconds: libann });
      console.error(`  libann per-pair, make -j ${threads}: ${libann.toFixed(1)} s`);
      for (const mode of modes) {
        const perDir = join(work, `ann-${mode}-${threads}`);
        const perPair = makeRun(work, `ann-${mode}-${threads}`, pairs, (p) => resultPath(perDir, p), (p, out) => `'${node}' '${cli}' ann '${dat(p.a)}' '${dat(p.b)}' '${out}' --threads 1 --mode ${mode} > /dev/null`, threads);
        rows.push({ way: 'per-pair', mode, threads, seconds: perPair, vs_libann: perPair / libann });
        console.error(`  tiematch ann per-pair ${mode}, make -j ${threads}: ${perPair.toFixed(1)} s`);
        const t = performance.now();
        const out = execFileSync(node, [cli, 'batch', project, '--pairs', o.pairs, '--threads', String(threads), '--mode', mode, '--force', '--json'], { encoding: 'utf8', maxBuffer: 1 << 26 });
        const seconds = (performance.now() - t) / 1000;
        const summary = JSON.parse(out) as { matches: number };
        let same = 0;
        for (const p of pairs) if (readFileSync(resultPath(project, p)).equals(readFileSync(resultPath(perDir, p)))) same++;
        rows.push({ way: 'batch', mode, threads, seconds, vs_libann: seconds / libann, vs_per_pair: seconds / perPair, identical: `${same}/${pairs.length}`, matches: summary.matches });
        console.error(`  tiematch batch ${mode}, ${threads} thread(s): ${seconds.toFixed(1)} s, ${same}/${pairs.length} identical to per-pair`);
      }
    }
    // Recall of approx: the .result lines (after the filter) over every pair, and the ratio-test
    // matches (before it) on a few pairs, each against exact.
    if (modes.includes('exact') && modes.includes('approx')) {
      const t = threadCounts[0];
      let exactLines = 0, found = 0, extra = 0;
      for (const p of pairs) {
        const e = matchLines(resultPath(join(work, `ann-exact-${t}`), p));
        const a = matchLines(resultPath(join(work, `ann-approx-${t}`), p));
        exactLines += e.size;
        for (const l of a) if (e.has(l)) found++; else extra++;
      }
      recall.result_lines = { exact: exactLines, found, recall: found / exactLines, extra };
      let ratioExact = 0, ratioFound = 0;
      const sample = pairs.filter((_, i) => i % Math.max(1, Math.floor(pairs.length / o.recallPairs)) === 0).slice(0, o.recallPairs);
      for (const p of sample) {
        const a = readKeypointFile(dat(p.a)).points;
        const b = readKeypointFile(dat(p.b)).points;
        const ex = await nearestTwo(a.descriptors, b.descriptors, { mode: 'exact' });
        const ap = await nearestTwo(a.descriptors, b.descriptors, { mode: 'approx' });
        for (let q = 0; q < b.count; q++) {
          if (a.type[ex.i1[q]] !== b.type[q] || !ratioTest(ex.d1[q], ex.d2[q], 0.6)) continue;
          ratioExact++;
          if (ap.i1[q] === ex.i1[q] && ratioTest(ap.d1[q], ap.d2[q], 0.6)) ratioFound++;
        }
      }
      recall.ratio_test = { pairs: sample.length, exact: ratioExact, found: ratioFound, recall: ratioExact ? ratioFound / ratioExact : 1 };
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  for (const r of rows) if (r.way === 'per-pair' || r.way === 'batch') r.vs_libann = r.seconds / rows.find((x) => x.way === 'libann per-pair' && x.threads === r.threads)!.seconds;
  const fmt = (v?: number): string => (v === undefined ? '–' : v.toFixed(2));
  const rr = recall as { result_lines?: { recall: number; exact: number; found: number; extra: number }; ratio_test?: { recall: number; pairs: number; exact: number; found: number } };
  const table = [
    `Set: ${o.batch}, ${images.length} images, ${Math.min(...points)}–${Math.max(...points)} points each, ${pairs.length} pairs (${o.pairs}), ratio 0.6, filter on; wall clock of the whole step.`,
    '',
    '| way | mode | threads | time (s) | / libann per-pair | / our per-pair | identical to per-pair |',
    '|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.way} | ${r.mode} | ${r.threads} | ${r.seconds.toFixed(1)} | ${r.way === 'libann per-pair' ? '1.00' : fmt(r.vs_libann)} | ${fmt(r.vs_per_pair)} | ${r.identical ?? '–'} |`),
    '',
    ...(rr.result_lines ? [`- approx against exact, .result lines of every pair: recall ${(rr.result_lines.recall * 100).toFixed(3)}% (${rr.result_lines.found}/${rr.result_lines.exact}), ${rr.result_lines.extra} lines not in exact.`] : []),
    ...(rr.ratio_test ? [`- approx against exact, ratio-test matches (before the filter) of ${rr.ratio_test.pairs} pairs: recall ${(rr.ratio_test.recall * 100).toFixed(3)}% (${rr.ratio_test.found}/${rr.ratio_test.exact}).`] : []),
  ].join('\n');
  console.log(table);
  const json = { date: new Date().toISOString(), set: o.batch, images: images.length, points: { min: Math.min(...points), max: Math.max(...points) }, pairs: pairs.length, selection: o.pairs, rows, recall };
  if (o.json) writeFileSync(o.json, JSON.stringify(json, null, 2) + '\n');
  if (o.docs) writeDocsBlock(o.docs, 'tiematch-batch-bench', table);
}
