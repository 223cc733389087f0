// The WebAssembly kernel (wasm/kernel.c) behind a typed facade.
// - prepare(): on the calling thread, projects both sets on the basis, clusters the base and lays
//   it out for the kernel (an index);
// - KernelSearch: one per search thread, holds a copy of the index and answers chunks of queries
//   with their exact 2 nearest neighbours.
import { readFileSync } from 'node:fs';
import { TiematchError } from '../errors.js';
import { DESCRIPTOR_SIZE } from '../format/dat.js';
import type { Basis } from './pca.js';

const D = DESCRIPTOR_SIZE;
export const SUPPORTED_K = [8, 16, 24, 32] as const;
/** Extra principal components in the second screen (EXT in kernel.c). */
export const EXT = 16;
/** Bound on |y| for the quantized projections, so that |y_b|^2 - 2 y_q.y_b fits in i32. */
const PROJECTED_RADIUS = 24000;
const PADDING_NORM = 2_000_000_000;
const FIXED_ONE = 1 << 14;
/** Most basis rows: the largest K + EXT. */
const MAX_ROWS = 48;
const MAX_CLUSTERS = 1024; // MAX_CLUSTERS in kernel.c
const JOB_SIZE = 160; // sizeof(Job) in kernel.c, rounded up

let cached: WebAssembly.Module | undefined;

export function kernelModule(): WebAssembly.Module {
  if (cached) return cached;
  const url = new URL('../../build/kernel.wasm', import.meta.url);
  let bytes: Buffer;
  try {
    bytes = readFileSync(url);
  } catch (e) {
    throw new TiematchError('ERR_KERNEL', `the WebAssembly kernel ${url.pathname} is missing: run npm run build`, { cause: e });
  }
  cached = new WebAssembly.Module(new Uint8Array(bytes));
  return cached;
}

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

interface Exports {
  column_sums(src: number, n: number, sums: number): void;
  moments(src: number, n: number, step: number, meanQ: number, S: number, sums: number): number;
  widen(src: number, dst: number, norms: number, n: number): void;
  times_rows(C: number, Q: number, n: number, k: number, out: number): void;
  project(src: number, n: number, Q: number, qMean: number, K: number, E: number, factor: number, out: number, norms: number, extNorms: number): void;
  interleave(proj: number, n: number, K: number, E: number, nPadded: number, out: number, ext: number): void;
  sq_norms(src: number, n: number, norms: number): void;
  gather_rows(src: number, width: number, index: number, count: number, dst: number): void;
  assign(proj: number, n: number, stride: number, K: number, centres: number, centreN: number, c: number, out: number): void;
  [name: `search_k${number}`]: (job: number) => number;
  __heap_base: WebAssembly.Global;
}

/** A kernel instance with a bump allocator over its own memory. */
export class Arena {
  readonly exports: Exports;
  private readonly memory: WebAssembly.Memory;
  private at: number;
  constructor(bytes: number) {
    const heapBase = 1 << 20; // above the kernel's data and 64 KiB stack
    this.memory = new WebAssembly.Memory({ initial: Math.ceil((heapBase + bytes) / 65536) + 1 });
    const instance = new WebAssembly.Instance(kernelModule(), { env: { memory: this.memory } });
    this.exports = instance.exports as unknown as Exports;
    if ((this.exports.__heap_base.value as number) > heapBase) throw new TiematchError('ERR_KERNEL', 'kernel data overlaps the heap');
    this.at = heapBase;
  }
  alloc(bytes: number): number {
    const p = this.at;
    this.at += Math.ceil(bytes / 16) * 16;
    if (this.at > this.memory.buffer.byteLength) throw new TiematchError('ERR_KERNEL', 'kernel arena exhausted');
    return p;
  }
  /** Frees p and everything allocated after it. */
  release(p: number): void {
    this.at = p;
  }
  get buffer(): ArrayBuffer {
    return this.memory.buffer;
  }
  i16(p: number, n: number): Int16Array {
    return new Int16Array(this.memory.buffer, p, n);
  }
  i32(p: number, n: number): Int32Array {
    return new Int32Array(this.memory.buffer, p, n);
  }
  u8(p: number, n: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, p, n);
  }
}

/**
 * The calling thread's kernel: holds the base and the queries once, for the principal axes and
 * for prepare(), which lays out the index.
 */
