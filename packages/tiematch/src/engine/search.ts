// Exact (or screened-approximate) 2-nearest-neighbour search of every query among the base set,
// spread over worker threads in chunks.
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { TiematchError } from '../errors.js';
import { DESCRIPTOR_SIZE } from '../format/dat.js';
import { buildIndex, prepareQueries } from './layout.js';
import type { WorkerInit, WorkerReply } from './protocol.js';

export type SearchMode = 'exact' | 'approx';

export interface SearchOptions {
  mode?: SearchMode;
  /** Worker threads (default: the machine's parallelism). */
  threads?: number;
  /** Principal components in the screen (8, 16, 24 or 32). */
  k?: number;
  /** Screen shrink factor in approx mode (exact mode always uses 1). */
  alpha?: number;
  /** Approx mode: how many clusters nearest each query are searched (exact mode searches all). */
  probes?: number;
  /**
   * Queries per kernel call (default 64 exact, 256 approx): short calls let V8 tier the kernel up
   * early. In approx mode the kernel searches each call's queries cluster by cluster, and a
   * query's result depends on its chunk: the same chunk gives the same result however the chunks
   * are shared out (threads, tiematch batch).
   */
  chunk?: number;
  /**
   * The ratio test the result is for (ratioTest in ann.ts): the search then stops looking for a
   * query's second nearest beyond d1 / ratio^2, so d2 and i2 are those of a real point at least as
   * near as needed, not always the true second nearest. In exact mode d1, i1 and the test's
   * outcome are the search's without it. In approx mode the screens, shrunk by alpha, tighten with
   * the bound too: on the 12-view set the same recall, 0.15% of matches false against 0.06%
   * without it, and 30% fewer pairs screened. Unset: the true d2 and i2 (exact mode).
   */
  ratio?: number;
}

export interface NeighbourResult {
  /** Squared L2 distance to the nearest base point, in u8 units (512·d). */
  d1: Int32Array;
  i1: Int32Array;
  /** Second nearest (d2 = 2^31-1 and i2 = -1 when the base has one point). */
  d2: Int32Array;
  i2: Int32Array;
  stats: { threads: number; k: number; alpha: number; probes: number | null; screened: number; survivors: number; pairs: number; prepareMs: number; searchMs: number };
}

export const APPROX_ALPHA = 0.55;
export const APPROX_PROBES = 16;
/** Exact mode: each query's few nearest clusters first, for an early tight bound. */
const EXACT_FIRST_PROBES = 2;
export const DEFAULT_K = 8;
const EXACT_CHUNK = 64;
/** Approx: runs of 256 queries fill the kernel's groups of 4 a cluster better than 64 (8% faster). */
const APPROX_CHUNK = 256;

/** The options nearestTwo and tiematch batch search with, defaults filled and checked. */
export interface ResolvedSearch {
  mode: SearchMode;
  threads: number;
  k: number;
  alpha: number;
  chunk: number;
  probes: number;
}

export function resolveSearch(options: SearchOptions): ResolvedSearch {
  const mode = options.mode ?? 'exact';
  if (mode !== 'exact' && mode !== 'approx') throw new TiematchError('ERR_INVALID_ARG', `mode ${String(mode)}: exact or approx`);
  const threads = Math.max(1, Math.min(options.threads ?? availableParallelism(), 64));
  const k = options.k ?? DEFAULT_K;
  const alpha = mode === 'exact' ? 1 : (options.alpha ?? APPROX_ALPHA);
  if (!(alpha > 0 && alpha <= 1)) throw new TiematchError('ERR_INVALID_ARG', `alpha ${alpha}: must be in (0, 1]`);
  // A multiple of 4: tiles of 4 queries then fall alike however the chunks are shared out.
  const chunk = Math.max(4, Math.ceil((options.chunk ?? (mode === 'approx' ? APPROX_CHUNK : EXACT_CHUNK)) / 4) * 4);
  const probes = mode === 'exact' ? EXACT_FIRST_PROBES : Math.floor(options.probes ?? APPROX_PROBES);
  if (!(probes >= 1 && probes <= 64)) throw new TiematchError('ERR_INVALID_ARG', `probes ${options.probes}: must be in [1, 64]`);
  return { mode, threads, k, alpha, chunk, probes };
}

