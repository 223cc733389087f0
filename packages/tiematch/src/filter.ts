// MICMAC's neighbour filter (AnnSearcher.cpp, neighbourFilter), applied twice after the ratio test:
// a match is kept when more than half of the 9 neighbour slots of its point in image 1 (its 8
// nearest matched points, plus one slot left at 0 when the point is among its own 9 nearest) are
// also slots of its partner in image 2. Neighbours are exact, ties ordered by index.
const SLOTS = 9;
/** Points per grid cell, on average (2, 3 and 4 measured within 10% on real matches; 2 best). */
const PER_CELL = 2;

/**
 * The points in a uniform grid, stored cell after cell (so a row of cells is one run), for the k
 * nearest of each point by exact search in growing square rings of cells.
 */
class PlaneGrid {
  readonly side: number;
  readonly minX: number;
  readonly minY: number;
  readonly cw: number;
  readonly ch: number;
  /** Cell c holds sorted positions start[c] .. start[c + 1] - 1. */
  readonly start: Int32Array;
  readonly xs: Float64Array;
  readonly ys: Float64Array;
  readonly ids: Int32Array;
  /** Margin taken off every distance bound: a point's cell comes from a rounded division. */
  readonly slack: number;

  constructor(x: Float64Array, y: Float64Array) {
    const n = x.length;
    let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
    for (let i = 0; i < n; i++) {
      const a = x[i], b = y[i];
      if (a < minX) minX = a;
      if (a > maxX) maxX = a;
      if (b < minY) minY = b;
      if (b > maxY) maxY = b;
    }
    const side = Math.max(1, Math.ceil(Math.sqrt(n / PER_CELL)));
    this.side = side;
    this.minX = minX;
    this.minY = minY;
    this.cw = (maxX - minX) / side || 1;
    this.ch = (maxY - minY) / side || 1;
    this.slack = 1e-6 * (this.cw + this.ch);
    const cells = side * side;
    const cell = new Int32Array(n);
    const start = new Int32Array(cells + 1);
    for (let i = 0; i < n; i++) start[(cell[i] = this.row(y[i]) * side + this.column(x[i])) + 1]++;
    for (let c = 0; c < cells; c++) start[c + 1] += start[c];
    const fill = start.slice(0, cells);
    this.xs = new Float64Array(n);
    this.ys = new Float64Array(n);
    this.ids = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const at = fill[cell[i]]++;
      this.xs[at] = x[i];
      this.ys[at] = y[i];
      this.ids[at] = i;
    }
    this.start = start;
  }

  column(v: number): number {
    return Math.min(this.side - 1, Math.max(0, Math.floor((v - this.minX) / this.cw)));
  }

  row(v: number): number {
    return Math.min(this.side - 1, Math.max(0, Math.floor((v - this.minY) / this.ch)));
  }
}

/** The k nearest found so far for one query, ordered by (distance, index). */
class Nearest {
  readonly d: Float64Array;
  readonly i: Int32Array;
  found = 0;
  constructor(readonly k: number) {
    this.d = new Float64Array(k);
    this.i = new Int32Array(k);
  }

  /** Offers the points at sorted positions [from, to) of the grid. */
  scan(g: PlaneGrid, from: number, to: number, qx: number, qy: number): void {
    const xs = g.xs, ys = g.ys, ids = g.ids, bestD = this.d, bestI = this.i, k = this.k;
    let found = this.found;
    let worst = found === k ? bestD[k - 1] : Infinity;
    for (let m = from; m < to; m++) {
      const dx = qx - xs[m];
      const dy = qy - ys[m];
      const d = dx * dx + dy * dy;
      if (d > worst) continue;
      const j = ids[m];
      if (d === worst && j > bestI[k - 1]) continue;
      let p = found < k ? found++ : k - 1;
      while (p > 0 && (bestD[p - 1] > d || (bestD[p - 1] === d && bestI[p - 1] > j))) {
        bestD[p] = bestD[p - 1];
        bestI[p] = bestI[p - 1];
        p--;
      }
      bestD[p] = d;
      bestI[p] = j;
      if (found === k) worst = bestD[k - 1];
    }
    this.found = found;
  }

