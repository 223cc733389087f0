#!/usr/bin/env node
// tiematch: MICMAC-compatible tie-point matching (`tiematch ann`) and its benchmark (`tiematch bench`).
import { Command, InvalidArgumentError } from 'commander';
import { basename, dirname, join } from 'node:path';
import { annMatch, referenceNearestTwo, verify, DEFAULT_RATIO } from '../ann.js';
import { TiematchError } from '../errors.js';
import { readKeypointFile, writeResultFile } from '../files.js';
import { APPROX_PROBES, nearestTwo } from '../engine/search.js';
import { DEFAULT_MULSCALE_POINTS, parseBytes, runBatch } from '../batch/batch.js';
import { parseShard } from '../batch/pairs.js';

/** MICMAC's single-dash options, spelled as commander expects. */
const MICMAC_FLAGS: Record<string, string> = { '-ratio': '--ratio', '-newFormat': '--new-format', '-noSplitTypes': '--no-split-types' };

function positiveInt(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer');
  return n;
}

function positiveNumber(v: string): number {
  const n = Number(v);
  if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError('must be a positive number');
  return n;
}

/** MICMAC's default output name: dir1/name1.-.name2.result (shortest extensions clipped). */
export function defaultOutputName(file1: string, file2: string): string {
  const clip = (s: string): string => (s.lastIndexOf('.') > 0 ? s.slice(0, s.lastIndexOf('.')) : s);
  return join(dirname(file1), `${clip(basename(file1))}.-.${clip(basename(file2))}.result`);
}

