// tiematch kernel: exact 2-nearest-neighbour search of u8 descriptors.
// Freestanding WebAssembly (clang --target=wasm32 -msimd128 -nostdlib); JS owns the memory layout.
//
// Each base point is screened by a lower bound on its distance, computed on K quantized
// principal components in i16 (pmaddwd); only survivors get the exact integer distance on
// all 128 dimensions. The bound is conservative, so the result is the exact one.
#include <stdint.h>
#include <wasm_simd128.h>

#define DIM 128
#define WASM_EXPORT(name) __attribute__((export_name(#name)))

typedef struct {
  int32_t d1, i1, d2, i2;
} Best2;

static inline int32_t hsum(v128_t v) {
  return wasm_i32x4_extract_lane(v, 0) + wasm_i32x4_extract_lane(v, 1) + wasm_i32x4_extract_lane(v, 2) +
         wasm_i32x4_extract_lane(v, 3);
}

// Exact dot product of two 128-dim i16 vectors (u8 values widened: no overflow in i32).
static inline int32_t dot128(const int16_t *a, const int16_t *b) {
  v128_t s0 = wasm_i32x4_splat(0), s1 = wasm_i32x4_splat(0);
  for (int i = 0; i < DIM; i += 16) {
    s0 = wasm_i32x4_add(s0, wasm_i32x4_dot_i16x8(wasm_v128_load(a + i), wasm_v128_load(b + i)));
    s1 = wasm_i32x4_add(s1, wasm_i32x4_dot_i16x8(wasm_v128_load(a + i + 8), wasm_v128_load(b + i + 8)));
  }
  return hsum(wasm_i32x4_add(s0, s1));
}

// One u8 descriptor widened to i16.
static inline void widen_row(const uint8_t *s, int16_t *d) {
  for (int i = 0; i < DIM; i += 16) {
    v128_t v = wasm_v128_load(s + i);
    wasm_v128_store(d + i, wasm_u16x8_extend_low_u8x16(v));
    wasm_v128_store(d + i + 8, wasm_u16x8_extend_high_u8x16(v));
  }
}

// Column sums of u8 descriptors (f64, added to sums).
WASM_EXPORT(column_sums)
void column_sums(const uint8_t *src, int n, double *sums) {
  uint32_t acc[DIM];
  for (int i = 0; i < DIM; i++) acc[i] = 0;
  for (int p = 0; p < n; p++)
    for (int i = 0; i < DIM; i++) acc[i] += src[(long)p * DIM + i];
  for (int i = 0; i < DIM; i++) sums[i] += (double)acc[i];
}

// Raw second moments, exact in integers: S[a][b] += x_a x_b for b >= a rounded down to 8 (the
// caller mirrors the rest) and sums[a] += x_a, over every step-th row (at most 2^15 rows in all,
// so S fits i32). Returns the largest |x|^2 - x.meanQ / 128 over all rows: with meanQ = round(256 m),
// |x - m|^2 is that plus |m|^2, within 2 sum(x) / 512 <= 128 (the rounding of meanQ).
WASM_EXPORT(moments)
double moments(const uint8_t *src, int n, int step, const int16_t *meanQ, int32_t *S, int32_t *sums) {
  int16_t x[DIM];
  double worst = -1e300;
  for (int p = 0; p < n; p++) {
    widen_row(src + (long)p * DIM, x);
    double r = (double)dot128(x, x) - (double)dot128(x, meanQ) / 128.0;
    if (r > worst) worst = r;
    if (p % step) continue;
    for (int i = 0; i < DIM; i++) {
      sums[i] += x[i];
      if (!x[i]) continue; // SIFT descriptors are sparse
      v128_t xi = wasm_i16x8_splat(x[i]);
      int32_t *row = S + i * DIM;
      for (int j = i & ~7; j < DIM; j += 8) {
        v128_t xj = wasm_v128_load(x + j);
        wasm_v128_store(row + j, wasm_i32x4_add(wasm_v128_load(row + j), wasm_i32x4_extmul_low_i16x8(xi, xj)));
        wasm_v128_store(row + j + 4, wasm_i32x4_add(wasm_v128_load(row + j + 4), wasm_i32x4_extmul_high_i16x8(xi, xj)));
      }
    }
  }
  return worst;
}

// out[r n + i] = sum_j C[i n + j] Q[r n + j]: C (n x n, symmetric) times k rows of Q, in f64.
WASM_EXPORT(times_rows)
void times_rows(const double *C, const double *Q, int n, int k, double *out) {
  for (int r = 0; r < k; r++) {
    const double *q = Q + (long)r * n;
    for (int i = 0; i < n; i++) {
      const double *c = C + (long)i * n;
      v128_t a0 = wasm_f64x2_splat(0.0), a1 = a0;
      for (int j = 0; j < n; j += 4) {
        a0 = wasm_f64x2_add(a0, wasm_f64x2_mul(wasm_v128_load(c + j), wasm_v128_load(q + j)));
        a1 = wasm_f64x2_add(a1, wasm_f64x2_mul(wasm_v128_load(c + j + 2), wasm_v128_load(q + j + 2)));
      }
      v128_t a = wasm_f64x2_add(a0, a1);
      out[(long)r * n + i] = wasm_f64x2_extract_lane(a, 0) + wasm_f64x2_extract_lane(a, 1);
    }
  }
}

// dst row s = src row index[s] (zeros where index[s] < 0); rows are `width` bytes, a multiple of 16.
WASM_EXPORT(gather_rows)
void gather_rows(const uint8_t *src, int width, const int32_t *index, int count, uint8_t *dst) {
  for (int s = 0; s < count; s++) {
    uint8_t *d = dst + (long)s * width;
    const int32_t i = index[s];
    if (i < 0) {
      for (int b = 0; b < width; b += 16) wasm_v128_store(d + b, wasm_i32x4_splat(0));
    } else {
      const uint8_t *r = src + (long)i * width;
      for (int b = 0; b < width; b += 16) wasm_v128_store(d + b, wasm_v128_load(r + b));
    }
  }
}

