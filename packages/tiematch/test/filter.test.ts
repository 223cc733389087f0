import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { annMatch, neighbourFilter, neighbourFilterPass, syntheticPair } from '../src/index.js';

/** MICMAC's neighbourFilter written plainly: sort everything, 9 slots, count A in B, > 4.5. */
function plainPass(x1: number[], y1: number[], x2: number[], y2: number[]): number[] {
  const n = x1.length;
  const slots = (x: number[], y: number[]): number[][] =>
    x.map((_, i) => {
      const order = x.map((__, j) => j).sort((p, q) => (x[i] - x[p]) ** 2 + (y[i] - y[p]) ** 2 - ((x[i] - x[q]) ** 2 + (y[i] - y[q]) ** 2) || p - q);
      const out = new Array<number>(9).fill(0);
      let s = 0;
      for (const j of order.slice(0, 9)) if (j !== i) out[s++] = j;
      return out;
    });
  const a = slots(x1, y1);
  const b = slots(x2, y2);
  const kept: number[] = [];
  for (let i = 0; i < n; i++) if (a[i].filter((v) => b[i].includes(v)).length > 4.5) kept.push(i);
  return kept;
}

describe('neighbour filter', () => {
  it('equals a plain reading of MICMAC\'s rule, duplicates and ties included', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 30 }), fc.integer({ min: 0, max: 30 }), fc.integer({ min: -2, max: 2 }), fc.integer({ min: -2, max: 2 })), { minLength: 10, maxLength: 120 }), (pts) => {
        // Coarse integer grids force equal distances and repeated points.
        const x1 = pts.map((p) => p[0]);
        const y1 = pts.map((p) => p[1]);
        const x2 = pts.map((p) => p[0] + p[2]);
        const y2 = pts.map((p) => p[1] + p[3]);
        const got = Array.from(neighbourFilterPass(Float64Array.from(x1), Float64Array.from(y1), Float64Array.from(x2), Float64Array.from(y2)));
        assert.deepEqual(got, plainPass(x1, y1, x2, y2));
      }),
      { numRuns: 300 },
    );
  });

  it('two passes: the second, which searches again only where the first removed a neighbour, equals a plain second pass', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 40 }), fc.integer({ min: 0, max: 40 }), fc.integer({ min: -3, max: 3 }), fc.integer({ min: -3, max: 3 }), fc.boolean()), { minLength: 10, maxLength: 150 }), (pts) => {
        // Some matches jump far in image 2: the first pass removes them, and others lose a neighbour.
        const x1 = pts.map((p) => p[0]);
        const y1 = pts.map((p) => p[1]);
        const x2 = pts.map((p) => p[0] + (p[4] ? p[2] * 9 : p[2]));
        const y2 = pts.map((p) => p[1] + (p[4] ? p[3] * 9 : p[3]));
        const first = plainPass(x1, y1, x2, y2);
        const second = plainPass(...([x1, y1, x2, y2].map((v) => first.map((i) => v[i])) as [number[], number[], number[], number[]])).map((i) => first[i]);
        const got = Array.from(neighbourFilter(Float64Array.from(x1), Float64Array.from(y1), Float64Array.from(x2), Float64Array.from(y2)));
        assert.deepEqual(got, second);
      }),
      { numRuns: 300 },
    );
  });

  it('matches a plain reading on real-valued, clustered coordinates (the grid\'s own cells and rings)', () => {
    // Dense clumps and a sparse field, as keypoints fall: rings beyond the first are searched.
    let seed = 11;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const x1: number[] = [], y1: number[] = [], x2: number[] = [], y2: number[] = [];
    for (let i = 0; i < 600; i++) {
      const clump = i % 3 === 0;
      const x = clump ? 100 + rnd() * 5 : rnd() * 1000;
      const y = clump ? 200 + rnd() * 5 : rnd() * 700;
      x1.push(x);
      y1.push(y);
      const wrong = rnd() < 0.1;
      x2.push(wrong ? rnd() * 1000 : x * 0.9 + 13.25);
      y2.push(wrong ? rnd() * 700 : y * 0.9 - 4.5);
    }
    const first = plainPass(x1, y1, x2, y2);
    const second = plainPass(...([x1, y1, x2, y2].map((v) => first.map((i) => v[i])) as [number[], number[], number[], number[]])).map((i) => first[i]);
    assert.ok(first.length < 600 && second.length > 400, `${first.length}, ${second.length}`);
    assert.deepEqual(Array.from(neighbourFilter(Float64Array.from(x1), Float64Array.from(y1), Float64Array.from(x2), Float64Array.from(y2))), second);
  });

  it('keeps consistent matches and drops scattered ones', async () => {
    const { a, b, planted } = syntheticPair(4000, 3000, 5, 0.3);
    // Add wrong matches: swap the descriptors of some random b points with a points elsewhere.
    const r = await annMatch(a, b, { threads: 2 });
    const unfiltered = await annMatch(a, b, { threads: 2, filter: false });
    assert.ok(unfiltered.index1.length >= 0.9 * planted, `${unfiltered.index1.length} ratio matches of ${planted} planted`);
    // Planted matches are shifted by (+15.25..15.75, -7.5..-7): the filter keeps those.
    let consistent = 0;
    for (let m = 0; m < r.index1.length; m++) {
      const dx = b.x[r.index2[m]] - a.x[r.index1[m]];
      const dy = b.y[r.index2[m]] - a.y[r.index1[m]];
      if (dx > 15 && dx < 16 && dy > -8 && dy < -6.5) consistent++;
    }
    assert.equal(consistent, r.index1.length);
    assert.ok(r.index1.length >= 0.9 * unfiltered.index1.length);
  });
});
