// The index layout: an image's descriptors projected on its own principal axes, clustered and laid
// out for the kernel's search; and a query set laid out against an index. The index depends on
// its image alone, so one index serves every pair its image is file1 of (tiematch batch) and a
// pair's result does not depend on how it was reached.
import { TiematchError } from '../errors.js';
import { DESCRIPTOR_SIZE } from '../format/dat.js';
import { KernelMoments, MAX_ROWS } from './moments.js';
import { principalBasis, type Basis } from './pca.js';
import { Arena, scratchArena } from './wasm.js';

const D = DESCRIPTOR_SIZE;
export const SUPPORTED_K = [8, 16, 24, 32] as const;
/** Extra principal components in the second screen (EXT in kernel.c). */
export const EXT = 16;
/** Bound on |y| for the quantized projections, so that |y_b|^2 - 2 y_q.y_b fits in i32. */
const PROJECTED_RADIUS = 24000;
const PADDING_NORM = 2_000_000_000;
const FIXED_ONE = 1 << 14;
/** Clusters, padding included, an index may have (MAX_CLUSTERS in kernel.c): sets of ~8 M points. */
export const MAX_CLUSTERS = 65536;
/** Clusters of about this many base points: a probe scans a few of them. */
export const CLUSTER_SIZE = 128;
/**
 * Up to this many clusters, one level: a query measures every centre. Beyond it, two: clusters
 * grouped in super-clusters of about SUPER_SIZE, and in approx mode a query measures the centres
 * of its SUPER_PROBES nearest super-clusters only, so that its cost grows with sqrt(N), not N.
 */
export const FLAT_CLUSTERS = 1024;
const SUPER_SIZE = 64;
export const SUPER_PROBES = 4;
const KMEANS_ROUNDS = 4;
const KMEANS_SAMPLE = 32;
/** Rows per kernel call: V8 tiers a wasm function up between calls, not inside a long one. */
const CALL_ROWS = 1024;

/** The screen's parameters, shared by every search thread. */
export interface ScreenParams {
  k: number;
  /** The basis in fixed point (K + EXT rows of 128, i16), Q.mean, and y = round(factor (Q a - Q.mean)). */
  fixed: Int16Array;
  fixedMean: Float64Array;
  factor: number;
  /** Bound on |y_a - y_b| / |a - b| (the projection's scale, widened by the fixed point's error). */
  scale: number;
  /** sqrt(dims) x (rounding of both ends), in quantized units, for K and K + EXT dims. */
  slack: number;
  slack2: number;
  /** 1 for the exact search; below 1 the screens also drop points that are probably too far. */
  alpha: number;
}

export function screenParams(basis: Basis, alpha: number): ScreenParams {
  if (!SUPPORTED_K.includes(basis.k - EXT as (typeof SUPPORTED_K)[number])) {
    throw new TiematchError('ERR_INVALID_ARG', `K = ${basis.k - EXT}: the kernel supports ${SUPPORTED_K.join(', ')}`);
  }
  const scale = PROJECTED_RADIUS / Math.max(basis.radius, 1);
  const k = basis.k - EXT;
  // Q = round(2^14 P): |P_ij| <= 1 fits i16, and Q a is exact in i32. The operator norm of Q / 2^14
  // is at most 1 + |Q / 2^14 - P|_F (P orthonormal), which widens the bound.
  const fixed = new Int16Array(basis.rows.length);
  const fixedMean = new Float64Array(basis.k);
  let error2 = 0;
  for (let i = 0; i < fixed.length; i++) {
    fixed[i] = Math.round(basis.rows[i] * FIXED_ONE);
    error2 += (fixed[i] / FIXED_ONE - basis.rows[i]) ** 2;
    fixedMean[Math.floor(i / D)] += fixed[i] * basis.mean[i % D];
  }
  return { k, fixed, fixedMean, factor: scale / FIXED_ONE, scale: scale * (1 + Math.sqrt(error2) + 1e-9), slack: Math.sqrt(k) * (1 + 1e-6), slack2: Math.sqrt(k + EXT) * (1 + 1e-6), alpha };
}