export class KernelTools {
  readonly arena: Arena;
  /** Where each set lies in the arena, and its number of points. */
  readonly sets: { ptr: number; n: number }[];
  private readonly scratch: number;
  private readonly mat: number;
  private readonly rows: number;
  private readonly product: number;
  constructor(sets: Uint8Array[]) {
    const n = sets.reduce((sum, set) => sum + set.length / D, 0);
    // The sets, the PCA's scratch, and prepare()'s layout with the largest K (projections, clusters,
    // the permuted base, the sorted queries).
    const ke = MAX_ROWS;
    const bytes = 2 * n * D + (D * D + D + 2 * MAX_ROWS * D) * 8 + n * (ke * 4 + 40) + 8 * MAX_CLUSTERS * (ke * 4 + D + 16) + MAX_CLUSTERS * (ke * 4 + 16) + (1 << 20);
    this.arena = new Arena(bytes);
    this.sets = sets.map((set) => {
      const ptr = this.arena.alloc(set.length);
      this.arena.u8(ptr, set.length).set(set);
      return { ptr, n: set.length / D };
    });
    this.scratch = this.arena.alloc(D * 8);
    this.mat = this.arena.alloc(D * D * 8);
    this.rows = this.arena.alloc(MAX_ROWS * D * 8);
    this.product = this.arena.alloc(MAX_ROWS * D * 8);
  }
  /** out = rows of q times the symmetric 128 x 128 matrix c. */
  timesRows(c: Float64Array, q: Float64Array, rows: number, out: Float64Array): void {
    if (rows > MAX_ROWS) throw new TiematchError('ERR_INVALID_ARG', `${rows} rows: at most ${MAX_ROWS}`);
    new Float64Array(this.arena.buffer, this.mat, D * D).set(c);
    new Float64Array(this.arena.buffer, this.rows, rows * D).set(q.subarray(0, rows * D));
    this.arena.exports.times_rows(this.mat, this.rows, D, rows, this.product);
    out.set(new Float64Array(this.arena.buffer, this.product, rows * D));
  }
  /** Column sums over every set. */
  columnSums(): Float64Array {
    const v = new Float64Array(this.arena.buffer, this.scratch, D).fill(0);
    for (const set of this.sets) this.arena.exports.column_sums(set.ptr, set.n, this.scratch);
    return v.slice();
  }
  /**
   * Second moments of every step-th row (at most 2^15 rows: S is exact in i32) about `mean`, and
   * an upper bound on max |a - mean|^2 over every row.
   */
  moments(step: number, mean: Float64Array): { cov: Float64Array; count: number; radius2: number } {
    const a = this.arena;
    const mark = a.alloc(0);
    const meanQ = a.alloc(D * 2);
    const S = a.alloc(D * D * 4);
    const sums = a.alloc(D * 4);
    const q = a.i16(meanQ, D);
    for (let i = 0; i < D; i++) q[i] = Math.round(mean[i] * 256);
    a.i32(S, D * D).fill(0);
    a.i32(sums, D).fill(0);
    let count = 0;
    let worst = -Infinity;
    for (const set of this.sets) {
      count += Math.ceil(set.n / step);
      worst = Math.max(worst, a.exports.moments(set.ptr, set.n, step, meanQ, S, sums));
    }
    if (count > 1 << 15) throw new TiematchError('ERR_INVALID_ARG', `moments of ${count} rows: at most 32768`);
    const s = a.i32(S, D * D);
    const sum = a.i32(sums, D);
    const cov = new Float64Array(D * D);
    for (let i = 0; i < D; i++)
      for (let j = i; j < D; j++) {
        const v = s[i * D + j] - mean[i] * sum[j] - sum[i] * mean[j] + count * mean[i] * mean[j];
        cov[i * D + j] = cov[j * D + i] = v;
      }
    let m2 = 0;
    for (let i = 0; i < D; i++) m2 += mean[i] * mean[i];
    a.release(mark);
    return { cov, count, radius2: worst + m2 + 128 };
  }
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
  baseExt: Int16Array;
  baseExtN: Int32Array;
  baseIndex: Int32Array;
  /** Cluster centres on the first K projections, interleaved and padded to 4, and their squared norms. */
  centres: Int16Array;
  centreN: Int32Array;
  nClusters: number;
  /** c + 1 slot bounds. */
  clusterStart: Int32Array;
}

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

