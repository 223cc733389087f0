// The working-set file: what parses, what is refused with a code, how two records merge; and the
// Zipf keys of bench --criu's redis-zipf.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { formatWorkingSet, mergeWorkingSets, parseWorkingSet, type WorkingSet } from '../src/protocol/working-set.js';
import { zipfKeys } from '../src/bench/redis-probe.js';
import { rng } from '../src/plan/simulate.js';

const PS = 4096;
const ws = (tasks: [number, number[]][]): WorkingSet => ({ pageSize: PS, tasks: new Map(tasks) });

describe('the working-set file', () => {
  it('reads back what it writes, and refuses anything else with ERR_INVALID_ARG', () => {
    const taskArb = fc.tuple(fc.integer({ min: 1, max: 4_000_000 }), fc.array(fc.nat(2 ** 35).map((p) => p * PS), { maxLength: 50 }));
    fc.assert(
      fc.property(fc.uniqueArray(taskArb, { selector: (t) => t[0], maxLength: 5 }), (tasks) => {
        const back = parseWorkingSet(formatWorkingSet(ws(tasks)));
        assert.equal(back.pageSize, PS);
        assert.deepEqual([...back.tasks].sort((a, b) => a[0] - b[0]), [...tasks].sort((a, b) => a[0] - b[0]));
      }),
      { numRuns: 200, seed: 7 },
    );
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json()), (text) => {
        try {
          parseWorkingSet(text);
        } catch (e) {
          assert.equal((e as { code?: string }).code, 'ERR_INVALID_ARG');
        }
      }),
      { numRuns: 500, seed: 8 },
    );
    const doc = (over: object) => JSON.stringify({ format: 'postcopy-working-set', version: 1, pageSize: PS, tasks: [], ...over });
    for (const [text, re] of [
      ['{', /not JSON/],
      [doc({ format: 'x' }), /not a working set/],
      [doc({ version: 2 }), /version 2/],
      [doc({ pageSize: 1000 }), /pageSize/],
      [doc({ tasks: [{ pid: 0, pages: [] }] }), /not a pid/],
      [doc({ tasks: [{ pid: 5, pages: [4097] }] }), /not the address of a page/],
      [doc({ tasks: [{ pid: 5, pages: [] }, { pid: 5, pages: [] }] }), /twice/],
    ] as const)
      assert.throws(() => parseWorkingSet(text), (e: { code?: string; message?: string }) => e.code === 'ERR_INVALID_ARG' && re.test(e.message ?? ''), text);
  });

  it('merges: the pages that still faulted first, then the old order, each once; other tasks kept', () => {
    const before = ws([[1, [PS, 2 * PS, 3 * PS]], [2, [9 * PS]]]);
    const now = ws([[1, [3 * PS, 7 * PS]], [3, [PS]]]);
    const m = mergeWorkingSets(before, now);
    assert.deepEqual(m.tasks.get(1), [3 * PS, 7 * PS, PS, 2 * PS]);
    assert.deepEqual(m.tasks.get(2), [9 * PS]);
    assert.deepEqual(m.tasks.get(3), [PS]);
    assert.deepEqual(mergeWorkingSets(null, now).tasks, now.tasks);
  });
});

describe("redis-zipf's keys", () => {
  it('are a hot set scattered over the keys: the 1% hottest get about half the GETs, and no two ranks share a key', () => {
    const n = 100_000;
    const pick = zipfKeys(n, 0.99, rng(3));
    const counts = new Map<number, number>();
    const draws = 200_000;
    for (let i = 0; i < draws; i++) {
      const k = pick();
      assert.ok(Number.isInteger(k) && k >= 0 && k < n);
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    const sorted = [...counts.values()].sort((a, b) => b - a);
    const top = sorted.slice(0, n / 100).reduce((a, b) => a + b, 0) / draws;
    // Zipf s = 0.99 over 1e5 ranks: H(1000) / H(100000) is about 0.6
    assert.ok(top > 0.45 && top < 0.75, `the hottest 1% of keys got ${top} of the GETs`);
    const hottest = [...counts].sort((a, b) => b[1] - a[1]).slice(0, 10).map(([k]) => k);
    assert.ok(hottest.some((k) => k > n / 10), `hot keys are spread, not the first written: ${hottest}`);
  });
});