/** The base laid out for the kernel, in slots: clusters one after another, each padded to 8. */
export interface PreparedIndex {
  params: ScreenParams;
  n: number;
  slots: number;
  baseIl: Int16Array;
  baseProjN: Int32Array;
  baseU8: Uint8Array;
  baseFullN: Int32Array;
  /** Projections [k, k + EXT), interleaved as baseIl. */
  baseExt: Int16Array;
  baseExtN: Int32Array;
  baseIndex: Int32Array;
  /** Cluster centres on the first K projections, interleaved and padded to 4, and their squared norms. */
  centres: Int16Array;
  centreN: Int32Array;
  nClusters: number;
  /** c + 1 slot bounds. */
  clusterStart: Int32Array;
  /** Per cluster, the largest distance of its points from its centre (first K projections). */
  clusterRadius: Float64Array;
  /** Two levels (more than FLAT_CLUSTERS clusters); absent: one. */
  supers?: SuperClusters;
}

/** Super-clusters: each a run of cluster ids [start[s], start[s + 1]), a multiple of 4 long. */
export interface SuperClusters {
  count: number;
  /** Centres on the first K projections, interleaved and padded to 4, and their squared norms. */
  centres: Int16Array;
  centreN: Int32Array;
  start: Int32Array;
}

/** What laying out queries needs of an index. */
export type QueryLayout = Pick<PreparedIndex, 'params' | 'centres' | 'centreN' | 'nClusters' | 'supers'>;

/** Queries, sorted by their nearest cluster so that a tile of 4 shares the clusters it scans. */
export interface PreparedQueries {
  n: number;
  /** order[i]: the original index of the i-th query in search order. */
  order: Int32Array;
  u8: Uint8Array;
  proj: Int16Array;
  projN: Int32Array;
  extN: Int32Array;
}

/** Bytes an index holds (its typed arrays). */
export function indexBytes(index: PreparedIndex): number {
  const arrays = [index.baseIl, index.baseProjN, index.baseU8, index.baseFullN, index.baseExt, index.baseExtN, index.baseIndex, index.centres, index.centreN, index.clusterStart, index.clusterRadius, index.params.fixed, ...(index.supers ? [index.supers.centres, index.supers.centreN, index.supers.start] : [])];
  return arrays.reduce((sum, a) => sum + a.byteLength, 0);
}

interface Projected {
  proj: Int16Array;
  projPtr: number;
  norms: Int32Array;
  extNorms: Int32Array;
}

function projectAll(arena: Arena, srcPtr: number, n: number, params: ScreenParams): Projected {
  const ke = params.k + EXT;
  const rows = arena.put(params.fixed);
  const mean = arena.put(params.fixedMean);
  const out = arena.alloc(n * ke * 2);
  const norms = arena.alloc(n * 4);
  const ext = arena.alloc(n * 4);
  for (let s = 0; s < n; s += CALL_ROWS) {
    const m = Math.min(CALL_ROWS, n - s);
    arena.exports.project(srcPtr + s * D, m, rows, mean, params.k, EXT, params.factor, out + s * ke * 2, norms + s * 4, ext + s * 4);
  }
  return { proj: arena.i16(out, n * ke), projPtr: out, norms: arena.i32(norms, n), extNorms: arena.i32(ext, n) };
}

/** Centres laid out for the kernel: interleaved like the base, padded to 4 with centres never nearest. */
function centreLayout(arena: Arena, centres: Int16Array, k: number): { il: Int16Array; norms: Int32Array } {
  const c = centres.length / k;
  const padded = Math.ceil(c / 4) * 4;
  const src = arena.put(centres);
  const il = arena.alloc(padded * k * 2);
  arena.exports.interleave(src, c, k, 0, padded, il, 0);
  const norms = new Int32Array(padded).fill(0x7fffffff);
  for (let j = 0; j < c; j++) {
    let s = 0;
    for (let d = 0; d < k; d++) s += centres[j * k + d] * centres[j * k + d];
    norms[j] = s;
  }
  const result = { il: arena.i16(il, padded * k).slice(), norms };
  arena.release(src);
  return result;
}

/** Nearest centre of each row (first k of each `stride` i16), in the kernel. */
function assignAll(arena: Arena, projPtr: number, n: number, stride: number, k: number, il: Int16Array, norms: Int32Array): Int32Array {
  const ilPtr = arena.put(il);
  const nPtr = arena.put(norms);
  const out = arena.alloc(n * 4);
  for (let s = 0; s < n; s += CALL_ROWS) arena.exports.assign(projPtr + s * stride * 2, Math.min(CALL_ROWS, n - s), stride, k, ilPtr, nPtr, norms.length, out + s * 4);
  const result = arena.i32(out, n).slice();
  arena.release(ilPtr);
  return result;
}

