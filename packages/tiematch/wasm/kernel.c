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

// Column sums of u8 descriptors (f64, added to sums).
WASM_EXPORT(column_sums)
void column_sums(const uint8_t *src, int n, double *sums) {
  uint32_t acc[DIM];
  for (int i = 0; i < DIM; i++) acc[i] = 0;
  for (int p = 0; p < n; p++)
    for (int i = 0; i < DIM; i++) acc[i] += src[(long)p * DIM + i];
  for (int i = 0; i < DIM; i++) sums[i] += (double)acc[i];
}

// Adds the outer products of every step-th centred row to cov (128 x 128 f64); returns the largest
// squared norm of a centred row over all rows.
WASM_EXPORT(moments)
double moments(const uint8_t *src, int n, int step, const double *mean, double *cov) {
  double c[DIM];
  double radius2 = 0;
  for (int p = 0; p < n; p++) {
    const uint8_t *s = src + (long)p * DIM;
    double r = 0;
    for (int i = 0; i < DIM; i++) {
      c[i] = (double)s[i] - mean[i];
      r += c[i] * c[i];
    }
    if (r > radius2) radius2 = r;
    if (p % step) continue;
    for (int a = 0; a < DIM; a++) {
      v128_t ca = wasm_f64x2_splat(c[a]);
      double *row = cov + a * DIM;
      for (int b = 0; b < DIM; b += 2)
        wasm_v128_store(row + b, wasm_f64x2_add(wasm_v128_load(row + b), wasm_f64x2_mul(ca, wasm_v128_load(c + b))));
    }
  }
  return radius2;
}

// Widen u8 descriptors to i16 and return their squared norms.
WASM_EXPORT(widen)
void widen(const uint8_t *src, int16_t *dst, int32_t *norms, int n) {
  for (int p = 0; p < n; p++) {
    const uint8_t *s = src + (long)p * DIM;
    int16_t *d = dst + (long)p * DIM;
    for (int i = 0; i < DIM; i += 16) {
      v128_t v = wasm_v128_load(s + i);
      wasm_v128_store(d + i, wasm_u16x8_extend_low_u8x16(v));
      wasm_v128_store(d + i + 8, wasm_u16x8_extend_high_u8x16(v));
    }
    norms[p] = dot128(d, d);
  }
}

// y = round(scale * P (a - mean)) for the K + E rows of P (f64, row-major (K+E) x 128), with
// |y[0:K]|^2 and |y[K:K+E]|^2. out: K + E i16 per point, contiguous.
WASM_EXPORT(project)
void project(const uint8_t *src, int n, const double *P, const double *mean, int K, int E, double scale, int16_t *out,
             int32_t *norms, int32_t *extNorms) {
  double centered[DIM];
  const int KE = K + E;
  for (int p = 0; p < n; p++) {
    const uint8_t *s = src + (long)p * DIM;
    for (int i = 0; i < DIM; i++) centered[i] = (double)s[i] - mean[i];
    int32_t norm = 0, ext = 0;
    for (int k = 0; k < KE; k++) {
      const double *row = P + (long)k * DIM;
      v128_t acc = wasm_f64x2_splat(0.0);
      for (int i = 0; i < DIM; i += 2)
        acc = wasm_f64x2_add(acc, wasm_f64x2_mul(wasm_v128_load(row + i), wasm_v128_load(centered + i)));
      double v = (wasm_f64x2_extract_lane(acc, 0) + wasm_f64x2_extract_lane(acc, 1)) * scale;
      int32_t q = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
      out[(long)p * KE + k] = (int16_t)q;
      if (k < K) norm += q * q;
      else ext += q * q;
    }
    norms[p] = norm;
    extNorms[p] = ext;
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
  const int16_t *baseExt;    // nPadded x EXT i16: projections [K, K+EXT)
  const int32_t *baseExtN;
  const int32_t *qExtN;
  const int32_t *baseIndex;  // slot -> original index (-1: padding)
  const int32_t *qHome;      // per query: first and end slot of the cluster to scan first
  double slack2;             // rounding term for K + EXT dims
  int32_t screened;          // out: pairs that passed the first screen
} Job;

#define TILE_Q 4

static inline int32_t ext_dot(const int16_t *a, const int16_t *b) {
  v128_t s = wasm_i32x4_add(wasm_i32x4_dot_i16x8(wasm_v128_load(a), wasm_v128_load(b)),
                            wasm_i32x4_dot_i16x8(wasm_v128_load(a + 8), wasm_v128_load(b + 8)));
  return hsum(s);
}

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
  int32_t survivors, screened;
} TileState;

static inline void retighten(Job *job, TileState *st, int t, int q) {
  int32_t h = threshold(st->best[t].d2, job->scale, job->slack, job->alpha);
  int32_t h2 = threshold(st->best[t].d2, job->scale, job->slack2, job->alpha);
  int32_t n1 = job->qProjN[q], n2 = n1 + job->qExtN[q];
  st->hv[t] = wasm_i32x4_splat(h == INT32_MAX ? h : h - n1);
  st->h2[t] = h2 == INT32_MAX ? h2 : h2 - n2;
}