// Widen u8 descriptors to i16 and return their squared norms.
WASM_EXPORT(widen)
void widen(const uint8_t *src, int16_t *dst, int32_t *norms, int n) {
  for (int p = 0; p < n; p++) {
    int16_t *d = dst + (long)p * DIM;
    widen_row(src + (long)p * DIM, d);
    norms[p] = dot128(d, d);
  }
}

// y = round(factor (Q a - Qmean)) for the K + E rows of Q (the basis in fixed point, i16, row-major
// (K+E) x 128; Q a is exact in i32), with |y[0:K]|^2 and |y[K:K+E]|^2. out: K + E i16 per point.
// Four rows at a time share the loads of a; K and E are multiples of 4.
WASM_EXPORT(project)
void project(const uint8_t *src, int n, const int16_t *Q, const double *qMean, int K, int E, double factor,
             int16_t *out, int32_t *norms, int32_t *extNorms) {
  const int KE = K + E;
  int16_t a[DIM];
  for (int p = 0; p < n; p++) {
    widen_row(src + (long)p * DIM, a);
    v128_t norm = wasm_i32x4_splat(0), ext = norm;
    const v128_t f = wasm_f64x2_splat(factor);
    for (int k = 0; k < KE; k += 4) {
      const int16_t *r0 = Q + (long)k * DIM, *r1 = r0 + DIM, *r2 = r1 + DIM, *r3 = r2 + DIM;
      v128_t s0 = wasm_i32x4_splat(0), s1 = s0, s2 = s0, s3 = s0;
      for (int i = 0; i < DIM; i += 8) {
        v128_t x = wasm_v128_load(a + i);
        s0 = wasm_i32x4_add(s0, wasm_i32x4_dot_i16x8(wasm_v128_load(r0 + i), x));
        s1 = wasm_i32x4_add(s1, wasm_i32x4_dot_i16x8(wasm_v128_load(r1 + i), x));
        s2 = wasm_i32x4_add(s2, wasm_i32x4_dot_i16x8(wasm_v128_load(r2 + i), x));
        s3 = wasm_i32x4_add(s3, wasm_i32x4_dot_i16x8(wasm_v128_load(r3 + i), x));
      }
      // Transpose-add: dots = [sum s0, sum s1, sum s2, sum s3].
      v128_t t01 = wasm_i32x4_add(wasm_i32x4_shuffle(s0, s1, 0, 4, 1, 5), wasm_i32x4_shuffle(s0, s1, 2, 6, 3, 7));
      v128_t t23 = wasm_i32x4_add(wasm_i32x4_shuffle(s2, s3, 0, 4, 1, 5), wasm_i32x4_shuffle(s2, s3, 2, 6, 3, 7));
      v128_t dots = wasm_i32x4_add(wasm_i32x4_shuffle(t01, t23, 0, 1, 4, 5), wasm_i32x4_shuffle(t01, t23, 2, 3, 6, 7));
      v128_t lo = wasm_f64x2_convert_low_i32x4(dots);
      v128_t hi = wasm_f64x2_convert_low_i32x4(wasm_i32x4_shuffle(dots, dots, 2, 3, 0, 1));
      lo = wasm_f64x2_nearest(wasm_f64x2_mul(wasm_f64x2_sub(lo, wasm_v128_load(qMean + k)), f));
      hi = wasm_f64x2_nearest(wasm_f64x2_mul(wasm_f64x2_sub(hi, wasm_v128_load(qMean + k + 2)), f));
      v128_t y = wasm_i32x4_shuffle(wasm_i32x4_trunc_sat_f64x2_zero(lo), wasm_i32x4_trunc_sat_f64x2_zero(hi), 0, 1, 4, 5);
      wasm_v128_store64_lane(out + (long)p * KE + k, wasm_i16x8_narrow_i32x4(y, y), 0);
      if (k < K) norm = wasm_i32x4_add(norm, wasm_i32x4_mul(y, y));
      else ext = wasm_i32x4_add(ext, wasm_i32x4_mul(y, y));
    }
    norms[p] = hsum(norm);
    extNorms[p] = hsum(ext);
  }
}

// Squared norms of u8 descriptors.
WASM_EXPORT(sq_norms)
void sq_norms(const uint8_t *src, int n, int32_t *norms) {
  int16_t x[DIM];
  for (int p = 0; p < n; p++) {
    widen_row(src + (long)p * DIM, x);
    norms[p] = dot128(x, x);
  }
}

// Packs y[2p], y[2p+1] into one i32 per pair, to splat against interleaved pairs.
static inline void pack_pairs(const int16_t *y, int K, int32_t *pairs) {
  for (int p = 0; p < K / 2; p++) pairs[p] = (int32_t)(uint16_t)y[2 * p] | ((int32_t)y[2 * p + 1] << 16);
}

// out[j] = |c_j|^2 - 2 y.c_j for every centre (a padded count, multiple of 4), centres interleaved
// as interleave() lays out points. Same order as |y - c_j|^2.
static inline __attribute__((always_inline)) void centre_distances(const int32_t *pairs, const int K,
                                                                    const int16_t *centresIl, const int32_t *centreN,
                                                                    int cPadded, int32_t *out) {
  const int P2 = K / 2;
  v128_t sp[16];
  for (int p = 0; p < P2; p++) sp[p] = wasm_i32x4_splat(pairs[p]);
  for (int blk = 0; blk < cPadded / 4; blk++) {
    const v128_t *b = (const v128_t *)(centresIl + (long)blk * P2 * 8);
    v128_t a = wasm_i32x4_splat(0);
#pragma clang loop unroll(full)
    for (int p = 0; p < P2; p++) a = wasm_i32x4_add(a, wasm_i32x4_dot_i16x8(wasm_v128_load(b + p), sp[p]));
    wasm_v128_store(out + blk * 4, wasm_i32x4_sub(wasm_v128_load(centreN + blk * 4), wasm_i32x4_shl(a, 1)));
  }
}

