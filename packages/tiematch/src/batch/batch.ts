// tiematch batch: every selected pair of a MICMAC project, each .result as `tiematch ann` writes it,
// with each image read once (an LRU of keypoints in shared memory, under --memory) and indexed once
// per thread that needs it (the threads' LRUs of indexes), pairs grouped by the image they index.
import { existsSync, readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { DEFAULT_RATIO } from '../ann.js';
import { TiematchError } from '../errors.js';
import { readKeypointFile } from '../files.js';
import type { Keypoints } from '../format/dat.js';
import { parseResult, pointsText, type PointsText } from '../format/result.js';
import { resolveSearch, type SearchMode } from '../engine/search.js';
import { LruCache } from './lru.js';
import { groupByIndex, keypointPath, parseSelection, projectImages, resultPath, selectPairs, shardPairs, type Pair } from './pairs.js';
import type { BatchReply, BatchWorkerData, PairTask } from './protocol.js';

export interface BatchOptions {
  pairs?: string;
  ratio?: number;
  newFormat?: boolean;
  mode?: SearchMode;
  threads?: number;
  probes?: number;
  filter?: boolean;
  /** Bytes for keypoints and indexes together. */
  memory?: number;
  /** 1-based shard and shard count. */
  shard?: { index: number; count: number };
  /** MulScale's first pass: this many points of each image, the largest scales. */
  mulscalePoints?: number;
  /** Redo results already there. */
  force?: boolean;
  progress?: (done: number, total: number, matches: number) => void;
}

export interface PairError {
  a: string;
  b: string;
  code: string;
  message: string;
}

export interface BatchSummary {
  dir: string;
  selection: string;
  mode: SearchMode;
  threads: number;
  shard: string | null;
  images: number;
  pairs: { selected: number; matched: number; skipped: number; failed: number };
  matches: number;
  ratio_matches: number;
  reads: number;
  index_builds: number;
  mulscale: { first_pass_pairs: number; points: number; kept: number } | null;
  /** Summed over the threads, except read (the main thread: keypoints read, their coordinates formatted for v0 results) and wall. */
  time_ms: { read: number; index: number; search: number; filter: number; write: number; wall: number };
  errors: PairError[];
}

export const DEFAULT_MEMORY = 2 * 2 ** 30;
export const DEFAULT_MULSCALE_POINTS = 1500;

/** `2G`, `512M`, `800k` or bytes. */
export function parseBytes(spec: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kKmMgG]?)i?[bB]?$/.exec(spec.trim());
  if (!m) throw new TiematchError('ERR_INVALID_ARG', `--memory ${spec}: a size such as 2G or 512M`);
  const bytes = Number(m[1]) * { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g'];
  if (!(bytes >= 2 ** 20)) throw new TiematchError('ERR_INVALID_ARG', `--memory ${spec}: at least 1M`);
  return bytes;
}

function keypointBytes(k: Keypoints): number {
  return k.descriptors.byteLength + k.count * (4 * 8 + 2);
}

/** A copy in shared memory: posted to a thread, it is not copied again. */
function shared(k: Keypoints): Keypoints {
  const copy = <T extends Float64Array | Int16Array | Uint8Array>(a: T, make: (b: SharedArrayBuffer) => T): T => {
    const out = make(new SharedArrayBuffer(a.byteLength));
    out.set(a as never);
    return out;
  };
  return {
    count: k.count,
    x: copy(k.x, (b) => new Float64Array(b)),
    y: copy(k.y, (b) => new Float64Array(b)),
    scale: copy(k.scale, (b) => new Float64Array(b)),
    angle: copy(k.angle, (b) => new Float64Array(b)),
    type: copy(k.type, (b) => new Int16Array(b)),
    descriptors: copy(k.descriptors, (b) => new Uint8Array(b)),
  };
}

/** The n points of largest scale (ties: the first), in file order: MulScale's low-resolution stand-in. */
export function largestScales(k: Keypoints, n: number): Keypoints {
  if (k.count <= n) return k;
  const keep = Int32Array.from(k.scale.keys()).sort((i, j) => k.scale[j] - k.scale[i] || i - j).subarray(0, n).sort();
  const pick = <T extends Float64Array | Int16Array>(a: T): T => a.constructor === Float64Array ? (Float64Array.from(keep, (i) => a[i]) as T) : (Int16Array.from(keep, (i) => a[i]) as T);
  const descriptors = new Uint8Array(n * 128);
  keep.forEach((i, r) => descriptors.set(k.descriptors.subarray(i * 128, (i + 1) * 128), r * 128));
  return { count: n, x: pick(k.x), y: pick(k.y), scale: pick(k.scale), angle: pick(k.angle), type: pick(k.type), descriptors };
}