/**
 * k-means on the first k projections, from evenly spaced points, its rounds on an even sample of
 * about KMEANS_SAMPLE points a cluster; returns the centres.
 */
function cluster(arena: Arena, p: Pick<Projected, 'proj' | 'projPtr'>, n: number, ke: number, k: number, c: number): Int16Array {
  const centres = new Int16Array(c * k);
  for (let j = 0; j < c; j++) for (let d = 0; d < k; d++) centres[j * k + d] = p.proj[Math.floor((j * n) / c) * ke + d];
  const step = Math.max(1, Math.floor(n / (c * KMEANS_SAMPLE)));
  const sampled = Math.ceil(n / step);
  const sums = new Float64Array(c * k);
  const sizes = new Int32Array(c);
  for (let round = 0; round < KMEANS_ROUNDS; round++) {
    const { il, norms } = centreLayout(arena, centres, k);
    const member = assignAll(arena, p.projPtr, sampled, ke * step, k, il, norms);
    sums.fill(0);
    sizes.fill(0);
    for (let s = 0; s < sampled; s++) {
      const j = member[s];
      sizes[j]++;
      for (let d = 0; d < k; d++) sums[j * k + d] += p.proj[s * step * ke + d];
    }
    for (let j = 0; j < c; j++) if (sizes[j]) for (let d = 0; d < k; d++) centres[j * k + d] = Math.round(sums[j * k + d] / sizes[j]);
  }
  return centres;
}

/** Each row's cluster with one or two levels (centres: interleaved; with supers, the ids of each super's run). */
function assignRows(arena: Arena, projPtr: number, n: number, ke: number, k: number, centres: Int16Array, centreN: Int32Array, supers?: SuperClusters): Int32Array {
  if (!supers) return assignAll(arena, projPtr, n, ke, k, centres, centreN);
  const top = assignAll(arena, projPtr, n, ke, k, supers.centres, supers.centreN);
  const out = new Int32Array(n);
  for (const [s, rows] of groupRows(top, supers.count)) {
    const from = supers.start[s], to = supers.start[s + 1];
    if (to === from) continue; // never nearest: a super-cluster with no point
    const mark = arena.mark();
    const g = gatherRows(arena, projPtr, ke, rows);
    const near = assignAll(arena, g, rows.length, ke, k, centres.subarray(from * k, to * k), centreN.subarray(from, to));
    for (let i = 0; i < rows.length; i++) out[rows[i]] = from + near[i];
    arena.release(mark);
  }
  return out;
}

/** The rows of each group, in order (groups by index). */
function groupRows(group: Int32Array, count: number): Map<number, Int32Array> {
  const at = new Int32Array(count + 1);
  for (let i = 0; i < group.length; i++) at[group[i] + 1]++;
  for (let g = 0; g < count; g++) at[g + 1] += at[g];
  const rows = new Int32Array(group.length);
  const fill = at.slice(0, count);
  for (let i = 0; i < group.length; i++) rows[fill[group[i]]++] = i;
  const out = new Map<number, Int32Array>();
  for (let g = 0; g < count; g++) if (at[g + 1] > at[g]) out.set(g, rows.subarray(at[g], at[g + 1]));
  return out;
}

/** Rows `rows` of a ke-i16-wide projection table, gathered into the arena: their address. */
function gatherRows(arena: Arena, projPtr: number, ke: number, rows: Int32Array): number {
  const idx = arena.put(rows);
  const g = arena.alloc(rows.length * ke * 2);
  arena.exports.gather_rows(projPtr, ke * 2, idx, rows.length, g);
  return g;
}

/**
 * The clusters of n points: one level (k-means of round(n / CLUSTER_SIZE) centres) up to
 * FLAT_CLUSTERS; beyond, k-means of the super-clusters, then within each, k-means of its points
 * into clusters of about CLUSTER_SIZE (hierarchical: no step measures n x clusters).
 */