function projectAll(arena: Arena, set: { ptr: number; n: number }, params: ScreenParams): { proj: Int16Array; projPtr: number; srcPtr: number; norms: Int32Array; extNorms: Int32Array } {
  const n = set.n;
  const ke = params.k + EXT;
  const rows = arena.alloc(params.fixed.length * 2);
  const mean = arena.alloc(ke * 8);
  const out = arena.alloc(n * ke * 2);
  const norms = arena.alloc(n * 4);
  const ext = arena.alloc(n * 4);
  arena.i16(rows, params.fixed.length).set(params.fixed);
  new Float64Array(arena.buffer, mean, ke).set(params.fixedMean);
  // Short calls: V8 tiers a wasm function up between calls, not inside a long one.
  for (let s = 0; s < n; s += 1024) {
    const m = Math.min(1024, n - s);
    arena.exports.project(set.ptr + s * D, m, rows, mean, params.k, EXT, params.factor, out + s * ke * 2, norms + s * 4, ext + s * 4);
  }
  return { proj: arena.i16(out, n * ke), projPtr: out, srcPtr: set.ptr, norms: arena.i32(norms, n), extNorms: arena.i32(ext, n) };
}

/** Clusters of about this many base points: a probe scans a few of them. */
export const CLUSTER_SIZE = 128;
const KMEANS_ROUNDS = 4;
const KMEANS_SAMPLE = 32;

