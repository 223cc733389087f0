// tiematch bench: ours (exact, approx) and the peers that install here from Debian, same data,
// same session, at each thread count. Times are build + query (no file reading, no filter).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeDocsBlock } from './docs.js';
import { annMatch, ratioTest } from '../ann.js';
import { TiematchError } from '../errors.js';
import { readKeypointFile, writeResultFile } from '../files.js';
import { serializeKeypoints } from '../format/dat.js';
import { nearestTwo, type SearchMode } from '../engine/search.js';
import { syntheticPair } from '../synthetic.js';

interface BenchOptions {
  file1?: string;
  file2?: string;
  threads: string;
  runs: number;
  peers: string;
  json?: string;
  docs?: string;
}

interface Row {
  name: string;
  threads: number;
  ms: number[];
  median_ms: number;
  ratio_matches: number;
  recall: number;
  false_matches: number;
  vs_faiss?: number;
  vs_libann?: number;
}

const pkg = fileURLToPath(new URL('../../', import.meta.url));
const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

function pairsToMap(buf: Buffer): Map<number, number> {
  const v = new Int32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const m = new Map<number, number>();
  for (let i = 0; i < v.length; i += 2) m.set(v[i], v[i + 1]);
  return m;
}

export async function runBench(o: BenchOptions): Promise<void> {
  const work = mkdtempSync(join(tmpdir(), 'tiematch-bench-'));
  try {
    let file1 = o.file1;
    let file2 = o.file2;
    let data = 'given';
    const aloe = fileURLToPath(new URL('../../../../../shared/data/tiematch/aloe/', import.meta.url));
    if (!file1 || !file2) {
      if (existsSync(join(aloe, 'A.dat'))) {
        file1 = join(aloe, 'A.dat');
        file2 = join(aloe, 'B.dat');
        data = 'aloe (shared/data/tiematch/aloe)';
      } else {
        const { a, b } = syntheticPair(20000, 20000, 42);
        file1 = join(work, 'A.dat');
        file2 = join(work, 'B.dat');
        writeFileSync(file1, serializeKeypoints(a, 0));
        writeFileSync(file2, serializeKeypoints(b, 0));
        data = 'synthetic 20000 x 20000 (seed 42)';
      }
    }
    console.error('tiematch bench: installing and building peers (first run only)');
    const peerDir = execFileSync('bash', [join(pkg, 'scripts', 'peers.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim().split('\n').pop()!;
    const a = readKeypointFile(file1).points;
    const b = readKeypointFile(file2).points;
    const ratio = 0.6;
    const threadCounts = o.threads.split(',').map(Number);
    const peers = o.peers.split(',').filter(Boolean);
    const rows: Row[] = [];
    let exactPairs: Map<number, number> | undefined;

    const ours = async (mode: SearchMode, threads: number): Promise<{ ms: number; pairs: Map<number, number> }> => {
      const t = performance.now();
      const r = await nearestTwo(a.descriptors, b.descriptors, { mode, threads });
      const ms = performance.now() - t;
      const pairs = new Map<number, number>();
      for (let q = 0; q < b.count; q++) if (a.type[r.i1[q]] === b.type[q] && ratioTest(r.d1[q], r.d2[q], ratio)) pairs.set(q, r.i1[q]);
      return { ms, pairs };
    };
    const peer = (name: string, threads: number): { ms: number; pairs: Map<number, number> } => {
      const out = join(work, `${name}.pairs`);
      const cmd: [string, string[]] =
        name === 'faiss'
          ? ['/usr/bin/python3', [join(pkg, 'bench', 'peers', 'faiss_peer.py'), file1!, file2!, '--threads', String(threads), '--pairs', out]]
          : [join(peerDir, name === 'libann' ? 'ann_harness' : 'flann_harness'), [file1!, file2!, '--threads', String(threads), '--pairs', out]];
      let stdout: string;
      try {
        stdout = execFileSync(cmd[0], cmd[1], { encoding: 'utf8', env: { ...process.env, OMP_NUM_THREADS: String(threads) } });
      } catch (e) {
        throw new TiematchError('ERR_PEER', `${name} failed: ${(e as Error).message}`, { cause: e });
      }
      const r = JSON.parse(stdout.trim().split('\n').pop()!) as { total_ms: number };
      return { ms: r.total_ms, pairs: pairsToMap(readFileSync(out)) };
    };

    for (const threads of threadCounts) {
      const configs: [string, () => Promise<{ ms: number; pairs: Map<number, number> }>][] = [
        ['tiematch exact', () => ours('exact', threads)],
        ['tiematch approx', () => ours('approx', threads)],
        ...peers.map((p) => [p === 'libann' ? 'libann (MICMAC, 200 visits)' : p === 'flann' ? 'FLANN 4 trees, 128 checks' : 'faiss IndexFlatL2', async () => peer(p, threads)] as [string, () => Promise<{ ms: number; pairs: Map<number, number> }>]),
      ];
      for (const [name, fn] of configs) {
        const ms: number[] = [];
        let pairs = new Map<number, number>();
        for (let r = 0; r < o.runs; r++) {
          const res = await fn();
          ms.push(res.ms);
          pairs = res.pairs;
        }
        exactPairs ??= pairs;
        let found = 0;
        for (const [q, i] of pairs) if (exactPairs.get(q) === i) found++;
        rows.push({ name, threads, ms, median_ms: median(ms), ratio_matches: pairs.size, recall: found / exactPairs.size, false_matches: pairs.size - found });
        console.error(`  ${name} @${threads}: ${median(ms).toFixed(0)} ms, ${pairs.size} matches`);
      }
    }
    for (const row of rows) {
      const faiss = rows.find((r) => r.threads === row.threads && r.name.startsWith('faiss'));
      const libann = rows.find((r) => r.threads === row.threads && r.name.startsWith('libann'));
      if (faiss) row.vs_faiss = row.median_ms / faiss.median_ms;
      if (libann) row.vs_libann = row.median_ms / libann.median_ms;
    }

    // Output files: ours (exact, filtered) against the libann harness with the visit cap off, on the
    // first 3000 points of each file (uncapped ANN in 128-D is slower than brute force).
    const formats: Record<string, boolean> = {};
    if (peers.includes('libann')) {
      const head = (k: typeof a, n: number): typeof a => ({
        count: Math.min(n, k.count),
        x: k.x.slice(0, n), y: k.y.slice(0, n), scale: k.scale.slice(0, n), angle: k.angle.slice(0, n), type: k.type.slice(0, n),
        descriptors: k.descriptors.slice(0, n * 128),
      });
      const a3 = head(a, 3000);
      const b3 = head(b, 3000);
      const f1 = join(work, 'a3000.dat');
      const f2 = join(work, 'b3000.dat');
      writeFileSync(f1, serializeKeypoints(a3, 0));
      writeFileSync(f2, serializeKeypoints(b3, 0));
      const ann = await annMatch(readKeypointFile(f1).points, readKeypointFile(f2).points, { ratio, threads: Math.max(...threadCounts) });
      for (const newFormat of [false, true]) {
        const mine = join(work, `ours${newFormat ? '.v1' : ''}.result`);
        const theirs = join(work, `ann${newFormat ? '.v1' : ''}.result`);
        writeResultFile(mine, ann.coordinates, newFormat);
        execFileSync(join(peerDir, 'ann_harness'), [f1, f2, '--max-visit', '0', '--result', theirs, ...(newFormat ? ['--new-format'] : [])]);
        formats[newFormat ? 'v1 (-newFormat)' : 'v0 (text)'] = readFileSync(mine).equals(readFileSync(theirs));
      }
    }

    const table = [
      `Data: ${data}, ${a.count} x ${b.count} points, ratio ${ratio}; ${o.runs} runs each, median of build + query.`,
      '',
      '| matcher | threads | time (ms) | / faiss | / libann | ratio-test matches | recall vs exact | false |',
      '|---|---|---|---|---|---|---|---|',
      ...rows.map((r) => `| ${r.name} | ${r.threads} | ${r.median_ms.toFixed(0)} | ${r.vs_faiss?.toFixed(2) ?? '–'} | ${r.vs_libann?.toFixed(2) ?? '–'} | ${r.ratio_matches} | ${(r.recall * 100).toFixed(2)}% | ${r.false_matches} |`),
      '',
      ...Object.entries(formats).map(([f, same]) => `- .result ${f}: ours and the libann harness without visit cap are ${same ? 'byte-identical' : 'DIFFERENT'}.`),
    ].join('\n');
    console.log(table);
    const json = { date: new Date().toISOString(), data, points1: a.count, points2: b.count, ratio, runs: o.runs, rows, formats_identical: formats };
    if (o.json) writeFileSync(o.json, JSON.stringify(json, null, 2) + '\n');
    if (o.docs) writeDocsBlock(o.docs, 'tiematch-bench', table);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