function clusterAll(arena: Arena, b: Projected, n: number, ke: number, k: number): { count: number; centres: Int16Array; centreN: Int32Array; member: Int32Array; supers?: SuperClusters } {
  const c = Math.max(1, Math.round(n / CLUSTER_SIZE));
  if (c <= FLAT_CLUSTERS) {
    const centres = cluster(arena, b, n, ke, k, c);
    const layout = centreLayout(arena, centres, k);
    return { count: c, centres: layout.il, centreN: layout.norms, member: assignAll(arena, b.projPtr, n, ke, k, layout.il, layout.norms), supers: undefined };
  }
  const S = Math.ceil(c / SUPER_SIZE);
  const top = centreLayout(arena, cluster(arena, b, n, ke, k, S), k);
  const topMember = assignAll(arena, b.projPtr, n, ke, k, top.il, top.norms);
  const groups = groupRows(topMember, S);
  const start = new Int32Array(S + 1);
  const clustersOf = (s: number): number => (groups.has(s) ? Math.max(1, Math.round(groups.get(s)!.length / CLUSTER_SIZE)) : 0);
  for (let s = 0; s < S; s++) start[s + 1] = start[s] + Math.ceil(clustersOf(s) / 4) * 4;
  const total = start[S];
  if (total > MAX_CLUSTERS) throw new TiematchError('ERR_INVALID_ARG', `${n} points need ${total} clusters: the kernel takes at most ${MAX_CLUSTERS} (about ${MAX_CLUSTERS * CLUSTER_SIZE} points)`);
  const centres = new Int16Array(total * k);
  const member = new Int32Array(n);
  for (const [s, rows] of groups) {
    const cs = clustersOf(s);
    const mark = arena.mark();
    const g = gatherRows(arena, b.projPtr, ke, rows);
    const sub = cluster(arena, { proj: arena.i16(g, rows.length * ke), projPtr: g }, rows.length, ke, k, cs);
    const layout = centreLayout(arena, sub, k);
    const near = assignAll(arena, g, rows.length, ke, k, layout.il, layout.norms);
    for (let i = 0; i < rows.length; i++) member[rows[i]] = start[s] + near[i];
    centres.set(sub, start[s] * k);
    arena.release(mark);
  }
  // Padding clusters (zero centres) are made never nearest by their norm.
  const layout = centreLayout(arena, centres, k);
  const used = new Uint8Array(total);
  for (const s of groups.keys()) used.fill(1, start[s], start[s] + clustersOf(s));
  for (let j = 0; j < total; j++) if (!used[j]) layout.norms[j] = 0x7fffffff;
  return { count: total, centres: layout.il, centreN: layout.norms, member, supers: { count: S, centres: top.il, centreN: top.norms, start } };
}

/** Rows of src (width bytes each) picked by index, copied out of the arena. */
function gather(arena: Arena, srcPtr: number, width: number, indexPtr: number, count: number): Uint8Array {
  const dst = arena.alloc(count * width);
  arena.exports.gather_rows(srcPtr, width, indexPtr, count, dst);
  return arena.u8(dst, count * width).slice();
}

const asI16 = (u8: Uint8Array): Int16Array => new Int16Array(u8.buffer, u8.byteOffset, u8.byteLength / 2);