  /** Offers the cells of columns [gx0, gx1] of row gy (clipped to the grid). */
  scanRow(g: PlaneGrid, gy: number, gx0: number, gx1: number, qx: number, qy: number): void {
    if (gy < 0 || gy >= g.side) return;
    const a = Math.max(0, gx0), b = Math.min(g.side - 1, gx1);
    if (a <= b) this.scan(g, g.start[gy * g.side + a], g.start[gy * g.side + b + 1], qx, qy);
  }

  /**
   * Whether no point outside the square of cells within r of (gx, gy) can enter: each lies beyond
   * one of the square's sides (a side at the grid's edge has none beyond it).
   */
  complete(g: PlaneGrid, gx: number, gy: number, r: number, qx: number, qy: number): boolean {
    if (this.found < this.k) return false;
    let reach = Infinity;
    if (gx - r > 0) reach = Math.min(reach, qx - (g.minX + (gx - r) * g.cw));
    if (gx + r < g.side - 1) reach = Math.min(reach, g.minX + (gx + r + 1) * g.cw - qx);
    if (gy - r > 0) reach = Math.min(reach, qy - (g.minY + (gy - r) * g.ch));
    if (gy + r < g.side - 1) reach = Math.min(reach, g.minY + (gy + r + 1) * g.ch - qy);
    if (reach === Infinity) return true;
    reach -= g.slack;
    return reach > 0 && this.d[this.k - 1] < reach * reach;
  }
}

/**
 * Indices (into the given points) of each point's k nearest by 2-D distance, ordered by (distance,
 * index): n x k, -1 where there are fewer. With `only`, just the flagged points' rows are filled.
 */
function nearestInPlane(x: Float64Array, y: Float64Array, k: number, only?: Uint8Array): Int32Array {
  const n = x.length;
  const out = new Int32Array(n * k).fill(-1);
  if (n === 0 || k === 0) return out;
  const g = new PlaneGrid(x, y);
  const best = new Nearest(k);
  const side = g.side;
  // Queries cell by cell: the 3 x 3 block around a cell is three runs of the sorted points.
  for (let gy = 0; gy < side; gy++)
    for (let gx = 0; gx < side; gx++) {
      const c = gy * side + gx;
      for (let m = g.start[c]; m < g.start[c + 1]; m++) {
        const q = g.ids[m];
        if (only && !only[q]) continue;
        const qx = g.xs[m], qy = g.ys[m];
        best.found = 0;
        // The point's own cell first: the bound tightens early.
        best.scan(g, g.start[c], g.start[c + 1], qx, qy);
        for (let r = 1; r <= side; r++) {
          if (r === 1) {
            best.scanRow(g, gy - 1, gx - 1, gx + 1, qx, qy);
            best.scanRow(g, gy, gx - 1, gx - 1, qx, qy);
            best.scanRow(g, gy, gx + 1, gx + 1, qx, qy);
            best.scanRow(g, gy + 1, gx - 1, gx + 1, qx, qy);
          } else {
            best.scanRow(g, gy - r, gx - r, gx + r, qx, qy);
            best.scanRow(g, gy + r, gx - r, gx + r, qx, qy);
            for (let row = gy - r + 1; row <= gy + r - 1; row++) {
              best.scanRow(g, row, gx - r, gx - r, qx, qy);
              best.scanRow(g, row, gx + r, gx + r, qx, qy);
            }
          }
          if (best.complete(g, gx, gy, r, qx, qy)) break;
        }
        for (let s = 0; s < best.found; s++) out[q * k + s] = best.i[s];
      }
    }
  return out;
}

/**
 * The k nearest within the points `kept` (ascending indices) of a set whose k nearest were `near`,
 * renumbered among the kept. A point whose k nearest all stay has them still, in the same order
 * (a subset's nearest are the set's where those remain); the others are searched again.
 */
