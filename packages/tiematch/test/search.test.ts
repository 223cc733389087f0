import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { DESCRIPTOR_SIZE, nearestTwo, parseKeypoints, referenceNearestTwo, syntheticPair } from '../src/index.js';
import { ratioTest } from '../src/ann.js';
import { buildIndex } from '../src/engine/layout.js';

const D = DESCRIPTOR_SIZE;

describe('exact search', () => {
  const { a, b } = syntheticPair(3000, 1201, 11);
  const all = referenceNearestTwo(a.descriptors, b.descriptors, b.x.keys());

  for (const threads of [1, 2]) {
    it(`equals a scalar brute force on every query (${threads} thread${threads > 1 ? 's' : ''}, ties by index)`, async () => {
      const r = await nearestTwo(a.descriptors, b.descriptors, { threads, chunk: 40 });
      let wrong = 0;
      for (const [q, want] of all) {
        if (r.d1[q] !== want.d1 || r.i1[q] !== want.i1 || r.d2[q] !== want.d2 || r.i2[q] !== want.i2) wrong++;
      }
      assert.equal(wrong, 0);
      assert.ok(r.stats.survivors < r.stats.pairs / 4, `the screen should spare most exact distances (${r.stats.survivors} of ${r.stats.pairs})`);
    });
  }

  it('every K gives the same answer', async () => {
    const base = await nearestTwo(a.descriptors, b.descriptors, { threads: 1, k: 8 });
    for (const k of [16, 24, 32]) {
      const r = await nearestTwo(a.descriptors, b.descriptors, { threads: 1, k });
      assert.deepEqual([r.d1, r.i1, r.d2, r.i2], [base.d1, base.i1, base.d2, base.i2]);
    }
  });

  it('ties go to the lower index, wherever the duplicates sit', async () => {
    const base = new Uint8Array(200 * D);
    for (let i = 0; i < base.length; i++) base[i] = (i * 2654435761) % 251 % 60;
    // Points 150, 20 and 99 carry the same descriptor; 7 another one twice (7 and 180).
    base.copyWithin(20 * D, 150 * D, 151 * D);
    base.copyWithin(99 * D, 150 * D, 151 * D);
    base.copyWithin(180 * D, 7 * D, 8 * D);
    const queries = new Uint8Array(3 * D);
    queries.set(base.subarray(150 * D, 151 * D), 0);
    queries.set(base.subarray(180 * D, 181 * D), D);
    queries.set(base.subarray(0, D), 2 * D);
    const r = await nearestTwo(base, queries, { threads: 2, chunk: 4 });
    assert.deepEqual([r.i1[0], r.i2[0], r.d1[0], r.d2[0]], [20, 99, 0, 0]);
    assert.deepEqual([r.i1[1], r.i2[1], r.d1[1], r.d2[1]], [7, 180, 0, 0]);
    assert.equal(r.i1[2], 0);
  });

  it('with a ratio, exact mode keeps d1, i1 and the ratio test of the full search, also with ties', async () => {
    // Base and queries with duplicated descriptors: exact ties for the nearest and the second.
    const base = Uint8Array.from(a.descriptors);
    for (let i = 0; i < 300; i++) base.copyWithin(((i * 7 + 3) % 3000) * D, ((i * 13 + 1000) % 3000) * D, ((i * 13 + 1000) % 3000 + 1) * D);
    const queries = Uint8Array.from(b.descriptors);
    for (let i = 0; i < 100; i++) queries.set(base.subarray(((i * 31) % 3000) * D, ((i * 31) % 3000 + 1) * D), i * 5 * D);
    const full = await nearestTwo(base, queries, { threads: 2 });
    for (const ratio of [0.6, 0.8, 0.3]) {
      const r = await nearestTwo(base, queries, { threads: 2, ratio, chunk: 40 });
      let pass = 0;
      for (let q = 0; q < b.count; q++) {
        assert.equal(r.i1[q], full.i1[q], `query ${q}: i1`);
        assert.equal(r.d1[q], full.d1[q], `query ${q}: d1`);
        assert.ok(r.d2[q] >= full.d2[q], `query ${q}: d2 is a real distance, at least the true one`);
        assert.equal(ratioTest(r.d1[q], r.d2[q], ratio), ratioTest(full.d1[q], full.d2[q], ratio), `query ${q}: ratio ${ratio}`);
        if (ratioTest(full.d1[q], full.d2[q], ratio)) pass++;
      }
      assert.ok(pass > 50 && pass < b.count, `${pass} queries pass at ${ratio}`);
      assert.ok(r.stats.survivors <= full.stats.survivors);
    }
  });

  it('approx mode finds at least 99.9% of the exact nearest neighbours of matched points', async () => {
    const exact = await nearestTwo(a.descriptors, b.descriptors, { threads: 2 });
    const approx = await nearestTwo(a.descriptors, b.descriptors, { threads: 2, mode: 'approx' });
    let matched = 0;
    let found = 0;
    for (let q = 0; q < b.count; q++) {
      if (exact.d1[q] < 0.36 * exact.d2[q]) {
        matched++;
        if (approx.i1[q] === exact.i1[q]) found++;
      }
      assert.ok(approx.d1[q] >= exact.d1[q] && approx.d2[q] >= exact.d2[q], 'approximate distances are real ones');
    }
    assert.ok(matched > 100);
    assert.ok(found >= 0.999 * matched, `${found} of ${matched}`);
    assert.ok(approx.stats.survivors <= exact.stats.survivors);
  });

  it('approx mode searches cluster by cluster within a chunk: for a given chunk, 1 or 2 threads give the same result', async () => {
    for (const chunk of [undefined, 100]) {
      const one = await nearestTwo(a.descriptors, b.descriptors, { threads: 1, mode: 'approx', chunk });
      const two = await nearestTwo(a.descriptors, b.descriptors, { threads: 2, mode: 'approx', chunk });
      assert.deepEqual([two.d1, two.i1, two.d2, two.i2], [one.d1, one.i1, one.d2, one.i2], `chunk ${chunk ?? 'default'}`);
    }
  });

  it('approx mode probing every cluster with the full screen is exact; fewer probes screen fewer pairs', async () => {
    const exact = await nearestTwo(a.descriptors, b.descriptors, { threads: 2 });
    const every = await nearestTwo(a.descriptors, b.descriptors, { threads: 2, mode: 'approx', alpha: 1, probes: 64 });
    assert.deepEqual([every.d1, every.i1, every.d2, every.i2], [exact.d1, exact.i1, exact.d2, exact.i2]);
    const few = await nearestTwo(a.descriptors, b.descriptors, { threads: 2, mode: 'approx', alpha: 1, probes: 2 });
    assert.ok(few.stats.screened < every.stats.screened, `${few.stats.screened} vs ${every.stats.screened}`);
    await assert.rejects(nearestTwo(a.descriptors, b.descriptors, { mode: 'approx', probes: 0 }), { code: 'ERR_INVALID_ARG' });
  });

  it('two levels of clusters (a large base): exact equals the brute force, approx keeps 99.9% of the matches', async () => {
    const big = syntheticPair(140_000, 2400, 21);
    const index = buildIndex(big.a.descriptors, 8, 1);
    assert.ok(index.supers, `${index.nClusters} clusters: two levels`);
    const exact = await nearestTwo(big.a.descriptors, big.b.descriptors, { threads: 2 });
    const sample = Array.from({ length: 12 }, (_, i) => i * 199);
    for (const [q, want] of referenceNearestTwo(big.a.descriptors, big.b.descriptors, sample)) {
      assert.deepEqual([exact.d1[q], exact.i1[q], exact.d2[q], exact.i2[q]], [want.d1, want.i1, want.d2, want.i2], `query ${q}`);
    }
    const approx = await nearestTwo(big.a.descriptors, big.b.descriptors, { threads: 2, mode: 'approx' });
    let matched = 0;
    let found = 0;
    for (let q = 0; q < big.b.count; q++) {
      if (!ratioTest(exact.d1[q], exact.d2[q], 0.6)) continue;
      matched++;
      if (approx.i1[q] === exact.i1[q] && ratioTest(approx.d1[q], approx.d2[q], 0.6)) found++;
    }
    assert.ok(matched > 500, `${matched} matches`);
    assert.ok(found >= 0.999 * matched, `${found} of ${matched}`);
    assert.ok(approx.stats.screened < exact.stats.screened, `approx screens less (${approx.stats.screened} of ${exact.stats.screened})`);
    // However the chunks fall to the threads, the same result (tiematch batch searches a pair on one).
    const one = await nearestTwo(big.a.descriptors, big.b.descriptors, { threads: 1, mode: 'approx', chunk: 24 });
    assert.deepEqual([one.d1, one.i1, one.d2, one.i2], [approx.d1, approx.i1, approx.d2, approx.i2]);
  });

  const aloe = new URL('../../../../shared/data/tiematch/aloe/', import.meta.url);
  it('the aloe pair: every query equals the shipped exact ground truth', { skip: !existsSync(aloe) && 'shared/data/tiematch/aloe is not here' }, async () => {
    const A = parseKeypoints(readFileSync(new URL('A.dat', aloe))).points;
    const B = parseKeypoints(readFileSync(new URL('B.dat', aloe))).points;
    const gtI = new Int32Array(new Uint8Array(readFileSync(new URL('gt_I.i32', aloe))).buffer);
    const gtD = new Float64Array(new Uint8Array(readFileSync(new URL('gt_D.f64', aloe))).buffer);
    const r = await nearestTwo(A.descriptors, B.descriptors, { threads: 2 });
    let wrong = 0;
    let matches = 0;
    for (let q = 0; q < B.count; q++) {
      if (r.d1[q] !== gtD[2 * q] || r.d2[q] !== gtD[2 * q + 1] || r.i1[q] !== gtI[2 * q] || r.i2[q] !== gtI[2 * q + 1]) wrong++;
      if (r.d1[q] < 0.36 * r.d2[q]) matches++;
    }
    assert.equal(wrong, 0);
    assert.equal(matches, 6972);
  });
});
