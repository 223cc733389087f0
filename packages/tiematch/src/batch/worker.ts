// A batch thread: matches whole pairs, each as `tiematch ann` would (same index, same chunks, same
// ratio test and filter), keeping the indexes it built in an LRU so that every pair of one file1
// reuses its index. Results go to a temporary name, then are renamed: a .result is complete or absent.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { checkAnnInput, matchNeighbours } from '../ann.js';
import { TiematchError } from '../errors.js';
import { writeResultBytes, writeResultFile } from '../files.js';
import { textResultOf } from '../format/result.js';
import { buildIndex, prepareQueries, type QueryLayout } from '../engine/layout.js';
import { unpermute } from '../engine/search.js';
import { KernelSearch } from '../engine/thread-search.js';
import { LruCache } from './lru.js';
import type { BatchReply, BatchWorkerData, PairTask } from './protocol.js';

const port = parentPort!;
const config = workerData as BatchWorkerData;
const { search } = config;

/** An index as a thread keeps it: the kernel's copy, and what laying out queries needs. */
interface HeldIndex {
  kernel: KernelSearch;
  layout: QueryLayout;
}
const indexes = new LruCache<HeldIndex>(config.indexBudget);

function indexOf(task: PairTask): { held: HeldIndex; built: boolean } {
  const cached = indexes.get(task.key);
  if (cached) return { held: cached, built: false };
  const index = buildIndex(task.pointsA.descriptors, search.k, search.alpha);
  const kernel = new KernelSearch(index, search.chunk, search.probes, search.mode === 'exact');
  kernel.setRatio(config.ratio); // as annMatch searches
  const held: HeldIndex = { kernel, layout: { params: index.params, centres: index.centres, centreN: index.centreN, nClusters: index.nClusters, supers: index.supers } };
  indexes.set(task.key, held, kernel.bytes);
  return { held, built: true };
}

function writeResult(path: string, task: PairTask, m: { index1: Int32Array; index2: Int32Array; coordinates: Float64Array }): void {
  try {
    mkdirSync(dirname(path), { recursive: true });
  } catch (e) {
    throw new TiematchError('ERR_OUTPUT', `cannot write ${path}: ${(e as Error).message}`, { cause: e });
  }
  if (config.newFormat || !task.textA || !task.textB) return writeResultFile(path, m.coordinates, config.newFormat);
  writeResultBytes(path, textResultOf(m.index1, m.index2, task.textA, task.textB));
}

function run(task: PairTask): BatchReply {
  const t0 = performance.now();
  checkAnnInput(task.pointsA, config.ratio, task.a);
  const { held, built } = indexOf(task);
  const t1 = performance.now();
  const queries = prepareQueries(held.layout, task.pointsB.descriptors);
  const out = new Int32Array(queries.n * 4);
  held.kernel.searchAll(queries, search.chunk, out);
  const t2 = performance.now();
  const m = matchNeighbours(task.pointsA, task.pointsB, unpermute(out, queries.order), config.ratio, config.filter);
  const t3 = performance.now();
  if (task.out) writeResult(task.out, task, m);
  const t4 = performance.now();
  return { type: 'done', id: task.id, matches: m.index1.length, ratioMatches: m.ratioMatches, indexBuilt: built, ms: { index: t1 - t0, search: t2 - t1, filter: t3 - t2, write: t4 - t3 } };
}

port.on('message', (task: PairTask) => {
  let reply: BatchReply;
  try {
    reply = run(task);
  } catch (e) {
    reply = { type: 'failed', id: task.id, code: (e as { code?: string }).code ?? 'ERR_WORKER', message: (e as Error).message };
  }
  port.postMessage(reply);
});