function nearestAmongKept(near: Int32Array, k: number, kept: Int32Array, x: Float64Array, y: Float64Array): Int32Array {
  const renumber = new Int32Array(x.length).fill(-1);
  for (let t = 0; t < kept.length; t++) renumber[kept[t]] = t;
  const m = kept.length;
  const out = new Int32Array(m * k);
  const again = new Uint8Array(m);
  let anyAgain = false;
  for (let t = 0; t < m; t++) {
    const p = kept[t];
    for (let r = 0; r < k; r++) {
      const j = near[p * k + r];
      const now = j >= 0 ? renumber[j] : -1;
      if (now < 0) {
        again[t] = 1;
        anyAgain = true;
        break;
      }
      out[t * k + r] = now;
    }
  }
  if (anyAgain) {
    const searched = nearestInPlane(pick(x, kept), pick(y, kept), k, again);
    for (let t = 0; t < m; t++) if (again[t]) out.set(searched.subarray(t * k, (t + 1) * k), t * k);
  }
  return out;
}

/** MICMAC's 9 slots per point from its k nearest (itself among them): the others, unused slots 0. */
function slotsOf(near: Int32Array, n: number, k: number): Int32Array {
  const slots = new Int32Array(n * SLOTS);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let r = 0; r < k; r++) {
      const j = near[i * k + r];
      if (j !== i && j >= 0) slots[i * SLOTS + s++] = j;
    }
  }
  return slots;
}

/** The matches (indices) whose slots in image 1 (a) and image 2 (b) share more than ratio x 9. */
function agreeing(a: Int32Array, b: Int32Array, n: number, ratio: number): Int32Array {
  const needed = ratio * SLOTS;
  const kept = new Int32Array(n);
  let count = 0;
  for (let i = 0; i < n; i++) {
    let common = 0;
    for (let s = 0; s < SLOTS; s++) {
      const v = a[i * SLOTS + s];
      for (let t = 0; t < SLOTS; t++) {
        if (b[i * SLOTS + t] === v) {
          common++;
          break;
        }
      }
    }
    if (common > needed) kept[count++] = i;
  }
  return kept.slice(0, count);
}

/** One pass of the filter over matched pairs (x1,y1 in image 1; x2,y2 in image 2): kept indices. */
export function neighbourFilterPass(x1: Float64Array, y1: Float64Array, x2: Float64Array, y2: Float64Array, ratio = 0.5): Int32Array {
  const n = x1.length;
  const k = Math.min(SLOTS, n);
  return agreeing(slotsOf(nearestInPlane(x1, y1, k), n, k), slotsOf(nearestInPlane(x2, y2, k), n, k), n, ratio);
}

/** values[idx[0]], values[idx[1]], ... */
function pick(values: Float64Array, idx: Int32Array): Float64Array {
  const out = new Float64Array(idx.length);
  for (let i = 0; i < idx.length; i++) out[i] = values[idx[i]];
  return out;
}

/**
 * MICMAC's filter: two passes, the second over what the first kept. Returns kept indices. The
 * second pass searches again only the points that lost one of their nearest in the first.
 */
export function neighbourFilter(x1: Float64Array, y1: Float64Array, x2: Float64Array, y2: Float64Array): Int32Array {
  const n = x1.length;
  if (n === 0) return new Int32Array(0);
  const k = Math.min(SLOTS, n);
  const near1 = nearestInPlane(x1, y1, k);
  const near2 = nearestInPlane(x2, y2, k);
  const first = agreeing(slotsOf(near1, n, k), slotsOf(near2, n, k), n, 0.5);
  const m = first.length;
  if (m === 0) return first;
  let second: Int32Array;
  if (Math.min(SLOTS, m) !== k) second = neighbourFilterPass(pick(x1, first), pick(y1, first), pick(x2, first), pick(y2, first));
  else second = agreeing(slotsOf(nearestAmongKept(near1, k, first, x1, y1), m, k), slotsOf(nearestAmongKept(near2, k, first, x2, y2), m, k), m, 0.5);
  const out = new Int32Array(second.length);
  for (let i = 0; i < second.length; i++) out[i] = first[second[i]];
  return out;
}