/** Centres laid out for the kernel: interleaved like the base, padded to 4 with centres never nearest. */
function centreLayout(arena: Arena, centres: Int16Array, k: number): { il: Int16Array; norms: Int32Array } {
  const c = centres.length / k;
  const padded = Math.ceil(c / 4) * 4;
  const src = arena.alloc(centres.length * 2);
  const il = arena.alloc(padded * k * 2);
  arena.i16(src, centres.length).set(centres);
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

type CentreLayout = ReturnType<typeof centreLayout>;

/** Nearest centre of each row (first k of each `stride` i16), in the kernel. */
function assignAll(arena: Arena, projPtr: number, n: number, stride: number, k: number, { il, norms }: CentreLayout): Int32Array {
  const ilPtr = arena.alloc(il.length * 2);
  const nPtr = arena.alloc(norms.length * 4);
  const out = arena.alloc(n * 4);
  arena.i16(ilPtr, il.length).set(il);
  arena.i32(nPtr, norms.length).set(norms);
  for (let s = 0; s < n; s += 1024) arena.exports.assign(projPtr + s * stride * 2, Math.min(1024, n - s), stride, k, ilPtr, nPtr, norms.length, out + s * 4);
  const result = arena.i32(out, n).slice();
  arena.release(ilPtr);
  return result;
}

/**
 * k-means on the first k projections, from evenly spaced points, its rounds on an even sample of
 * about KMEANS_SAMPLE points a cluster; returns the centres.
 */
function cluster(arena: Arena, projPtr: number, proj: Int16Array, n: number, ke: number, k: number): Int16Array {
  const c = Math.max(1, Math.min(MAX_CLUSTERS, Math.round(n / CLUSTER_SIZE)));
  const centres = new Int16Array(c * k);
  for (let j = 0; j < c; j++) for (let d = 0; d < k; d++) centres[j * k + d] = proj[Math.floor((j * n) / c) * ke + d];
  const step = Math.max(1, Math.floor(n / (c * KMEANS_SAMPLE)));
  const sampled = Math.ceil(n / step);
  const sums = new Float64Array(c * k);
  const sizes = new Int32Array(c);
  for (let round = 0; round < KMEANS_ROUNDS; round++) {
    const member = assignAll(arena, projPtr, sampled, ke * step, k, centreLayout(arena, centres, k));
    sums.fill(0);
    sizes.fill(0);
    for (let s = 0; s < sampled; s++) {
      const j = member[s];
      sizes[j]++;
      for (let d = 0; d < k; d++) sums[j * k + d] += proj[s * step * ke + d];
    }
    for (let j = 0; j < c; j++) if (sizes[j]) for (let d = 0; d < k; d++) centres[j * k + d] = Math.round(sums[j * k + d] / sizes[j]);
  }
  return centres;
}

/** Lays out the index and the queries; tools holds the base (set 0) and the queries (set 1). */
export function prepare(tools: KernelTools, params: ScreenParams): { index: PreparedIndex; queries: PreparedQueries } {
  const [baseSet, querySet] = tools.sets;
  const n = baseSet.n;
  const nq = querySet.n;
  const k = params.k;
  const ke = k + EXT;
  const arena = tools.arena;
  const b = projectAll(arena, baseSet, params);
  const q = projectAll(arena, querySet, params);

  // Clusters of the base, laid out one after another, each padded to a multiple of 8 slots.
  const centres = cluster(arena, b.projPtr, b.proj, n, ke, k);
  const layout = centreLayout(arena, centres, k);
  const member = assignAll(arena, b.projPtr, n, ke, k, layout);
  const c = centres.length / k;
  const sizes = new Int32Array(c);
  for (let i = 0; i < n; i++) sizes[member[i]]++;
  const clusterStart = new Int32Array(c + 1);
  for (let j = 0; j < c; j++) clusterStart[j + 1] = clusterStart[j] + Math.ceil(sizes[j] / 8) * 8;
  const slots = clusterStart[c];
  const fill = clusterStart.slice(0, c);

  const normsPtr = arena.alloc(n * 4);
  arena.exports.sq_norms(b.srcPtr, n, normsPtr);
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
  const indexPtr = arena.alloc(slots * 4);
  arena.i32(indexPtr, slots).set(baseIndex);
  const permProj = arena.alloc(slots * ke * 2);
  const baseU8Ptr = arena.alloc(slots * D);
  arena.exports.gather_rows(b.projPtr, ke * 2, indexPtr, slots, permProj);
  arena.exports.gather_rows(b.srcPtr, D, indexPtr, slots, baseU8Ptr);
  const baseU8 = arena.u8(baseU8Ptr, slots * D).slice();
  const ilPtr = arena.alloc(slots * k * 2);
  const extPtr = arena.alloc(slots * EXT * 2);
  arena.exports.interleave(permProj, slots, k, EXT, slots, ilPtr, extPtr);
  const index: PreparedIndex = {
    params,
    n,
    slots,
    baseIl: arena.i16(ilPtr, slots * k).slice(),
    baseProjN,
    baseU8,
    baseFullN,
    baseExt: arena.i16(extPtr, slots * EXT).slice(),
    baseExtN,
    baseIndex,
    centres: layout.il,
    centreN: layout.norms,
    nClusters: c,
    clusterStart,
  };

  const home = assignAll(arena, q.projPtr, nq, ke, k, layout);
  const order = new Int32Array(nq);
  {
    // Counting sort by home cluster, stable.
    const at = new Int32Array(c + 1);
    for (let i = 0; i < nq; i++) at[home[i] + 1]++;
    for (let j = 0; j < c; j++) at[j + 1] += at[j];
    for (let i = 0; i < nq; i++) order[at[home[i]]++] = i;
  }
  const orderPtr = arena.alloc(nq * 4);
  arena.i32(orderPtr, nq).set(order);
  const u8Ptr = arena.alloc(nq * D);
  const projPtr = arena.alloc(nq * ke * 2);
  arena.exports.gather_rows(q.srcPtr, D, orderPtr, nq, u8Ptr);
  arena.exports.gather_rows(q.projPtr, ke * 2, orderPtr, nq, projPtr);
  const prepared: PreparedQueries = {
    n: nq,
    order,
    u8: arena.u8(u8Ptr, nq * D).slice(),
    proj: arena.i16(projPtr, nq * ke).slice(),
    projN: Int32Array.from(order, (i) => q.norms[i]),
    extN: Int32Array.from(order, (i) => q.extNorms[i]),
  };
  return { index, queries: prepared };
}

export class KernelSearch {
  private readonly arena: Arena;
  private readonly job: number;
  private readonly chunk: number;
  private readonly ptr: { qU8: number; qFull: number; qFullN: number; qProj: number; qProjN: number; qExtN: number; out: number };
  private readonly search: (job: number) => number;
  private readonly ke: number;
  /** Exact distances computed so far, and pairs that passed the first screen. */
  survivors = 0;
  screened = 0;

  constructor(index: PreparedIndex, maxChunk: number, probes: number, exhaustive: boolean) {
    const { params, slots } = index;
    const k = params.k;
    this.ke = k + EXT;
    this.chunk = Math.ceil(maxChunk / 4) * 4;
    const c = this.chunk;
    const baseBytes = slots * (k * 2 + 4 + D + 4 + EXT * 2 + 4 + 4) + index.centres.length * 2 + index.centreN.length * 8 + 64;
    const queryBytes = c * (D + D * 2 + 4 + this.ke * 2 + 4 + 4 + 8 + 16);
    this.arena = new Arena(baseBytes + queryBytes + 64 * 16 + JOB_SIZE);
    const a = this.arena;
    const put16 = (src: Int16Array): number => {
      const p = a.alloc(src.length * 2);
      a.i16(p, src.length).set(src);
      return p;
    };
    const put32 = (src: Int32Array): number => {
      const p = a.alloc(src.length * 4);
      a.i32(p, src.length).set(src);
      return p;
    };
    const baseIl = put16(index.baseIl);
    const baseProjN = put32(index.baseProjN);
    const baseU8 = a.alloc(index.baseU8.length);
    a.u8(baseU8, index.baseU8.length).set(index.baseU8);
    const baseFullN = put32(index.baseFullN);
    const baseExt = put16(index.baseExt);
    const baseExtN = put32(index.baseExtN);
    const baseIndex = put32(index.baseIndex);
    const centres = put16(index.centres);
    const centreN = put32(index.centreN);
    const clusterStart = put32(index.clusterStart);
    this.ptr = {
      qU8: a.alloc(c * D),
      qFull: a.alloc(c * D * 2),
      qFullN: a.alloc(c * 4),
      qProj: a.alloc(c * this.ke * 2),
      qProjN: a.alloc(c * 4),
      qExtN: a.alloc(c * 4),
      out: a.alloc(c * 16),
    };
    this.job = a.alloc(JOB_SIZE);
    const search = a.exports[`search_k${k}`];
    if (!search) throw new TiematchError('ERR_KERNEL', `kernel has no search for K = ${k}`);
    this.search = search;

    const job = new DataView(a.buffer, this.job, JOB_SIZE);
    const p = this.ptr;
    job.setUint32(0, baseIl, true);
    job.setUint32(4, baseProjN, true);
    job.setUint32(8, baseU8, true);
    job.setUint32(12, baseFullN, true);
    job.setInt32(16, index.n, true);
    job.setInt32(20, slots, true);
    job.setUint32(24, p.qProj, true);
    job.setUint32(28, p.qProjN, true);
    job.setUint32(32, p.qFull, true);
    job.setUint32(36, p.qFullN, true);
    job.setFloat64(48, params.scale, true);
    job.setFloat64(56, params.slack, true);
    job.setFloat64(64, params.alpha, true);
    job.setUint32(72, p.out, true);
    job.setUint32(80, baseExt, true);
    job.setUint32(84, baseExtN, true);
    job.setUint32(88, p.qExtN, true);
    job.setUint32(92, baseIndex, true);
    job.setUint32(96, centres, true);
    job.setFloat64(104, params.slack2, true);
    job.setUint32(116, centreN, true);
    job.setInt32(120, index.nClusters, true);
    job.setUint32(124, clusterStart, true);
    job.setInt32(128, Math.max(1, probes), true);
    job.setInt32(132, exhaustive ? 1 : 0, true);
  }

  /** Queries [start, start+count) of the prepared set: out[4i..4i+3] = d1, i1, d2, i2 (squared, u8 units). */
  searchChunk(q: PreparedQueries, start: number, count: number, out: Int32Array): void {
    if (count > this.chunk) throw new TiematchError('ERR_INVALID_ARG', `chunk of ${count} queries, at most ${this.chunk}`);
    const a = this.arena;
    const p = this.ptr;
    const padded = Math.ceil(count / 4) * 4;
    const ke = this.ke;
    // Pad a partial tile with copies of its last query (searched, not written).
    const fillRows = <T extends Int16Array | Int32Array | Uint8Array>(dst: T, src: T, width: number): void => {
      dst.set(src.subarray(start * width, (start + count) * width));
      for (let r = count; r < padded; r++) dst.set(src.subarray((start + count - 1) * width, (start + count) * width), r * width);
    };
    fillRows(a.u8(p.qU8, padded * D), q.u8, D);
    fillRows(a.i16(p.qProj, padded * ke), q.proj, ke);
    fillRows(a.i32(p.qProjN, padded), q.projN, 1);
    fillRows(a.i32(p.qExtN, padded), q.extN, 1);
    a.exports.widen(p.qU8, p.qFull, p.qFullN, padded);
    const job = new DataView(a.buffer, this.job, JOB_SIZE);
    job.setInt32(40, count, true);
    this.survivors += this.search(this.job);
    this.screened += job.getInt32(112, true);
    out.set(a.i32(p.out, count * 4));
  }
}
