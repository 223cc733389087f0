// Principal axes of the descriptors, used only to screen candidates: any orthonormal basis keeps
// the search exact (the bound holds for every one), a good one makes the screen sharp.
// Pure arithmetic: the sums and products come from a MomentSource (engine/moments.ts, in the kernel).
import { DESCRIPTOR_SIZE } from '../format/dat.js';

export interface Basis {
  /** K rows of 128, orthonormal, the leading principal axes first. */
  rows: Float64Array;
  k: number;
  mean: Float64Array;
  /** Bound on |a - mean| for every u8 descriptor a, not only the sampled ones: queries never seen
   *  when the index was built project within it. */
  radius: number;
}

/** What principalBasis needs of the points: their count, column sums, sampled second moments. */
export interface MomentSource {
  readonly count: number;
  columnSums(): Float64Array;
  /** Covariance (unnormalized) of every step-th point about mean. */
  moments(step: number, mean: Float64Array): Float64Array;
  timesRows(c: Float64Array, q: Float64Array, rows: number, out: Float64Array): void;
}

const D = DESCRIPTOR_SIZE;

/** Principal axes from a sample of about `sampleSize` points drawn evenly from the source. */
export function principalBasis(source: MomentSource, k: number, sampleSize = 4096): Basis {
  const mean = source.columnSums();
  for (let d = 0; d < D; d++) mean[d] /= source.count;
  const cov = source.moments(Math.max(1, Math.floor(source.count / sampleSize)), mean);
  let radius2 = 0;
  for (let d = 0; d < D; d++) radius2 += Math.max(mean[d], 255 - mean[d]) ** 2;
  return { rows: leadingAxes(k, D, (q, rows, out) => source.timesRows(cov, q, rows, out)), k, mean, radius: Math.sqrt(radius2) };
}

/** out = rows of q times a symmetric n x n matrix. */
export type TimesRows = (q: Float64Array, rows: number, out: Float64Array) => void;

/**
 * The k leading eigenvectors of a symmetric n x n matrix C (rows of the result), by subspace
 * iteration and a Rayleigh-Ritz step to order them: far cheaper than a full decomposition.
 */
export function leadingAxes(k: number, n: number, times: TimesRows, iterations = 40): Float64Array {
  const q = new Float64Array(k * n); // k rows
  for (let r = 0; r < k; r++) for (let i = 0; i < n; i++) q[r * n + i] = Math.sin(1 + r * 7.3 + i * 1.7 + r * i * 0.37);
  orthonormalize(q, k, n);
  const next = new Float64Array(k * n);
  for (let it = 0; it < iterations; it++) {
    times(q, k, next);
    q.set(next);
    orthonormalize(q, k, n);
  }
  // Rayleigh-Ritz: rotate within the subspace so the rows are eigenvectors, largest first.
  const cq = new Float64Array(k * n);
  times(q, k, cq);
  const small = new Float64Array(k * k);
  for (let a = 0; a < k; a++) for (let b = 0; b < k; b++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += q[a * n + i] * cq[b * n + i];
    small[a * k + b] = sum;
  }
  for (let a = 0; a < k; a++) for (let b = 0; b < a; b++) small[a * k + b] = small[b * k + a] = (small[a * k + b] + small[b * k + a]) / 2;
  const { values, vectors } = jacobiEigen(small, k);
  const order = Array.from(values.keys()).sort((i, j) => values[j] - values[i]);
  const out = new Float64Array(k * n);
  for (let r = 0; r < k; r++) {
    const col = order[r];
    for (let a = 0; a < k; a++) {
      const w = vectors[a * k + col];
      for (let i = 0; i < n; i++) out[r * n + i] += w * q[a * n + i];
    }
  }
  orthonormalize(out, k, n);
  return out;
}

/** Modified Gram-Schmidt on the rows, twice for orthonormality to rounding. */
function orthonormalize(q: Float64Array, k: number, n: number): void {
  for (let pass = 0; pass < 2; pass++) {
    for (let r = 0; r < k; r++) {
      for (let s = 0; s < r; s++) {
        let dot = 0;
        for (let i = 0; i < n; i++) dot += q[r * n + i] * q[s * n + i];
        for (let i = 0; i < n; i++) q[r * n + i] -= dot * q[s * n + i];
      }
      let norm = 0;
      for (let i = 0; i < n; i++) norm += q[r * n + i] * q[r * n + i];
      norm = Math.sqrt(norm);
      for (let i = 0; i < n; i++) q[r * n + i] /= norm;
    }
  }
}

/** Cyclic Jacobi for a symmetric n x n matrix: eigenvalues and eigenvectors (columns). */
export function jacobiEigen(input: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(input);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 50; sweep++) {
    let off = 0;
    let diag = 0;
    for (let p = 0; p < n; p++) {
      diag += a[p * n + p] * a[p * n + p];
      for (let q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
    }
    if (off <= 1e-22 * diag) break;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let r = 0; r < n; r++) {
          const arp = a[r * n + p];
          const arq = a[r * n + q];
          a[r * n + p] = c * arp - s * arq;
          a[r * n + q] = s * arp + c * arq;
        }
        for (let r = 0; r < n; r++) {
          const apr = a[p * n + r];
          const aqr = a[q * n + r];
          a[p * n + r] = c * apr - s * aqr;
          a[q * n + r] = s * apr + c * aqr;
        }
        for (let r = 0; r < n; r++) {
          const vrp = v[r * n + p];
          const vrq = v[r * n + q];
          v[r * n + p] = c * vrp - s * vrq;
          v[r * n + q] = s * vrp + c * vrq;
        }
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = a[i * n + i];
  return { values, vectors: v };
}