/** A bar on stderr (a TTY): pairs done, matches so far, time left. */
function progressBar(): (done: number, total: number, matches: number) => void {
  const start = performance.now();
  let last = 0;
  return (done, total, matches) => {
    const now = performance.now();
    if (done < total && now - last < 100) return;
    last = now;
    const width = 30;
    const filled = total ? Math.round((done / total) * width) : width;
    const left = done ? ((now - start) / done) * (total - done) / 1000 : NaN;
    const eta = Number.isFinite(left) && done < total ? `, ${left.toFixed(0)} s left` : '';
    process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} pairs, ${matches} matches${eta}\x1b[K`);
  };
}

const program = new Command();
program.name('tiematch').description('Exact SIFT tie-point matching, a drop-in for MICMAC mm3d Ann').showHelpAfterError();

program
  .command('ann')
  .description('match FILE2 against FILE1 and write the matches (MICMAC .result) to OUT')
  .argument('<file1>', 'keypoints of image 1 (.dat, v0 or v1); the index is built on it')
  .argument('<file2>', 'keypoints of image 2 (.dat); each of its points is a query')
  .argument('[out]', 'output .result (default: MICMAC\'s name1.-.name2.result beside file1)')
  .option('--ratio <r>', 'ratio test on distances: d1 < r * d2 (MICMAC -ratio)', positiveNumber, DEFAULT_RATIO)
  .option('--new-format', 'binary versioned .result (MICMAC -newFormat)', false)
  .option('--no-split-types', 'accepted for MICMAC compatibility (a two-file call never splits)')
  .option('--mode <mode>', 'exact (default) or approx', 'exact')
  .option('--threads <n>', 'worker threads (default: all cores)', positiveInt)
  .option('--probes <n>', `approx mode: clusters searched per query (default ${APPROX_PROBES})`, positiveInt)
  .option('--no-filter', 'skip MICMAC\'s neighbour filter')
  .option('--verify', 'check against exact matches and a scalar brute force on a sample', false)
  .option('--verify-sample <n>', 'queries rechecked by the scalar brute force', positiveInt, 200)
  .option('--json', 'print a JSON summary', false)
  .action(async (file1: string, file2: string, out: string | undefined, o: Record<string, unknown>) => {
    if (o.mode !== 'exact' && o.mode !== 'approx') throw new TiematchError('ERR_INVALID_ARG', `--mode ${String(o.mode)}: exact or approx`);
    const output = out ?? defaultOutputName(file1, file2);
    const t0 = performance.now();
    const a = readKeypointFile(file1);
    const b = readKeypointFile(file2);
    const ratio = o.ratio as number;
    const result = await annMatch(a.points, b.points, { ratio, mode: o.mode, threads: o.threads as number | undefined, probes: o.probes as number | undefined, filter: o.filter as boolean });
    writeResultFile(output, result.coordinates, o.newFormat as boolean);
    const totalMs = performance.now() - t0;
    const summary: Record<string, unknown> = {
      file1,
      file2,
      out: output,
      points1: a.points.count,
      points2: b.points.count,
      format1: `v${a.info.version}${a.info.bigEndian ? ' big-endian' : ''}`,
      format2: `v${b.info.version}${b.info.bigEndian ? ' big-endian' : ''}`,
      mode: o.mode,
      threads: result.neighbours.stats.threads,
      ratio,
      ratio_matches: result.ratioMatches,
      matches: result.index1.length,
      search_ms: +result.timings.searchMs.toFixed(1),
      filter_ms: +result.timings.filterMs.toFixed(1),
      total_ms: +totalMs.toFixed(1),
      pairs_screened: result.neighbours.stats.screened,
      exact_distances: result.neighbours.stats.survivors,
    };
    if (o.verify) {
      // The true d2 and i2, to check against the brute force (the match's exact search stops at the ratio's reach).
      const exact = await nearestTwo(a.points.descriptors, b.points.descriptors, { mode: 'exact', threads: o.threads as number | undefined });
      const n = Math.min(o.verifySample as number, b.points.count);
      const sample = referenceNearestTwo(a.points.descriptors, b.points.descriptors, Array.from({ length: n }, (_, i) => Math.floor((i * b.points.count) / n)));
      const v = verify(result.neighbours, exact, a.points, b.points, ratio, sample);
      summary.verify = v;
      if (v.sampleMismatches > 0) process.exitCode = 1;
    }
    if (o.json) console.log(JSON.stringify(summary, null, 2));
    else {
      console.log(`${file1} : ${a.points.count} points ${file2} : ${b.points.count} points => ${result.index1.length} matches`);
      console.log(`  ${result.ratioMatches} pass the ratio test, ${result.index1.length} the filter; ${o.mode} search on ${summary.threads} thread(s) ${summary.search_ms} ms, total ${summary.total_ms} ms`);
      if (summary.verify) {
        const v = summary.verify as ReturnType<typeof verify>;
        console.log(`  verify: recall ${(v.recall * 100).toFixed(3)}% (${v.found}/${v.exactMatches}), ${v.falseMatches} false, recall@1 ${(v.recallAt1 * 100).toFixed(2)}%; scalar recheck ${v.sampled - v.sampleMismatches}/${v.sampled} equal`);
      }
    }
  });

program
  .command('batch')
  .description('match every selected pair of a MICMAC project (Pastis/LBPp<img>.dat) into Pastis/LBPp-Match-LBPp<A>/LBPp<B>.result, as tiematch ann per pair')
  .argument('<dir>', 'the MICMAC project folder')
  .option('--pairs <sel>', 'All, Line:N, File:PAIRS.xml (SauvegardeNamedRel) or MulScale:K (as Tapioca)', 'All')
  .option('--ratio <r>', 'ratio test on distances: d1 < r * d2 (MICMAC -ratio)', positiveNumber, DEFAULT_RATIO)
  .option('--new-format', 'binary versioned .result (MICMAC -newFormat)', false)
  .option('--mode <mode>', 'exact (default) or approx', 'exact')
  .option('--threads <n>', 'worker threads (default: all cores)', positiveInt)
  .option('--probes <n>', `approx mode: clusters searched per query (default ${APPROX_PROBES})`, positiveInt)
  .option('--no-filter', 'skip MICMAC\'s neighbour filter')
  .option('--memory <size>', 'keypoints and indexes held at once (e.g. 2G, 512M)', '2G')
  .option('--shard <i/n>', 'take shard I of N: disjoint, together all pairs; each image indexed in one shard')
  .option('--mulscale-points <n>', `MulScale: points of each image in the first pass (largest scales; default ${DEFAULT_MULSCALE_POINTS})`, positiveInt)
  .option('--force', 'redo results already there', false)
  .option('--json', 'print a JSON summary', false)
  .action(async (dir: string, o: Record<string, unknown>) => {
    if (o.mode !== 'exact' && o.mode !== 'approx') throw new TiematchError('ERR_INVALID_ARG', `--mode ${String(o.mode)}: exact or approx`);
    const bar = process.stderr.isTTY ? progressBar() : undefined;
    const summary = await runBatch(dir, {
      pairs: o.pairs as string,
      ratio: o.ratio as number,
      newFormat: o.newFormat as boolean,
      mode: o.mode,
      threads: o.threads as number | undefined,
      probes: o.probes as number | undefined,
      filter: o.filter as boolean,
      memory: parseBytes(o.memory as string),
      shard: o.shard ? parseShard(o.shard as string) : undefined,
      mulscalePoints: o.mulscalePoints as number | undefined,
      force: o.force as boolean,
      progress: bar,
    });
    if (bar) process.stderr.write('\n');
    for (const e of summary.errors) console.error(`tiematch: ${e.a} -> ${e.b}: ${e.message} [${e.code}]`);
    if (o.json) console.log(JSON.stringify(summary, null, 2));
    else {
      const p = summary.pairs;
      console.log(`${dir}: ${p.matched} pairs matched, ${p.skipped} already there, ${p.failed} failed; ${summary.matches} matches; ${summary.images} images read ${summary.reads} times, ${summary.index_builds} indexes built; ${(summary.time_ms.wall / 1000).toFixed(1)} s`);
    }
    if (summary.pairs.failed > 0) process.exitCode = 1;
  });

program
  .command('bench')
  .description('ours (exact, approx) beside libann (MICMAC-like), FLANN and faiss, same data, 1 and 2 threads')
  .option('--file1 <path>', 'keypoints of image 1 (default: the aloe pair in shared/, else a generated pair)')
  .option('--file2 <path>', 'keypoints of image 2')
  .option('--threads <list>', 'thread counts', '1,2')
  .option('--runs <n>', 'runs per configuration (the median is reported)', positiveInt, 3)
  .option('--peers <list>', 'peers to run', 'libann,flann,faiss')
  .option('--json <path>', 'write the results as JSON')
  .option('--docs <path>', 'write the table into this markdown file between tiematch-bench markers')
  .option('--batch <dir>', 'instead: a whole set (a MICMAC project): tiematch batch, the libann harness per pair under make -j, tiematch ann per pair')
  .option('--modes <list>', '--batch: search modes', 'exact,approx')
  .option('--pairs <sel>', '--batch: pair selection', 'All')
  .option('--recall-pairs <n>', '--batch: pairs whose ratio-test matches are compared, approx against exact', positiveInt, 6)
  .action(async (o: Record<string, unknown>) => {
    if (o.batch) {
      const { runBatchBench } = await import('../bench/batch-bench.js');
      await runBatchBench(o as never);
      return;
    }
    const { runBench } = await import('../bench/bench.js');
    await runBench(o as never);
  });

const argv = process.argv.map((a) => MICMAC_FLAGS[a] ?? a);
program.parseAsync(argv).catch((e: unknown) => {
  const code = (e as { code?: string }).code;
  console.error(`tiematch: ${(e as Error).message}${code ? ` [${code}]` : ''}`);
  process.exitCode = code === 'ERR_INVALID_ARG' ? 2 : 1;
});