/** Builds the index of one image's descriptors: its principal axes, clusters and slot layout. */
export function buildIndex(descriptors: Uint8Array, k: number, alpha: number): PreparedIndex {
  const n = descriptors.length / D;
  const ke = k + EXT;
  // The set, its projections and norms, the PCA's scratch, the clusters, and the slots (each
  // cluster padded to 8): their index, permuted projections and descriptors, interleaved and
  // extension projections.
  const clustersAtMost = Math.min(MAX_CLUSTERS, Math.ceil(n / CLUSTER_SIZE) * 2 + 8);
  const slotsAtMost = n + 8 * clustersAtMost;
  const bytes = n * (D + 2 * ke + 16 + 2 * ke + 8) + (D * D + D + 2 * MAX_ROWS * D) * 8 + clustersAtMost * (ke * 4 + 16) + slotsAtMost * (4 + 2 * ke + D + 2 * k + 4 * EXT) + (1 << 20);
  const arena = scratchArena(bytes);
  const srcPtr = arena.put(descriptors);
  const params = screenParams(principalBasis(new KernelMoments(arena, srcPtr, n), ke), alpha);
  const b = projectAll(arena, srcPtr, n, params);

  // Clusters of the base, laid out one after another, each padded to a multiple of 8 slots.
  const { count: c, centres, centreN, member, supers } = clusterAll(arena, b, n, ke, k);
  const sizes = new Int32Array(c);
  for (let i = 0; i < n; i++) sizes[member[i]]++;
  const clusterStart = new Int32Array(c + 1);
  for (let j = 0; j < c; j++) clusterStart[j + 1] = clusterStart[j] + Math.ceil(sizes[j] / 8) * 8;
  const slots = clusterStart[c];
  const fill = clusterStart.slice(0, c);

  const radius2 = new Float64Array(c);
  for (let i = 0; i < n; i++) {
    const j = member[i];
    // The centre's coordinates, from its interleaved layout (blocks of 4 centres, pairs of dims).
    const base = (j >> 2) * 4 * k + (j & 3) * 2;
    let e = 0;
    for (let d = 0; d < k; d++) e += (b.proj[i * ke + d] - centres[base + (d >> 1) * 8 + (d & 1)]) ** 2;
    if (e > radius2[j]) radius2[j] = e;
  }
  const normsPtr = arena.alloc(n * 4);
  arena.exports.sq_norms(srcPtr, n, normsPtr);
  const fullN = arena.i32(normsPtr, n);
  const baseIndex = new Int32Array(slots).fill(-1);
  const baseProjN = new Int32Array(slots).fill(PADDING_NORM);
  const baseExtN = new Int32Array(slots);
  const baseFullN = new Int32Array(slots);
  for (let i = 0; i < n; i++) {
    const s = fill[member[i]]++;
    baseIndex[s] = i;
    baseProjN[s] = b.norms[i];
    baseExtN[s] = b.extNorms[i];
    baseFullN[s] = fullN[i];
  }
  const indexPtr = arena.put(baseIndex);
  const permProj = arena.alloc(slots * ke * 2);
  arena.exports.gather_rows(b.projPtr, ke * 2, indexPtr, slots, permProj);
  const baseU8 = gather(arena, srcPtr, D, indexPtr, slots);
  const ilPtr = arena.alloc(slots * k * 2);
  const extPtr = arena.alloc(slots * EXT * 2);
  arena.exports.interleave(permProj, slots, k, EXT, slots, ilPtr, extPtr);
  // The extension dims interleaved too: the kernel's second screen takes 8 slots at once.
  const extIlPtr = arena.alloc(slots * EXT * 2);
  arena.exports.interleave(extPtr, slots, EXT, 0, slots, extIlPtr, 0);
  return {
    params,
    n,
    slots,
    baseIl: arena.i16(ilPtr, slots * k).slice(),
    baseProjN,
    baseU8,
    baseFullN,
    baseExt: arena.i16(extIlPtr, slots * EXT).slice(),
    baseExtN,
    baseIndex,
    centres,
    centreN,
    nClusters: c,
    clusterStart,
    clusterRadius: radius2.map(Math.sqrt),
    supers,
  };
}

/** Lays out queries against an index: projected on its axes, sorted by their nearest cluster. */
export function prepareQueries(index: QueryLayout, descriptors: Uint8Array): PreparedQueries {
  const { params } = index;
  const nq = descriptors.length / D;
  const k = params.k;
  const ke = k + EXT;
  const arena = scratchArena(nq * (3 * D + 7 * ke + 48) + index.centres.length * 2 + index.centreN.length * 4 + (index.supers ? index.supers.centres.length * 2 + index.supers.centreN.length * 4 : 0) + (1 << 16));
  const srcPtr = arena.put(descriptors);
  const q = projectAll(arena, srcPtr, nq, params);
  const home = assignRows(arena, q.projPtr, nq, ke, k, index.centres, index.centreN, index.supers);
  const c = index.nClusters;
  const order = new Int32Array(nq);
  {
    // Counting sort by home cluster, stable.
    const at = new Int32Array(c + 1);
    for (let i = 0; i < nq; i++) at[home[i] + 1]++;
    for (let j = 0; j < c; j++) at[j + 1] += at[j];
    for (let i = 0; i < nq; i++) order[at[home[i]]++] = i;
  }
  const orderPtr = arena.put(order);
  const projN = new Int32Array(nq);
  const extN = new Int32Array(nq);
  for (let s = 0; s < nq; s++) {
    projN[s] = q.norms[order[s]];
    extN[s] = q.extNorms[order[s]];
  }
  return { n: nq, order, u8: gather(arena, srcPtr, D, orderPtr, nq), proj: asI16(gather(arena, q.projPtr, ke * 2, orderPtr, nq)), projN, extN };
}