// Clusters (and super-clusters) an index may have: MAX_CLUSTERS in layout.ts. The scratch arrays
// sized by it are static (the stack is 64 KiB).
#define MAX_CLUSTERS 65536

static int32_t assignDist[MAX_CLUSTERS];

static inline __attribute__((always_inline)) void assign_k(const int16_t *proj, int n, int stride, const int K,
                                                            const int16_t *centresIl, const int32_t *centreN,
                                                            int cPadded, int32_t *out) {
  int32_t pairs[16], *dist = assignDist;
  for (int p = 0; p < n; p++) {
    pack_pairs(proj + (long)p * stride, K, pairs);
    centre_distances(pairs, K, centresIl, centreN, cPadded, dist);
    v128_t best = wasm_i32x4_splat(INT32_MAX), bestAt = wasm_i32x4_splat(0), at = wasm_i32x4_make(0, 1, 2, 3);
    const v128_t four = wasm_i32x4_splat(4);
    for (int j = 0; j < cPadded; j += 4) {
      v128_t d = wasm_v128_load(dist + j), lower = wasm_i32x4_lt(d, best);
      best = wasm_v128_bitselect(d, best, lower);
      bestAt = wasm_v128_bitselect(at, bestAt, lower);
      at = wasm_i32x4_add(at, four);
    }
    int32_t bd[4], bj[4];
    wasm_v128_store(bd, best);
    wasm_v128_store(bj, bestAt);
    int win = 0;
    for (int l = 1; l < 4; l++)
      if (bd[l] < bd[win] || (bd[l] == bd[win] && bj[l] < bj[win])) win = l;
    out[p] = bj[win];
  }
}

// out[p] = the centre nearest to point p on its first K projections (ties: lowest index).
// Points are `stride` i16 apart; centres interleaved, cPadded of them (padding: huge norms).
WASM_EXPORT(assign)
void assign(const int16_t *proj, int n, int stride, int K, const int16_t *centresIl, const int32_t *centreN, int cPadded,
            int32_t *out) {
  switch (K) {
    case 8: assign_k(proj, n, stride, 8, centresIl, centreN, cPadded, out); break;
    case 16: assign_k(proj, n, stride, 16, centresIl, centreN, cPadded, out); break;
    case 24: assign_k(proj, n, stride, 24, centresIl, centreN, cPadded, out); break;
    default: assign_k(proj, n, stride, 32, centresIl, centreN, cPadded, out); break;
  }
}

// Threshold on a quantized squared distance above which a point is certainly farther than d2:
// |y_a - y_b| <= scale*sqrt(D) + sqrt(dims)*(rounding); `slack` carries the rounding term, `alpha`
// (1 for exact) shrinks the bound in approximate mode.
static inline int32_t threshold(int32_t d2, double scale, double slack, double alpha) {
  if (d2 == INT32_MAX) return INT32_MAX;
  double r = scale * __builtin_sqrt((double)d2) * (1.0 + 1e-9) + slack;
  double t = alpha * r * r + 1.0;
  return t >= 2147483647.0 ? INT32_MAX : (int32_t)t;
}

// Keeps the two smallest (distance, original index) pairs: ties go to the lower index whatever
// the scan order.
static inline void consider(Best2 *b, int32_t d, int32_t j) {
  if (j == b->i1 || j == b->i2) return;
  if (d < b->d1 || (d == b->d1 && j < b->i1)) {
    b->d2 = b->d1;
    b->i2 = b->i1;
    b->d1 = d;
    b->i1 = j;
  } else if (d < b->d2 || (d == b->d2 && j < b->i2)) {
    b->d2 = d;
    b->i2 = j;
  }
}

// Base projections, interleaved for pmaddwd with lanes = points: for each block of 4 points and
// each dimension pair p, 8 i16: pt0[2p], pt0[2p+1], pt1[2p], pt1[2p+1], ...
// The extension dims [K, K+E) go row-major to ext. Source rows have K + E entries.
WASM_EXPORT(interleave)
void interleave(const int16_t *proj, int n, int K, int E, int nPadded, int16_t *out, int16_t *ext) {
  const int KE = K + E;
  for (int blk = 0; blk < nPadded / 4; blk++)
    for (int p = 0; p < K / 2; p++)
      for (int l = 0; l < 4; l++) {
        int j = blk * 4 + l;
        int16_t *o = out + ((long)blk * (K / 2) + p) * 8 + l * 2;
        o[0] = j < n ? proj[(long)j * KE + 2 * p] : 0;
        o[1] = j < n ? proj[(long)j * KE + 2 * p + 1] : 0;
      }
  for (int j = 0; j < nPadded; j++)
    for (int e = 0; e < E; e++) ext[(long)j * E + e] = j < n ? proj[(long)j * KE + K + e] : 0;
}

#define EXT 16