/** Each image's keypoints, read once while they fit; a file that fails keeps its error. */
class KeypointStore {
  private readonly cache: LruCache<Keypoints>;
  /** Each image's "x y" texts for v0 results, made once (kept with the keypoints' budget). */
  private readonly texts: LruCache<PointsText>;
  private readonly failed = new Map<string, TiematchError>();
  reads = 0;
  readMs = 0;
  constructor(private readonly dir: string, budget: number, private readonly lowPoints: number) {
    this.cache = new LruCache(budget * 0.8);
    this.texts = new LruCache(budget * 0.2);
  }
  text(image: string, points: Keypoints): PointsText {
    const hit = this.texts.get(image);
    if (hit) return hit;
    const t = performance.now();
    const value = pointsText(points.x, points.y, (n) => new SharedArrayBuffer(n));
    this.texts.set(image, value, value.bytes.byteLength + value.at.byteLength);
    this.readMs += performance.now() - t;
    return value;
  }
  get(image: string, low: boolean, why: string): Keypoints {
    const key = `${low ? 'low' : 'full'}:${image}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const error = this.failed.get(image);
    if (error) throw error;
    const path = keypointPath(this.dir, image);
    const t = performance.now();
    try {
      if (!existsSync(path)) throw new TiematchError('ERR_NO_KEYPOINTS', `image ${image}${why}: no keypoints, ${path} does not exist`);
      this.reads++;
      let points = readKeypointFile(path).points;
      if (low) points = largestScales(points, this.lowPoints);
      const value = shared(points);
      this.cache.set(key, value, keypointBytes(value));
      return value;
    } catch (e) {
      const err = e instanceof TiematchError ? e : new TiematchError('ERR_INPUT', `${path}: ${(e as Error).message}`, { cause: e });
      if (!err.message.includes(path)) err.message = `${path}: ${err.message}`;
      this.failed.set(image, err);
      throw err;
    } finally {
      this.readMs += performance.now() - t;
    }
  }
}

/** A result already there, whole and in the format asked for. */
function complete(path: string, newFormat: boolean): boolean {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch {
    return false;
  }
  if ((bytes.length > 0 && bytes[0] === 0xba) !== newFormat) return false;
  try {
    parseResult(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length), path);
    return true;
  } catch {
    return false;
  }
}

/** Groups cut in two, largest first, until every thread has one (then an index is built twice). */
function tasksFor(pairs: Pair[], threads: number): { a: string; bs: string[] }[] {
  const tasks = groupByIndex(pairs);
  while (tasks.length > 0 && tasks.length < threads) {
    const big = tasks.reduce((m, t, i) => (t.bs.length > tasks[m].bs.length ? i : m), 0);
    if (tasks[big].bs.length < 2) break;
    const half = Math.ceil(tasks[big].bs.length / 2);
    tasks.splice(big + 1, 0, { a: tasks[big].a, bs: tasks[big].bs.slice(half) });
    tasks[big] = { a: tasks[big].a, bs: tasks[big].bs.slice(0, half) };
  }
  return tasks;
}

export async function runBatch(dir: string, o: BatchOptions = {}): Promise<BatchSummary> {
  const t0 = performance.now();
  const selectionSpec = o.pairs ?? 'All';
  const selection = parseSelection(selectionSpec);
  const search = resolveSearch({ mode: o.mode, threads: o.threads, probes: o.probes });
  const ratio = o.ratio ?? DEFAULT_RATIO;
  if (!(ratio > 0 && Number.isFinite(ratio))) throw new TiematchError('ERR_INVALID_ARG', `ratio ${ratio}: must be a positive number`);
  const memory = o.memory ?? DEFAULT_MEMORY;
  const newFormat = o.newFormat ?? false;
  const lowPoints = o.mulscalePoints ?? DEFAULT_MULSCALE_POINTS;
  const images = projectImages(dir);
  const fromList = selection.mode === 'File' ? ` (named in ${selection.path})` : '';
  let pairs = selectPairs(images, selection);
  if (o.shard) pairs = shardPairs(pairs, o.shard.index, o.shard.count);
  const store = new KeypointStore(dir, memory / 2, lowPoints);
  const summary: BatchSummary = {
    dir,
    selection: selectionSpec,
    mode: search.mode,
    threads: search.threads,
    shard: o.shard ? `${o.shard.index}/${o.shard.count}` : null,
    images: new Set(pairs.flatMap((p) => [p.a, p.b])).size,
    pairs: { selected: pairs.length, matched: 0, skipped: 0, failed: 0 },
    matches: 0,
    ratio_matches: 0,
    reads: 0,
    index_builds: 0,
    mulscale: null,
    time_ms: { read: 0, index: 0, search: 0, filter: 0, write: 0, wall: 0 },
    errors: [],
  };
  /** The bar counts pairs finished, failed ones too (set for the pass that writes results). */
  let tick: (() => void) | undefined;
  const fail = (p: Pair, e: unknown): void => {
    tick?.();
    summary.pairs.failed++;
    summary.errors.push({ a: p.a, b: p.b, code: (e as { code?: string }).code ?? 'ERR_WORKER', message: (e as Error).message });
  };

  const data: BatchWorkerData = { search, ratio, filter: o.filter ?? true, newFormat, indexBudget: memory / 2 / search.threads };
  // The compiled worker, also when this file runs from src/ under tsx (workers do not inherit loaders).
  const workerUrl = new URL('../../dist/batch/worker.js', import.meta.url);
  const workers = Array.from({ length: Math.max(1, Math.min(search.threads, pairs.length)) }, () => new Worker(workerUrl, { workerData: data }));
  const waiting = new Map<number, { worker: Worker; resolve: (r: BatchReply) => void }>();
  let nextId = 0;
  let broken: Error | undefined;
  // A thread that dies fails what it held and stops the run (its pairs are redone by the next run).
  const lost = (w: Worker, why: string): void => {
    broken ??= new TiematchError('ERR_WORKER', `batch thread failed: ${why}`);
    for (const [id, entry] of waiting) {
      if (entry.worker !== w) continue;
      waiting.delete(id);
      entry.resolve({ type: 'failed', id, code: 'ERR_WORKER', message: broken.message });
    }
  };
  for (const w of workers) {
    w.on('message', (r: BatchReply) => {
      waiting.get(r.id)?.resolve(r);
      waiting.delete(r.id);
    });
    w.on('error', (e) => lost(w, e.message));
    w.on('exit', (code) => lost(w, `exited with ${code}`));
  }
  const send = (w: Worker, task: Omit<PairTask, 'id' | 'type'>): Promise<BatchReply> =>
    new Promise((resolve) => {
      const id = nextId++;
      waiting.set(id, { worker: w, resolve });
      w.postMessage({ type: 'pair', id, ...task } satisfies PairTask);
    });

  /** Matches the pairs on every thread; onDone gets each pair's match count. */
  const pass = async (list: Pair[], low: boolean, onDone: (p: Pair, r: Extract<BatchReply, { type: 'done' }>) => void): Promise<void> => {
    const queue = tasksFor(list, workers.length);
    const lane = async (w: Worker): Promise<void> => {
      for (let task = queue.shift(); task; task = queue.shift()) {
        const inFlight: Promise<void>[] = [];
        for (const b of task.bs) {
          if (broken) throw broken;
          const pair = { a: task.a, b };
          let pointsA: Keypoints, pointsB: Keypoints;
          try {
            pointsA = store.get(pair.a, low, fromList);
            pointsB = store.get(pair.b, low, fromList);
          } catch (e) {
            fail(pair, e);
            continue;
          }
          const out = low ? undefined : resultPath(dir, pair);
          const texts = out && !newFormat ? { textA: store.text(pair.a, pointsA), textB: store.text(pair.b, pointsB) } : {};
          inFlight.push(
            send(w, { key: `${low ? 'low' : 'full'}:${pair.a}`, a: pair.a, b: pair.b, pointsA, pointsB, out, ...texts }).then((r) => {
              if (r.type === 'failed') return fail(pair, new TiematchError(r.code as never, r.message));
              summary.index_builds += r.indexBuilt ? 1 : 0;
              for (const stage of ['index', 'search', 'filter', 'write'] as const) summary.time_ms[stage] += r.ms[stage];
              onDone(pair, r);
            }),
          );
          // Two pairs in flight: the next one's keypoints are on their way while this one runs.
          if (inFlight.length >= 2) await inFlight.shift();
        }
        await Promise.all(inFlight);
      }
    };
    await Promise.all(workers.map(lane));
  };

  try {
    let todo = pairs;
    if (selection.mode === 'MulScale') {
      const counts = new Map<string, number>();
      await pass(pairs, true, (p, r) => counts.set(`${p.a}\n${p.b}`, r.matches));
      todo = pairs.filter((p) => (counts.get(`${p.a}\n${p.b}`) ?? 0) >= selection.k);
      summary.mulscale = { first_pass_pairs: pairs.length, points: lowPoints, kept: todo.length };
      summary.pairs.selected = todo.length + summary.pairs.failed;
    }
    const remaining = todo.filter((p) => o.force || !complete(resultPath(dir, p), newFormat));
    summary.pairs.skipped = todo.length - remaining.length;
    const total = remaining.length;
    let done = 0;
    tick = () => o.progress?.(++done, total, summary.matches);
    o.progress?.(0, total, 0);
    await pass(remaining, false, (_, r) => {
      summary.pairs.matched++;
      summary.matches += r.matches;
      summary.ratio_matches += r.ratioMatches;
      tick!();
    });
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  summary.reads = store.reads;
  summary.time_ms.read = store.readMs;
  summary.time_ms.wall = performance.now() - t0;
  for (const k of Object.keys(summary.time_ms) as (keyof BatchSummary['time_ms'])[]) summary.time_ms[k] = Math.round(summary.time_ms[k] * 10) / 10;
  summary.errors.sort((x, y) => (x.a < y.a ? -1 : x.a > y.a ? 1 : x.b < y.b ? -1 : x.b > y.b ? 1 : 0));
  return summary;
}
