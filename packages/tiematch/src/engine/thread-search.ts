// The per-thread search: a kernel instance holding its own copy of an index, answering chunks of
// prepared queries with their exact (or screened) 2 nearest neighbours.
import { TiematchError } from '../errors.js';
import { DESCRIPTOR_SIZE } from '../format/dat.js';
import { JOB_SIZE, readJob, writeJob } from './job.js';
import { EXT, SUPER_PROBES, type PreparedIndex, type PreparedQueries } from './layout.js';
import { Arena } from './wasm.js';

const D = DESCRIPTOR_SIZE;

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
    const baseBytes = slots * (k * 2 + 4 + D + 4 + EXT * 2 + 4 + 4) + index.centres.length * 2 + index.centreN.length * 8 + index.clusterRadius.length * 8 + (index.supers ? index.supers.centres.length * 2 + index.supers.centreN.length * 4 + index.supers.start.length * 4 : 0) + 64;
    const queryBytes = c * (D + D * 2 + 4 + this.ke * 2 + 4 + 4 + 8 + 16);
    this.arena = new Arena(baseBytes + queryBytes + 64 * 16 + JOB_SIZE);
    const a = this.arena;
    const base = {
      baseIl: a.put(index.baseIl),
      baseProjN: a.put(index.baseProjN),
      baseFull: a.put(index.baseU8),
      baseFullN: a.put(index.baseFullN),
      baseExt: a.put(index.baseExt),
      baseExtN: a.put(index.baseExtN),
      baseIndex: a.put(index.baseIndex),
      centres: a.put(index.centres),
      centreN: a.put(index.centreN),
      clusterStart: a.put(index.clusterStart),
      clusterRadius: a.put(index.clusterRadius),
      ...(index.supers ? { superCentres: a.put(index.supers.centres), superCentreN: a.put(index.supers.centreN), superStart: a.put(index.supers.start) } : {}),
    };
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
    const p = this.ptr;
    writeJob(this.view(), {
      ...base,
      n: index.n,
      nPadded: slots,
      qProj: p.qProj,
      qProjN: p.qProjN,
      qFull: p.qFull,
      qFullN: p.qFullN,
      scale: params.scale,
      slack: params.slack,
      alpha: params.alpha,
      out: p.out,
      qExtN: p.qExtN,
      slack2: params.slack2,
      nClusters: index.nClusters,
      probes: Math.max(1, probes),
      nSupers: index.supers?.count ?? 0,
      superProbes: SUPER_PROBES,
      exhaustive: exhaustive ? 1 : 0,
    });
  }

  private view(): DataView {
    return new DataView(this.arena.buffer, this.job, JOB_SIZE);
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
    const job = this.view();
    writeJob(job, { nq: count });
    this.survivors += this.search(this.job);
    this.screened += readJob(job, 'screened');
    out.set(a.i32(p.out, count * 4));
  }

  /**
   * With a ratio, the search need not find a query's true second nearest: only its nearest, and
   * whether the ratio test d1 < ratio^2 d2 holds (ratioTest in ann.ts). Points beyond d1 / ratio^2
   * cannot change either, so the screens stop there; d2 is then a real distance, at least the true
   * one, and the test's outcome is the exact search's. Undefined: the true d2 (and i2).
   */
  setRatio(ratio: number | undefined): void {
    const r = ratio === undefined ? 1 : Math.fround(ratio);
    writeJob(this.view(), { ratioBound: r > 0 && r * r < 1 ? 1 / (r * r) : 0 });
  }

  /** Bytes of kernel memory this search holds. */
  get bytes(): number {
    return this.arena.size;
  }

  /** Every query, in chunks of `chunk` as the threads of nearestTwo take them: out is nq x 4 in search order. */
  searchAll(q: PreparedQueries, chunk: number, out: Int32Array): void {
    for (let start = 0; start < q.n; start += chunk) {
      const count = Math.min(chunk, q.n - start);
      this.searchChunk(q, start, count, out.subarray(start * 4, (start + count) * 4));
    }
  }
}