typedef struct {
  const int16_t *baseIl;     // interleaved first-K projections, nPadded slots
  const int32_t *baseProjN;  // |y[0:K]|^2 per slot (padding: huge)
  const uint8_t *baseFull;   // nPadded x 128 u8
  const int32_t *baseFullN;  // per slot
  int32_t n, nPadded;        // n: real points (for the caller); slots may hold padding
  const int16_t *qProj;      // nq x (K + EXT) i16
  const int32_t *qProjN;
  const int16_t *qFull;      // nq x 128 i16
  const int32_t *qFullN;
  int32_t nq;
  double scale, slack, alpha;
  Best2 *out;                // nq
  int32_t survivors;         // out: exact distances computed
  const int16_t *baseExt;    // projections [K, K+EXT) of nPadded slots, interleaved as baseIl
  const int32_t *baseExtN;
  const int32_t *qExtN;
  const int32_t *baseIndex;  // slot -> original index (-1: padding)
  const int16_t *centres;    // the clusters' centres on the first K projections, interleaved, padded to 4
  double slack2;             // rounding term for K + EXT dims
  int32_t screened;          // out: pairs that passed the first screen
  const int32_t *centreN;    // |centre|^2 (padding: huge)
  int32_t nClusters;
  const int32_t *clusterStart; // nClusters + 1 slot bounds, multiples of 8
  int32_t probes;            // clusters nearest each query, scanned first
  int32_t exhaustive;        // 1: then every other cluster (exact); 0: only those (approximate)
  double ratioBound;         // > 1: 1 / ratio^2 of the ratio test; else 0
  const double *clusterRadius; // nClusters: max |y_b - centre| over the cluster's points (first K)
  // Two levels (large sets, approx): the clusters are grouped in super-clusters, each a run of
  // cluster ids (a multiple of 4; padding clusters are empty, their centres never nearest). A query
  // looks for its nearest clusters in its superProbes nearest super-clusters only. 0: one level.
  int32_t nSupers;
  const int16_t *superCentres; // interleaved, padded to 4
  const int32_t *superCentreN;
  const int32_t *superStart;   // nSupers + 1 cluster-id bounds
  int32_t superProbes;
} Job;

// The layout JS writes is JOB_OFFSETS (src/engine/job.ts); the build turns that table into
// job_layout.h, a _Static_assert on each field's offset and size and on sizeof(Job).
#include "job_layout.h"

#define MAX_PROBES 64

#define TILE_Q 4

static inline int32_t dot128_u8(const int16_t *q, const uint8_t *b) {
  v128_t s0 = wasm_i32x4_splat(0), s1 = wasm_i32x4_splat(0);
  for (int i = 0; i < DIM; i += 16) {
    v128_t v = wasm_v128_load(b + i);
    s0 = wasm_i32x4_add(s0, wasm_i32x4_dot_i16x8(wasm_v128_load(q + i), wasm_u16x8_extend_low_u8x16(v)));
    s1 = wasm_i32x4_add(s1, wasm_i32x4_dot_i16x8(wasm_v128_load(q + i + 8), wasm_u16x8_extend_high_u8x16(v)));
  }
  return hsum(wasm_i32x4_add(s0, s1));
}

typedef struct {
  Best2 best[TILE_Q];
  v128_t hv[TILE_Q];     // first screen: survive when |y_b|^2 - 2 y_q.y_b <= hv
  int32_t h2[TILE_Q];    // second screen on K + EXT dims, same form
  int32_t qpairs[TILE_Q][16];
  int32_t hr[TILE_Q];    // the first screen's bound on |y_q - y_b|^2 (hv + |y_q|^2)
  int32_t qext[TILE_Q][EXT / 2]; // projections [K, K+EXT), packed as qpairs
  int32_t q[TILE_Q];     // each lane's query: a tile's are q0 .. q0 + 3, a cluster's group any
  int32_t survivors, screened;
} TileState;

// The distance beyond which no point can change a query's outcome. Its nearest (d1) and whether
// d1 < r^2 d2 (the ratio test) depend only on points within d1 / r^2 of it: when ratioBound
// (1 / r^2) is set, the bound is the smaller of d2 and that (never below d1).
static inline int32_t reach(const Job *job, const Best2 *b) {
  if (job->ratioBound <= 1.0 || b->d1 == INT32_MAX) return b->d2;
  double r = (double)b->d1 * job->ratioBound * (1.0 + 1e-9) + 1.0;
  return r < (double)b->d2 ? (int32_t)r : b->d2;
}

static inline void retighten(Job *job, TileState *st, int t, int q) {
  const int32_t d2 = reach(job, &st->best[t]);
  int32_t h = threshold(d2, job->scale, job->slack, job->alpha);
  int32_t h2 = threshold(d2, job->scale, job->slack2, job->alpha);
  int32_t n1 = job->qProjN[q], n2 = n1 + job->qExtN[q];
  st->hv[t] = wasm_i32x4_splat(h == INT32_MAX ? h : h - n1);
  st->hr[t] = h;
  st->h2[t] = h2 == INT32_MAX ? h2 : h2 - n2;
}

// The slow path: a lane passed the first screen. Second screen on EXT more dims, then exact.
static __attribute__((noinline)) void survivors_of(Job *job, TileState *st, int K, int slot0, v128_t v0, v128_t v1,
                                                   int t, uint32_t mask) {
  const int q = st->q[t];
  const int32_t d2before = st->best[t].d2, d1before = st->best[t].d1;
  // Second screen, the 8 lanes at once: add the EXT dims' share (interleaved as the first K).
  const v128_t *e0 = (const v128_t *)(job->baseExt + (long)(slot0 / 4) * (EXT / 2) * 8), *e1 = e0 + EXT / 2;
  v128_t s0 = wasm_i32x4_splat(0), s1 = s0;
#pragma clang loop unroll(full)
  for (int p = 0; p < EXT / 2; p++) {
    const v128_t sp = wasm_i32x4_splat(st->qext[t][p]);
    s0 = wasm_i32x4_add(s0, wasm_i32x4_dot_i16x8(wasm_v128_load(e0 + p), sp));
    s1 = wasm_i32x4_add(s1, wasm_i32x4_dot_i16x8(wasm_v128_load(e1 + p), sp));
  }
  v0 = wasm_i32x4_sub(wasm_i32x4_add(v0, wasm_v128_load(job->baseExtN + slot0)), wasm_i32x4_shl(s0, 1));
  v1 = wasm_i32x4_sub(wasm_i32x4_add(v1, wasm_v128_load(job->baseExtN + slot0 + 4)), wasm_i32x4_shl(s1, 1));
  const v128_t h = wasm_i32x4_splat(st->h2[t]);
  const v128_t zero = wasm_i32x4_splat(0);
  const uint32_t real = wasm_i32x4_bitmask(wasm_i32x4_ge(wasm_v128_load(job->baseIndex + slot0), zero)) |
                        (wasm_i32x4_bitmask(wasm_i32x4_ge(wasm_v128_load(job->baseIndex + slot0 + 4), zero)) << 4);
  mask &= real;
  st->screened += __builtin_popcount(mask);
  mask &= wasm_i32x4_bitmask(wasm_i32x4_le(v0, h)) | (wasm_i32x4_bitmask(wasm_i32x4_le(v1, h)) << 4);
  while (mask) {
    int l = __builtin_ctz(mask);
    mask &= mask - 1;
    const int slot = slot0 + l;
    const int32_t orig = job->baseIndex[slot];
    st->survivors++;
    int32_t d = job->qFullN[q] + job->baseFullN[slot] - 2 * dot128_u8(job->qFull + (long)q * DIM, job->baseFull + (long)slot * DIM);
    consider(&st->best[t], d, orig);
  }
  if (st->best[t].d2 != d2before || st->best[t].d1 != d1before) retighten(job, st, t, q);
}

