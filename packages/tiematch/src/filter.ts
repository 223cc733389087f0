// MICMAC's neighbour filter (AnnSearcher.cpp, neighbourFilter), applied twice after the ratio test:
// a match is kept when more than half of the 9 neighbour slots of its point in image 1 (its 8
// nearest matched points, plus one slot left at 0 when the point is among its own 9 nearest) are
// also slots of its partner in image 2. Neighbours are exact, ties ordered by index.
const SLOTS = 9;

/** Indices (into the given points) of the k nearest by 2-D distance, ordered by (distance, index). */
function nearestInPlane(x: Float64Array, y: Float64Array, k: number): Int32Array {
  const n = x.length;
  const out = new Int32Array(n * k).fill(-1);
  // A uniform grid with about 2 points per cell; rings are searched until the k-th is certain.
  let minX = Infinity, maxX = -Infinity, minY = Infinity, maxY = -Infinity;
  for (let i = 0; i < n; i++) {
    minX = Math.min(minX, x[i]);
    maxX = Math.max(maxX, x[i]);
    minY = Math.min(minY, y[i]);
    maxY = Math.max(maxY, y[i]);
  }
  const side = Math.max(1, Math.ceil(Math.sqrt(n / 2)));
  const cw = (maxX - minX) / side || 1;
  const ch = (maxY - minY) / side || 1;
  const cellOf = (v: number, lo: number, w: number): number => Math.min(side - 1, Math.max(0, Math.floor((v - lo) / w)));
  const counts = new Int32Array(side * side + 1);
  const cell = new Int32Array(n);
  for (let i = 0; i < n; i++) counts[(cell[i] = cellOf(y[i], minY, ch) * side + cellOf(x[i], minX, cw)) + 1]++;
  for (let c = 0; c < side * side; c++) counts[c + 1] += counts[c];
  const members = new Int32Array(n);
  const fill = counts.slice(0, side * side);
  for (let i = 0; i < n; i++) members[fill[cell[i]]++] = i;

  const bestD = new Float64Array(k);
  const bestI = new Int32Array(k);
  for (let q = 0; q < n; q++) {
    let found = 0;
    const qx = x[q];
    const qy = y[q];
    const cx = cellOf(qx, minX, cw);
    const cy = cellOf(qy, minY, ch);
    for (let ring = 0; ring <= side; ring++) {
      // Every point outside rings 0..ring-1 is at least (ring-1) cells away in x or y.
      if (found === k && ring > 0) {
        const reach = (ring - 1) * Math.min(cw, ch);
        if (reach * reach > bestD[k - 1]) break;
      }
      for (let gy = cy - ring; gy <= cy + ring; gy++) {
        if (gy < 0 || gy >= side) continue;
        const edge = gy === cy - ring || gy === cy + ring;
        for (let gx = cx - ring; gx <= cx + ring; gx += edge ? 1 : 2 * ring) {
          if (gx >= 0 && gx < side) {
            const c = gy * side + gx;
            for (let m = counts[c]; m < counts[c + 1]; m++) {
              const j = members[m];
              const dx = qx - x[j];
              const dy = qy - y[j];
              const d = dx * dx + dy * dy;
              // Kept in order of (distance, index): the k nearest so far.
              if (found === k && (d > bestD[k - 1] || (d === bestD[k - 1] && j > bestI[k - 1]))) continue;
              let p = found < k ? found++ : k - 1;
              while (p > 0 && (bestD[p - 1] > d || (bestD[p - 1] === d && bestI[p - 1] > j))) {
                bestD[p] = bestD[p - 1];
                bestI[p] = bestI[p - 1];
                p--;
              }
              bestD[p] = d;
              bestI[p] = j;
            }
          }
          if (ring === 0) break;
        }
      }
    }
    for (let s = 0; s < found; s++) out[q * k + s] = bestI[s];
  }
  return out;
}

/** MICMAC's 9 slots per point: its nearest neighbours other than itself, unused slots 0. */
function neighbourSlots(x: Float64Array, y: Float64Array): Int32Array {
  const n = x.length;
  const near = nearestInPlane(x, y, Math.min(SLOTS, n));
  const k = Math.min(SLOTS, n);
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

/** One pass of the filter over matched pairs (x1,y1 in image 1; x2,y2 in image 2): kept indices. */
export function neighbourFilterPass(x1: Float64Array, y1: Float64Array, x2: Float64Array, y2: Float64Array, ratio = 0.5): Int32Array {
  const n = x1.length;
  if (n === 0) return new Int32Array(0);
  const a = neighbourSlots(x1, y1);
  const b = neighbourSlots(x2, y2);
  const needed = ratio * SLOTS;
  const kept: number[] = [];
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
    if (common > needed) kept.push(i);
  }
  return Int32Array.from(kept);
}

/** MICMAC's filter: two passes, the second over what the first kept. Returns kept indices. */
export function neighbourFilter(x1: Float64Array, y1: Float64Array, x2: Float64Array, y2: Float64Array): Int32Array {
  let idx = Int32Array.from(x1.keys());
  for (let pass = 0; pass < 2 && idx.length > 0; pass++) {
    const pick = (v: Float64Array): Float64Array => Float64Array.from(idx, (i) => v[i]);
    const kept = neighbourFilterPass(pick(x1), pick(y1), pick(x2), pick(y2));
    idx = Int32Array.from(kept, (k) => idx[k]);
  }
  return idx;
}