// The slow path: a lane passed the first screen. Second screen on EXT more dims, then exact.
static __attribute__((noinline)) void survivors_of(Job *job, TileState *st, int K, int q0, int slot0, v128_t v0,
                                                   v128_t v1, int t, uint32_t mask) {
  const int q = q0 + t;
  const int KE = K + EXT;
  const int16_t *qext = job->qProj + (long)q * KE + K;
  const int32_t d2before = st->best[t].d2;
  int32_t lanes[8];
  wasm_v128_store(lanes, v0);
  wasm_v128_store(lanes + 4, v1);
  while (mask) {
    int l = __builtin_ctz(mask);
    mask &= mask - 1;
    int slot = slot0 + l;
    int32_t orig = job->baseIndex[slot];
    if (orig < 0) continue;
    st->screened++;
    // lanes[l] = |y_b|^2 - 2 y_q.y_b on K dims; add the EXT dims' share.
    int32_t v = lanes[l] + job->baseExtN[slot] - 2 * ext_dot(qext, job->baseExt + (long)slot * EXT);
    if (v > st->h2[t]) continue;
    st->survivors++;
    int32_t d = job->qFullN[q] + job->baseFullN[slot] - 2 * dot128_u8(job->qFull + (long)q * DIM, job->baseFull + (long)slot * DIM);
    consider(&st->best[t], d, orig);
  }
  if (st->best[t].d2 != d2before) retighten(job, st, t, q);
}

static inline __attribute__((always_inline)) void scan(Job *job, TileState *st, int q0, int fromSlot, int toSlot,
                                                        const int K) {
  const int P2 = K / 2;
  for (int slot = fromSlot; slot < toSlot; slot += 8) {
    const int blk = slot / 4;
    const v128_t *b0 = (const v128_t *)(job->baseIl + (long)blk * P2 * 8);
    const v128_t *b1 = b0 + P2;
    v128_t a00 = wasm_i32x4_splat(0), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
#pragma clang loop unroll(full)
    for (int p = 0; p < P2; p++) {
      v128_t x0 = wasm_v128_load(b0 + p), x1 = wasm_v128_load(b1 + p);
      v128_t s;
      s = wasm_i32x4_splat(st->qpairs[0][p]);
      a00 = wasm_i32x4_add(a00, wasm_i32x4_dot_i16x8(x0, s));
      a01 = wasm_i32x4_add(a01, wasm_i32x4_dot_i16x8(x1, s));
      s = wasm_i32x4_splat(st->qpairs[1][p]);
      a10 = wasm_i32x4_add(a10, wasm_i32x4_dot_i16x8(x0, s));
      a11 = wasm_i32x4_add(a11, wasm_i32x4_dot_i16x8(x1, s));
      s = wasm_i32x4_splat(st->qpairs[2][p]);
      a20 = wasm_i32x4_add(a20, wasm_i32x4_dot_i16x8(x0, s));
      a21 = wasm_i32x4_add(a21, wasm_i32x4_dot_i16x8(x1, s));
      s = wasm_i32x4_splat(st->qpairs[3][p]);
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
    if (k0) survivors_of(job, st, K, q0, slot, v00, v01, 0, k0);
    if (k1) survivors_of(job, st, K, q0, slot, v10, v11, 1, k1);
    if (k2) survivors_of(job, st, K, q0, slot, v20, v21, 2, k2);
    if (k3) survivors_of(job, st, K, q0, slot, v30, v31, 3, k3);
  }
}

static inline __attribute__((always_inline)) void search_tile(Job *job, int q0, const int K) {
  const int P2 = K / 2;
  const int KE = K + EXT;
  TileState st;
  st.survivors = st.screened = 0;
  for (int t = 0; t < TILE_Q; t++) {
    st.best[t].d1 = st.best[t].d2 = INT32_MAX;
    st.best[t].i1 = st.best[t].i2 = INT32_MAX;
    const int16_t *qp = job->qProj + (long)(q0 + t) * KE;
    for (int p = 0; p < P2; p++) st.qpairs[t][p] = (int32_t)(uint16_t)qp[2 * p] | ((int32_t)qp[2 * p + 1] << 16);
    st.hv[t] = wasm_i32x4_splat(INT32_MAX);
    st.h2[t] = INT32_MAX;
  }
  // The cluster nearest the tile's first query first: a tight bound early prunes the rest.
  const int homeFrom = job->qHome[2 * q0], homeTo = job->qHome[2 * q0 + 1];
  scan(job, &st, q0, homeFrom, homeTo, K);
  scan(job, &st, q0, 0, homeFrom, K);
  scan(job, &st, q0, homeTo, job->nPadded, K);
  for (int t = 0; t < TILE_Q; t++)
    if (q0 + t < job->nq) {
      Best2 b = st.best[t];
      if (b.i1 == INT32_MAX) b.i1 = -1;
      if (b.i2 == INT32_MAX) b.i2 = -1;
      job->out[q0 + t] = b;
    }
  job->survivors += st.survivors;
  job->screened += st.screened;
}

// Queries must be padded to a multiple of TILE_Q (extra rows are searched and not written);
// cluster bounds and nPadded are multiples of 8 slots.
#define DEFINE_SEARCH(KK)                                                           \
  WASM_EXPORT(search_k##KK) int32_t search_k##KK(Job *job) {                        \
    job->survivors = 0;                                                             \
    job->screened = 0;                                                              \
    for (int q0 = 0; q0 < job->nq; q0 += TILE_Q) search_tile(job, q0, KK);         \
    return job->survivors;                                                          \
  }
DEFINE_SEARCH(8)
DEFINE_SEARCH(16)
DEFINE_SEARCH(24)
DEFINE_SEARCH(32)