static inline __attribute__((always_inline)) void scan(Job *job, TileState *st, int fromSlot, int toSlot, const int K) {
  const int P2 = K / 2;
  // The queries' pairs splatted once (survivors_of does not change them; the compiler cannot know).
  v128_t sq[TILE_Q][16];
  for (int t = 0; t < TILE_Q; t++)
    for (int p = 0; p < P2; p++) sq[t][p] = wasm_i32x4_splat(st->qpairs[t][p]);
  for (int slot = fromSlot; slot < toSlot; slot += 8) {
    const int blk = slot / 4;
    const v128_t *b0 = (const v128_t *)(job->baseIl + (long)blk * P2 * 8);
    const v128_t *b1 = b0 + P2;
    v128_t a00 = wasm_i32x4_splat(0), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
#pragma clang loop unroll(full)
    for (int p = 0; p < P2; p++) {
      v128_t x0 = wasm_v128_load(b0 + p), x1 = wasm_v128_load(b1 + p);
      v128_t s;
      s = sq[0][p];
      a00 = wasm_i32x4_add(a00, wasm_i32x4_dot_i16x8(x0, s));
      a01 = wasm_i32x4_add(a01, wasm_i32x4_dot_i16x8(x1, s));
      s = sq[1][p];
      a10 = wasm_i32x4_add(a10, wasm_i32x4_dot_i16x8(x0, s));
      a11 = wasm_i32x4_add(a11, wasm_i32x4_dot_i16x8(x1, s));
      s = sq[2][p];
      a20 = wasm_i32x4_add(a20, wasm_i32x4_dot_i16x8(x0, s));
      a21 = wasm_i32x4_add(a21, wasm_i32x4_dot_i16x8(x1, s));
      s = sq[3][p];
      a30 = wasm_i32x4_add(a30, wasm_i32x4_dot_i16x8(x0, s));
      a31 = wasm_i32x4_add(a31, wasm_i32x4_dot_i16x8(x1, s));
    }
    const v128_t n0 = wasm_v128_load(job->baseProjN + slot), n1 = wasm_v128_load(job->baseProjN + slot + 4);
    v128_t v00 = wasm_i32x4_sub(n0, wasm_i32x4_shl(a00, 1)), v01 = wasm_i32x4_sub(n1, wasm_i32x4_shl(a01, 1));
    v128_t v10 = wasm_i32x4_sub(n0, wasm_i32x4_shl(a10, 1)), v11 = wasm_i32x4_sub(n1, wasm_i32x4_shl(a11, 1));
    v128_t v20 = wasm_i32x4_sub(n0, wasm_i32x4_shl(a20, 1)), v21 = wasm_i32x4_sub(n1, wasm_i32x4_shl(a21, 1));
    v128_t v30 = wasm_i32x4_sub(n0, wasm_i32x4_shl(a30, 1)), v31 = wasm_i32x4_sub(n1, wasm_i32x4_shl(a31, 1));
    v128_t m00 = wasm_i32x4_le(v00, st->hv[0]), m01 = wasm_i32x4_le(v01, st->hv[0]);
    v128_t m10 = wasm_i32x4_le(v10, st->hv[1]), m11 = wasm_i32x4_le(v11, st->hv[1]);
    v128_t m20 = wasm_i32x4_le(v20, st->hv[2]), m21 = wasm_i32x4_le(v21, st->hv[2]);
    v128_t m30 = wasm_i32x4_le(v30, st->hv[3]), m31 = wasm_i32x4_le(v31, st->hv[3]);
    v128_t any = wasm_v128_or(wasm_v128_or(wasm_v128_or(m00, m01), wasm_v128_or(m10, m11)),
                              wasm_v128_or(wasm_v128_or(m20, m21), wasm_v128_or(m30, m31)));
    if (__builtin_expect(!wasm_v128_any_true(any), 1)) continue;
    uint32_t k0 = wasm_i32x4_bitmask(m00) | (wasm_i32x4_bitmask(m01) << 4);
    uint32_t k1 = wasm_i32x4_bitmask(m10) | (wasm_i32x4_bitmask(m11) << 4);
    uint32_t k2 = wasm_i32x4_bitmask(m20) | (wasm_i32x4_bitmask(m21) << 4);
    uint32_t k3 = wasm_i32x4_bitmask(m30) | (wasm_i32x4_bitmask(m31) << 4);
    if (k0) survivors_of(job, st, K, slot, v00, v01, 0, k0);
    if (k1) survivors_of(job, st, K, slot, v10, v11, 1, k1);
    if (k2) survivors_of(job, st, K, slot, v20, v21, 2, k2);
    if (k3) survivors_of(job, st, K, slot, v30, v31, 3, k3);
  }
}

