// The PCA's sums and products, in the kernel: one image's descriptors in an arena, as the
// MomentSource that principalBasis reads.
import { TiematchError } from '../errors.js';
import { DESCRIPTOR_SIZE } from '../format/dat.js';
import type { MomentSource } from './pca.js';
import { Arena } from './wasm.js';

const D = DESCRIPTOR_SIZE;
/** Most basis rows: the largest K + EXT. */
export const MAX_ROWS = 48;

export class KernelMoments implements MomentSource {
  readonly count: number;
  private readonly arena: Arena;
  private readonly ptr: number;
  constructor(arena: Arena, ptr: number, count: number) {
    this.arena = arena;
    this.ptr = ptr;
    this.count = count;
  }
  /** out = rows of q times the symmetric 128 x 128 matrix c. */
  timesRows(c: Float64Array, q: Float64Array, rows: number, out: Float64Array): void {
    if (rows > MAX_ROWS) throw new TiematchError('ERR_INVALID_ARG', `${rows} rows: at most ${MAX_ROWS}`);
    const a = this.arena;
    const mark = a.put(c);
    const rowsPtr = a.put(q.subarray(0, rows * D));
    const product = a.alloc(rows * D * 8);
    a.exports.times_rows(mark, rowsPtr, D, rows, product);
    out.set(a.f64(product, rows * D));
    a.release(mark);
  }
  columnSums(): Float64Array {
    const a = this.arena;
    const sums = a.put(new Float64Array(D));
    a.exports.column_sums(this.ptr, this.count, sums);
    const v = a.f64(sums, D).slice();
    a.release(sums);
    return v;
  }
  /** Second moments of every step-th row (at most 2^15 rows: S is exact in i32) about `mean`. */
  moments(step: number, mean: Float64Array): Float64Array {
    const a = this.arena;
    const count = Math.ceil(this.count / step);
    if (count > 1 << 15) throw new TiematchError('ERR_INVALID_ARG', `moments of ${count} rows: at most 32768`);
    const meanQ = a.put(Int16Array.from(mean, (m) => Math.round(m * 256)));
    const S = a.put(new Int32Array(D * D));
    const sums = a.put(new Int32Array(D));
    a.exports.moments(this.ptr, this.count, step, meanQ, S, sums);
    const s = a.i32(S, D * D);
    const sum = a.i32(sums, D);
    const cov = new Float64Array(D * D);
    for (let i = 0; i < D; i++)
      for (let j = i; j < D; j++) {
        const v = s[i * D + j] - mean[i] * sum[j] - sum[i] * mean[j] + count * mean[i] * mean[j];
        cov[i * D + j] = cov[j * D + i] = v;
      }
    a.release(meanQ);
    return cov;
  }
}