/** Results in search order (nq x 4: d1, i1, d2, i2) put back in query order. */
export function unpermute(all: Int32Array, order: Int32Array): Pick<NeighbourResult, 'd1' | 'i1' | 'd2' | 'i2'> {
  const nq = order.length;
  const r = { d1: new Int32Array(nq), i1: new Int32Array(nq), d2: new Int32Array(nq), i2: new Int32Array(nq) };
  for (let s = 0; s < nq; s++) {
    const q = order[s];
    r.d1[q] = all[s * 4];
    r.i1[q] = all[s * 4 + 1];
    r.d2[q] = all[s * 4 + 2];
    r.i2[q] = all[s * 4 + 3];
  }
  return r;
}

export async function nearestTwo(base: Uint8Array, queries: Uint8Array, options: SearchOptions = {}): Promise<NeighbourResult> {
  const D = DESCRIPTOR_SIZE;
  if (base.length % D || queries.length % D) throw new TiematchError('ERR_DIMENSION', `descriptor arrays must hold whole ${D}-byte descriptors`);
  const nb = base.length / D;
  const nq = queries.length / D;
  if (nb === 0 || nq === 0) throw new TiematchError('ERR_EMPTY', 'no points to match');
  const { mode, threads, k, alpha, chunk, probes } = resolveSearch(options);

  const out = new SharedArrayBuffer(nq * 16);
  let order: Int32Array = new Int32Array(0);
  const t0 = performance.now();
  // The compiled worker, also when this file runs from src/ under tsx (workers do not inherit loaders).
  // Started first: their start-up overlaps the preparation.
  const workerUrl = new URL('../../dist/engine/worker.js', import.meta.url);
  const workers = Array.from({ length: Math.min(threads, Math.ceil(nq / chunk)) }, () => new Worker(workerUrl));
  let next = 0;
  let survivors = 0;
  let screened = 0;
  let t1 = t0;
  try {
    const finished = Promise.all(
      workers.map(
        (w) =>
          new Promise<void>((resolve, reject) => {
            const feed = (): void => {
              if (next >= nq) {
                w.postMessage({ type: 'stop' });
                return;
              }
              const start = next;
              const count = Math.min(chunk, nq - start);
              next += count;
              w.postMessage({ type: 'search', start, count });
            };
            w.on('message', (m: WorkerReply) => {
              if (m.type === 'ready' || m.type === 'done') feed();
              else if (m.type === 'stopped') {
                survivors += m.survivors;
                screened += m.screened;
                resolve();
              } else reject(new TiematchError(m.code === 'ERR_KERNEL' ? 'ERR_KERNEL' : 'ERR_WORKER', `search thread: ${m.message}`));
            });
            w.on('error', (e) => reject(new TiematchError('ERR_WORKER', `search thread failed: ${e.message}`, { cause: e })));
            w.on('exit', (code) => {
              if (code !== 0) reject(new TiematchError('ERR_WORKER', `search thread exited with ${code}`));
            });
          }),
      ),
    );
    finished.catch(() => {}); // awaited below; a failure during preparation must not go unhandled
    const index = buildIndex(base, k, alpha);
    const prepared = prepareQueries(index, queries);
    t1 = performance.now();
    const init: WorkerInit = { index, queries: prepared, out, chunk, probes, exhaustive: mode === 'exact', ratio: options.ratio };
    for (const w of workers) w.postMessage({ type: 'init', init });
    await finished;
    order = prepared.order;
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
  const t2 = performance.now();

  return {
    ...unpermute(new Int32Array(out), order),
    stats: { threads: workers.length, k, alpha, probes: mode === 'exact' ? null : probes, screened, survivors, pairs: nb * nq, prepareMs: t1 - t0, searchMs: t2 - t1 },
  };
}