// centre_distances for centre j alone: |c_j|^2 - 2 y.c_j.
static inline int32_t centre_distance(const int32_t *pairs, const int K, const int16_t *centresIl, const int32_t *centreN,
                                      int j) {
  const int16_t *c = centresIl + (long)(j >> 2) * K * 4 + (j & 3) * 2;
  int32_t dot = 0;
  for (int p = 0; p < K / 2; p++) dot += (int16_t)(pairs[p] & 0xffff) * c[p * 8] + (int16_t)(pairs[p] >> 16) * c[p * 8 + 1];
  return centreN[j] - 2 * dot;
}

static uint8_t planned[MAX_CLUSTERS];
static int32_t tileDists[TILE_Q][MAX_CLUSTERS];
static int32_t tileOrder[MAX_CLUSTERS];
static int32_t superDist[MAX_CLUSTERS];

// Keeps the P smallest (d, j) seen, sorted, in nearD/nearJ (m of them so far).
static inline void keep_nearest(int32_t *nearD, int32_t *nearJ, int *m, int P, int32_t d, int32_t j) {
  if (*m == P && d >= nearD[P - 1]) return;
  int at = *m < P ? (*m)++ : P - 1;
  while (at > 0 && nearD[at - 1] > d) {
    nearD[at] = nearD[at - 1];
    nearJ[at] = nearJ[at - 1];
    at--;
  }
  nearD[at] = d;
  nearJ[at] = j;
}

static int32_t candJ[MAX_CLUSTERS + 4];
// For each 4-bit lane mask, the byte shuffle that moves the masked i32 lanes to the front, in order.
static uint8_t packLanes[16][16];
static int packLanesMade = 0;
static void make_pack_lanes(void) {
  for (int m = 0; m < 16; m++) {
    int o = 0;
    for (int l = 0; l < 4; l++)
      if (m >> l & 1) {
        for (int b = 0; b < 4; b++) packLanes[m][o * 4 + b] = (uint8_t)(l * 4 + b);
        o++;
      }
    for (; o < 4; o++)
      for (int b = 0; b < 4; b++) packLanes[m][o * 4 + b] = 0x80;
  }
  packLanesMade = 1;
}
// The last query's P-th nearest centre as a true squared distance (|y|^2 added back); < 0: none.
static double guessTrue = -1;
// How far past the last query's P-th nearest the guess for the next reaches, then a wider second
// guess: about 31 centres offered a query, and 1 query in 120 offers them all.
#define GUESS_REACH 1.3
#define GUESS_REACH_AGAIN 2.0

// The P smallest (d, j) of dist[0, c) (padded to 4 with INT32_MAX), sorted, as keep_nearest over
// every j in turn gives them. Only the d within a guess (from the previous query: neighbours in the
// search order are alike) are offered: when at least P are, the P smallest are among them, offered
// in the same order, so the result is the same; else a wider guess, then every d.
static inline int nearest_clusters(const int32_t *dist, int c, int P, int32_t qn, int32_t *nearD, int32_t *nearJ) {
  int m = 0;
  for (int attempt = 0; attempt < 2 && guessTrue >= 0 && m < P; attempt++) {
    const double gd = guessTrue * (attempt ? GUESS_REACH_AGAIN : GUESS_REACH) - (double)qn;
    const int32_t g = gd >= 2147483646.0 ? 2147483646 : gd <= -2147483647.0 ? -2147483647 : (int32_t)gd;
    const v128_t gv = wasm_i32x4_splat(g), four = wasm_i32x4_splat(4);
    v128_t at = wasm_i32x4_make(0, 1, 2, 3);
    int n = 0;
    // Branch-free: each block's lanes within the guess, packed to the front by a byte shuffle.
    for (int j = 0; j < c; j += 4) {
      const uint32_t mask = wasm_i32x4_bitmask(wasm_i32x4_le(wasm_v128_load(dist + j), gv));
      wasm_v128_store(candJ + n, wasm_i8x16_swizzle(at, wasm_v128_load(packLanes[mask])));
      n += __builtin_popcount(mask);
      at = wasm_i32x4_add(at, four);
    }
    if (n >= P)
      for (int i = 0; i < n; i++)
        if (candJ[i] < c) keep_nearest(nearD, nearJ, &m, P, dist[candJ[i]], candJ[i]);
  }
  if (m < P) {
    m = 0;
    for (int j = 0; j < c; j++) keep_nearest(nearD, nearJ, &m, P, dist[j], j);
  }
  if (m == P) guessTrue = (double)nearD[P - 1] + (double)qn;
  return m;
}

