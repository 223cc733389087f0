// MICMAC's Ann on keypoints: 2 nearest neighbours of every file2 point among file1, the ratio test,
// then the neighbour filter twice (CPP_Ann.cpp, match_and_filter).
import { TiematchError } from './errors.js';
import type { Keypoints } from './format/dat.js';
import { DESCRIPTOR_SIZE } from './format/dat.js';
import { neighbourFilter } from './filter.js';
import { nearestTwo, type NeighbourResult, type SearchMode } from './engine/search.js';

export const DEFAULT_RATIO = 0.6;

export interface AnnOptions {
  ratio?: number;
  mode?: SearchMode;
  threads?: number;
  /** MICMAC's neighbour filter (on by default, as in MICMAC). */
  filter?: boolean;
  k?: number;
  alpha?: number;
  /** Approx mode: clusters searched per query. */
  probes?: number;
}

export interface AnnResult {
  /** Index in file1 and in file2 of each match, in output order. */
  index1: Int32Array;
  index2: Int32Array;
  /** x1 y1 x2 y2 per match. */
  coordinates: Float64Array;
  /** Matches after the ratio test, before the filter (file2 order). */
  ratioMatches: number;
  /** The search: d2 and i2 are bounded by the ratio test (SearchOptions.ratio). */
  neighbours: NeighbourResult;
  timings: { searchMs: number; filterMs: number };
}

/** The ratio test as MICMAC evaluates it: ratio is read as a float, squared in double. */
export function ratioTest(d1: number, d2: number, ratio: number): boolean {
  const r = Math.fround(ratio);
  return d1 < r * r * d2;
}

/** The matches MICMAC keeps from a pair's 2 nearest neighbours: the ratio test, then the filter. */
export interface PairMatches {
  index1: Int32Array;
  index2: Int32Array;
  coordinates: Float64Array;
  ratioMatches: number;
  filterMs: number;
}

/** Refuses what Ann refuses: a bad ratio, a file1 too small for the ratio test. */
export function checkAnnInput(points1: Keypoints, ratio: number, what1 = 'file1'): void {
  if (!(ratio > 0 && Number.isFinite(ratio))) throw new TiematchError('ERR_INVALID_ARG', `ratio ${ratio}: must be a positive number`);
  if (points1.count < 2) throw new TiematchError('ERR_EMPTY', `${what1} has ${points1.count} point(s): the ratio test needs at least 2`);
}

export function matchNeighbours(points1: Keypoints, points2: Keypoints, neighbours: Pick<NeighbourResult, 'd1' | 'i1' | 'd2'>, ratio: number, filter: boolean): PairMatches {
  const t0 = performance.now();
  const all1 = new Int32Array(points2.count);
  const all2 = new Int32Array(points2.count);
  let ratioMatches = 0;
  for (let q = 0; q < points2.count; q++) {
    const nn = neighbours.i1[q];
    if (points2.type[q] === points1.type[nn] && ratioTest(neighbours.d1[q], neighbours.d2[q], ratio)) {
      all1[ratioMatches] = nn;
      all2[ratioMatches++] = q;
    }
  }
  let index1 = all1.slice(0, ratioMatches);
  let index2 = all2.slice(0, ratioMatches);
  if (filter) {
    const x1 = new Float64Array(ratioMatches), y1 = new Float64Array(ratioMatches);
    const x2 = new Float64Array(ratioMatches), y2 = new Float64Array(ratioMatches);
    for (let m = 0; m < ratioMatches; m++) {
      x1[m] = points1.x[index1[m]];
      y1[m] = points1.y[index1[m]];
      x2[m] = points2.x[index2[m]];
      y2[m] = points2.y[index2[m]];
    }
    const kept = neighbourFilter(x1, y1, x2, y2);
    const k1 = new Int32Array(kept.length), k2 = new Int32Array(kept.length);
    for (let m = 0; m < kept.length; m++) {
      k1[m] = index1[kept[m]];
      k2[m] = index2[kept[m]];
    }
    index1 = k1;
    index2 = k2;
  }
  const coordinates = new Float64Array(index1.length * 4);
  for (let m = 0; m < index1.length; m++) {
    coordinates[m * 4] = points1.x[index1[m]];
    coordinates[m * 4 + 1] = points1.y[index1[m]];
    coordinates[m * 4 + 2] = points2.x[index2[m]];
    coordinates[m * 4 + 3] = points2.y[index2[m]];
  }
  return { index1, index2, coordinates, ratioMatches, filterMs: performance.now() - t0 };
}