// The clusters a tile scans, in order; returns how many. Each query's `probes` nearest centres
// (distance on the first K projections), then, when exhaustive, all the others. With two levels
// (approx), the nearest are sought in each query's superProbes nearest super-clusters.
// pairs: each query's first K projections, packed (pack_pairs); dists: each query's centre
// distances (centre_distances; with two levels, of the clusters it looked at), kept for beyond().
static inline __attribute__((always_inline)) int plan_tile(Job *job, int q0, const int32_t pairs[TILE_Q][16], const int K,
                                                            int32_t *order, int32_t dists[TILE_Q][MAX_CLUSTERS]) {
  const int c = job->nClusters, P = job->probes < c ? job->probes : c;
  int count = 0;
  const int cPadded = (c + 3) & ~3;
  const int twoLevel = job->nSupers > 0 && !job->exhaustive;
  for (int t = 0; t < TILE_Q; t++) {
    int32_t *dist = dists[t];
    int32_t nearD[MAX_PROBES], nearJ[MAX_PROBES];
    int m = 0;
    if (twoLevel) {
      const int S = job->nSupers, PS = job->superProbes < S ? job->superProbes : S;
      int32_t supD[MAX_PROBES], supJ[MAX_PROBES];
      int ms = 0;
      centre_distances(pairs[t], K, job->superCentres, job->superCentreN, (S + 3) & ~3, superDist);
      for (int s = 0; s < S; s++) keep_nearest(supD, supJ, &ms, PS, superDist[s], s);
      for (int i = 0; i < ms; i++) {
        const int from = job->superStart[supJ[i]], to = job->superStart[supJ[i] + 1];
        centre_distances(pairs[t], K, job->centres + (long)from * K, job->centreN + from, to - from, dist + from);
        for (int j = from; j < to; j++) keep_nearest(nearD, nearJ, &m, P, dist[j], j);
      }
    } else {
      centre_distances(pairs[t], K, job->centres, job->centreN, cPadded, dist);
      m = nearest_clusters(dist, c, P, job->qProjN[q0 + t], nearD, nearJ);
    }
    for (int i = 0; i < m; i++)
      if (!planned[nearJ[i]]) {
        planned[nearJ[i]] = 1;
        order[count++] = nearJ[i];
      }
  }
  if (twoLevel)
    // A query measured only the clusters of its own nearest super-clusters: beyond() needs each
    // query's distance to every cluster the tile scans, not one left from another tile.
    for (int t = 0; t < TILE_Q; t++)
      for (int i = 0; i < count; i++) dists[t][order[i]] = centre_distance(pairs[t], K, job->centres, job->centreN, order[i]);
  const int probed = count;
  if (job->exhaustive)
    for (int j = 0; j < c; j++)
      if (!planned[j]) order[count++] = j;
  for (int i = 0; i < probed; i++) planned[order[i]] = 0;
  return count;
}

// Whether scanning cluster j would pass none of its pairs with the tile's real queries: every
// point of it lies within the cluster's radius R of its centre c, so |y_q - y_b| >= |y_q - c| - R,
// and a pair whose bound exceeds its query's screen cannot pass. The scan would then change
// nothing, so skipping it leaves the result as it was, in either mode. (Padding rows repeat the
// tile's last query and are not written.)
static inline int beyond(const Job *job, const TileState *st, int q0, int real, const int32_t dists[TILE_Q][MAX_CLUSTERS],
                         int j) {
  const double R = job->clusterRadius[j] * (1.0 + 1e-9) + 1e-6;
  for (int t = 0; t < real; t++) {
    double d2 = (double)dists[t][j] + (double)job->qProjN[q0 + t];
    double lb = __builtin_sqrt(d2 > 0 ? d2 : 0) - R;
    if (lb <= 0 || lb * lb <= (double)st->hr[t]) return 0;
  }
  return 1;
}

// Lane t of a tile takes query q: its projections, packed for the screens.
static inline __attribute__((always_inline)) void lane_query(const Job *job, TileState *st, int t, int q, const int K) {
  const int KE = K + EXT;
  st->q[t] = q;
  pack_pairs(job->qProj + (long)q * KE, K, st->qpairs[t]);
  pack_pairs(job->qProj + (long)q * KE + K, EXT, st->qext[t]);
}

// A tile of queries q0 .. q0 + 3, nothing found yet.
static inline void tile_start(const Job *job, TileState *st, int q0, const int K) {
  st->survivors = st->screened = 0;
  for (int t = 0; t < TILE_Q; t++) {
    lane_query(job, st, t, q0 + t, K);
    st->best[t].d1 = st->best[t].d2 = INT32_MAX;
    st->best[t].i1 = st->best[t].i2 = INT32_MAX;
    st->hv[t] = wasm_i32x4_splat(INT32_MAX);
    st->h2[t] = INT32_MAX;
    st->hr[t] = INT32_MAX;
  }
}

static inline void write_best(Job *job, int q, Best2 b) {
  if (b.i1 == INT32_MAX) b.i1 = -1;
  if (b.i2 == INT32_MAX) b.i2 = -1;
  job->out[q] = b;
}

static inline __attribute__((always_inline)) void search_tile(Job *job, int q0, const int K) {
  TileState st;
  tile_start(job, &st, q0, K);
  // Each query's nearest clusters first (a tight bound early prunes the rest), the first query's
  // in order of distance; then, in exact mode, every other cluster.
  int32_t *order = tileOrder;
  int32_t(*dists)[MAX_CLUSTERS] = tileDists;
  const int count = plan_tile(job, q0, (const int32_t(*)[16])st.qpairs, K, order, dists);
  const int real = job->nq - q0 < TILE_Q ? job->nq - q0 : TILE_Q;
  for (int i = 0; i < count; i++)
    if (!beyond(job, &st, q0, real, (const int32_t(*)[MAX_CLUSTERS])dists, order[i]))
      scan(job, &st, job->clusterStart[order[i]], job->clusterStart[order[i] + 1], K);
  for (int t = 0; t < TILE_Q; t++)
    if (q0 + t < job->nq) write_best(job, q0 + t, st.best[t]);
  job->survivors += st.survivors;
  job->screened += st.screened;
}

// Approx mode, one level of clusters: every query scans its P nearest clusters and, in tiles of 4,
// scanning clusters another query asked for costs as much as its own (4 queries' probes make a
// union of about 28 clusters for 16 each). So a run of queries is searched cluster by cluster:
// - first, tiles of 4 queries (in search order, so mostly of one nearest cluster) scan their
//   nearest clusters, for a tight bound early;
// - then each other cluster the run asked for is scanned once, with the queries that asked for it,
//   4 at a time (each query's state kept between), clusters in order of the best rank any query
//   gave them.
// A query's result depends on its run (which clusters its tile shares first, and the order): runs
// are the kernel's chunks, cut the same way however the chunks are shared out.
#define RUN_Q 256

// What a query found so far, and its screens' bounds, kept between the groups it is scanned in
// (its projections are packed again from qProj).
typedef struct {
  Best2 best;
  v128_t hv;
  int32_t h2, hr;
} Lane;

static Lane lanes[RUN_Q];
static int32_t probeJ[RUN_Q][MAX_PROBES];
static int32_t probeM[RUN_Q];
static int32_t firstScanned[RUN_Q][TILE_Q]; // what the query's tile scanned first (-1: nothing)
static int32_t runCount[MAX_CLUSTERS], runStart[MAX_CLUSTERS];
static int32_t runQueries[RUN_Q * MAX_PROBES], runClusters[RUN_Q * MAX_PROBES];

static inline void lane_save(const TileState *st, int t, Lane *l) {
  l->best = st->best[t];
  l->hv = st->hv[t];
  l->h2 = st->h2[t];
  l->hr = st->hr[t];
}

static inline __attribute__((always_inline)) void lane_load(const Job *job, TileState *st, int t, const Lane *l, int q,
                                                             const int K) {
  lane_query(job, st, t, q, K);
  st->best[t] = l->best;
  st->hv[t] = l->hv;
  st->h2[t] = l->h2;
  st->hr[t] = l->hr;
}

// Whether query r of the run still has cluster j to scan (its tile did not scan it first).
static inline int left_to_scan(int r, int j) {
  for (int i = 0; i < TILE_Q; i++)
    if (firstScanned[r][i] == j) return 0;
  return 1;
}

static inline __attribute__((always_inline)) void search_run(Job *job, int from, int n, const int K) {
  const int c = job->nClusters, P = job->probes < c ? job->probes : c;
  int32_t survivors = 0, screened = 0;
  for (int r0 = 0; r0 < n; r0 += TILE_Q) {
    TileState st;
    tile_start(job, &st, from + r0, K);
    int first[TILE_Q], nFirst = 0;
    for (int t = 0; t < TILE_Q; t++) {
      int32_t nearD[MAX_PROBES];
      centre_distances(st.qpairs[t], K, job->centres, job->centreN, (c + 3) & ~3, tileDists[0]);
      probeM[r0 + t] = nearest_clusters(tileDists[0], c, P, job->qProjN[from + r0 + t], nearD, probeJ[r0 + t]);
      const int h = probeJ[r0 + t][0];
      int seen = 0;
      for (int i = 0; i < nFirst; i++) seen |= first[i] == h;
      if (!seen) first[nFirst++] = h;
    }
    for (int i = 0; i < nFirst; i++) scan(job, &st, job->clusterStart[first[i]], job->clusterStart[first[i] + 1], K);
    for (int t = 0; t < TILE_Q && r0 + t < n; t++) {
      lane_save(&st, t, &lanes[r0 + t]);
      for (int i = 0; i < TILE_Q; i++) firstScanned[r0 + t][i] = i < nFirst ? first[i] : -1;
    }
    survivors += st.survivors;
    screened += st.screened;
  }
  // Each cluster's queries, clusters in order of their best rank.
  int nClusters = 0;
  for (int rank = 1; rank < P; rank++)
    for (int r = 0; r < n; r++)
      if (rank < probeM[r] && left_to_scan(r, probeJ[r][rank]) && runCount[probeJ[r][rank]]++ == 0)
        runClusters[nClusters++] = probeJ[r][rank];
  for (int i = 0, at = 0; i < nClusters; i++) {
    runStart[runClusters[i]] = at;
    at += runCount[runClusters[i]];
    runCount[runClusters[i]] = 0;
  }
  for (int r = 0; r < n; r++)
    for (int rank = 1; rank < probeM[r]; rank++) {
      const int j = probeJ[r][rank];
      if (left_to_scan(r, j)) runQueries[runStart[j] + runCount[j]++] = r;
    }
  for (int i = 0; i < nClusters; i++) {
    const int j = runClusters[i], count = runCount[j];
    const int32_t *rs = runQueries + runStart[j];
    runCount[j] = 0;
    for (int g = 0; g < count; g += TILE_Q) {
      // A group of fewer than 4 repeats its last query; only the real lanes are kept.
      const int real = count - g < TILE_Q ? count - g : TILE_Q;
      TileState st;
      st.survivors = st.screened = 0;
      for (int t = 0; t < TILE_Q; t++) {
        const int r = rs[g + (t < real ? t : real - 1)];
        lane_load(job, &st, t, &lanes[r], from + r, K);
      }
      scan(job, &st, job->clusterStart[j], job->clusterStart[j + 1], K);
      for (int t = 0; t < real; t++) lane_save(&st, t, &lanes[rs[g + t]]);
      survivors += st.survivors;
      screened += st.screened;
    }
  }
  for (int r = 0; r < n; r++) write_best(job, from + r, lanes[r].best);
  job->survivors += survivors;
  job->screened += screened;
}

// Queries must be padded to a multiple of TILE_Q (extra rows are searched and not written);
// cluster bounds and nPadded are multiples of 8 slots.
#define DEFINE_SEARCH(KK)                                                           \
  WASM_EXPORT(search_k##KK) int32_t search_k##KK(Job *job) {                        \
    job->survivors = 0;                                                             \
    job->screened = 0;                                                              \
    guessTrue = -1;                                                                 \
    if (!packLanesMade) make_pack_lanes();                                          \
    if (!job->exhaustive && job->nSupers == 0)                                      \
      for (int f = 0; f < job->nq; f += RUN_Q)                                      \
        search_run(job, f, job->nq - f < RUN_Q ? job->nq - f : RUN_Q, KK);          \
    else                                                                            \
      for (int q0 = 0; q0 < job->nq; q0 += TILE_Q) search_tile(job, q0, KK);       \
    return job->survivors;                                                          \
  }
DEFINE_SEARCH(8)
DEFINE_SEARCH(16)
DEFINE_SEARCH(24)
DEFINE_SEARCH(32)