export async function annMatch(points1: Keypoints, points2: Keypoints, options: AnnOptions = {}): Promise<AnnResult> {
  const ratio = options.ratio ?? DEFAULT_RATIO;
  checkAnnInput(points1, ratio);
  // Both modes search only as far as the ratio test needs (SearchOptions.ratio): in exact mode the
  // matches are the full search's; in approx mode the screens tighten with it too.
  const t0 = performance.now();
  const neighbours = await nearestTwo(points1.descriptors, points2.descriptors, { mode: options.mode, threads: options.threads, k: options.k, alpha: options.alpha, probes: options.probes, ratio });
  const t1 = performance.now();
  const m = matchNeighbours(points1, points2, neighbours, ratio, options.filter ?? true);
  return { index1: m.index1, index2: m.index2, coordinates: m.coordinates, ratioMatches: m.ratioMatches, neighbours, timings: { searchMs: t1 - t0, filterMs: m.filterMs } };
}

/** Plain scalar brute force for a few queries: the independent reference --verify checks against. */
export function referenceNearestTwo(base: Uint8Array, queries: Uint8Array, which: Iterable<number>): Map<number, { d1: number; i1: number; d2: number; i2: number }> {
  const D = DESCRIPTOR_SIZE;
  const nb = base.length / D;
  const out = new Map<number, { d1: number; i1: number; d2: number; i2: number }>();
  for (const q of which) {
    let d1 = Infinity, i1 = -1, d2 = Infinity, i2 = -1;
    for (let j = 0; j < nb; j++) {
      let d = 0;
      for (let k = 0; k < D; k++) {
        const diff = queries[q * D + k] - base[j * D + k];
        d += diff * diff;
      }
      if (d < d1) {
        d2 = d1; i2 = i1; d1 = d; i1 = j;
      } else if (d < d2) {
        d2 = d; i2 = j;
      }
    }
    out.set(q, { d1, i1, d2, i2 });
  }
  return out;
}

export interface Verification {
  /** Exact ratio-test matches (before the filter) and how many the result has. */
  exactMatches: number;
  found: number;
  recall: number;
  falseMatches: number;
  /** Queries whose nearest neighbour is the exact one. */
  recallAt1: number;
  /** Queries rechecked against the scalar brute force, and disagreements. */
  sampled: number;
  sampleMismatches: number;
}

export function verify(result: NeighbourResult, exact: NeighbourResult, points1: Keypoints, points2: Keypoints, ratio: number, sample: Map<number, { d1: number; i1: number; d2: number; i2: number }>): Verification {
  const key = (r: NeighbourResult, q: number): boolean => points2.type[q] === points1.type[r.i1[q]] && ratioTest(r.d1[q], r.d2[q], ratio);
  let exactMatches = 0, found = 0, falseMatches = 0, same = 0;
  const nq = points2.count;
  for (let q = 0; q < nq; q++) {
    const e = key(exact, q);
    const g = key(result, q);
    if (e) exactMatches++;
    if (e && g && result.i1[q] === exact.i1[q]) found++;
    else if (g) falseMatches++;
    if (result.i1[q] === exact.i1[q]) same++;
  }
  let sampleMismatches = 0;
  for (const [q, r] of sample) {
    if (exact.d1[q] !== r.d1 || exact.i1[q] !== r.i1 || exact.d2[q] !== r.d2 || exact.i2[q] !== r.i2) sampleMismatches++;
  }
  return { exactMatches, found, recall: exactMatches ? found / exactMatches : 1, falseMatches, recallAt1: same / nq, sampled: sample.size, sampleMismatches };
}
