// The push's cursor: it asks for every missing page exactly once, in runs no longer than a batch,
// starting after the latest fault; a retry makes pages eligible again.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { PushCursor } from '../src/target/push-cursor.js';
import { Counter, createSharedState, type Mapping } from '../src/target/shared-state.js';

const PS = 4096;

const setup = fc
  .array(fc.array(fc.boolean(), { minLength: 1, maxLength: 40 }), { minLength: 1, maxLength: 5 })
  .map((present) => {
    const mappings: Mapping[] = present.map((bits, i) => ({ regionId: i, localStart: 0x10000000 + i * 0x100000, length: bits.length * PS }));
    return { mappings, present: present.map((bits) => Uint8Array.from(bits, (b) => (b ? 1 : 0))) };
  });

const key = (m: number, p: number) => `${m}:${p}`;

describe('the push cursor', () => {
  it('asks for each missing page once, never a present one, in runs of at most a batch, whatever faults hint meanwhile', () => {
    fc.assert(
      fc.property(setup, fc.integer({ min: 1, max: 9 }), fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 6 }), ({ mappings, present }, batch, hints) => {
        const state = createSharedState(PS, mappings, present);
        const cursor = new PushCursor(state);
        const missing = new Set(present.flatMap((bits, m) => [...bits.keys()].filter((p) => !bits[p]).map((p) => key(m, p))));
        const asked = new Set<string>();
        for (let call = 0; call < 10_000; call++) {
          const hint = hints[call];
          if (hint) {
            // A fault: the push goes on after it.
            Atomics.store(state.counters, Counter.HINT_MAPPING, hint[0] % mappings.length);
            Atomics.store(state.counters, Counter.HINT_PAGE, hint[1] % present[hint[0] % mappings.length].length);
            Atomics.add(state.counters, Counter.HINT_SEQ, 1);
          }
          const run = cursor.next(batch);
          if (!run) break;
          assert.ok(run.count >= 1 && run.count <= batch, `a run of ${run.count}`);
          for (let p = run.page; p < run.page + run.count; p++) {
            const k = key(run.mapping, p);
            assert.ok(missing.has(k), `page ${k} is missing`);
            assert.ok(!asked.has(k), `page ${k} asked for once`);
            asked.add(k);
          }
        }
        assert.deepEqual([...asked].sort(), [...missing].sort(), 'every missing page was asked for');
        assert.equal(cursor.next(batch), null);
      }),
      { numRuns: 500, seed: 20261207 },
    );
  });

  it('asks again for pages it was told to retry, and for no others', () => {
    const state = createSharedState(PS, [{ regionId: 0, localStart: 0x10000000, length: 16 * PS }]);
    const cursor = new PushCursor(state);
    while (cursor.next(4)) {}
    cursor.retry(0, 5, 2);
    assert.deepEqual(cursor.next(4), { mapping: 0, page: 5, count: 2 });
    assert.equal(cursor.next(4), null);
  });

  it('asks for the pages given first before any other, in their order, each once; with onlyFirst, for those alone', () => {
    fc.assert(
      fc.property(setup, fc.integer({ min: 1, max: 9 }), fc.array(fc.tuple(fc.nat(6), fc.nat(45)), { maxLength: 30 }), fc.boolean(), ({ mappings, present }, batch, picks, onlyFirst) => {
        const state = createSharedState(PS, mappings, present);
        // some picks lie outside every mapping (mapping 5 or 6, or past a mapping's end): passed over
        const first = picks.map(([m, p]) => 0x10000000 + m * 0x100000 + p * PS + (p % 3) * 7);
        const cursor = new PushCursor(state, { first, onlyFirst });
        const missing = new Set(present.flatMap((bits, m) => [...bits.keys()].filter((p) => !bits[p]).map((p) => key(m, p))));
        const wanted: string[] = [];
        for (const [m, p] of picks) if (m < mappings.length && p < present[m].length && missing.has(key(m, p)) && !wanted.includes(key(m, p))) wanted.push(key(m, p));
        const asked: string[] = [];
        for (let call = 0; call < 10_000; call++) {
          const run = cursor.next(batch);
          if (!run) break;
          assert.ok(run.count >= 1 && run.count <= batch);
          for (let p = run.page; p < run.page + run.count; p++) asked.push(key(run.mapping, p));
        }
        assert.equal(new Set(asked).size, asked.length, 'each page asked for once');
        assert.deepEqual(asked.slice(0, wanted.length), wanted, 'the pages given first come first, in their order');
        if (onlyFirst) assert.equal(asked.length, wanted.length, 'onlyFirst: nothing else');
        else assert.deepEqual([...asked].sort(), [...missing].sort(), 'then every other missing page');
      }),
      { numRuns: 500, seed: 20261208 },
    );
  });

  it('with onlyFirst, asks again for a page it was told to retry', () => {
    const state = createSharedState(PS, [{ regionId: 0, localStart: 0x10000000, length: 16 * PS }]);
    const cursor = new PushCursor(state, { first: [0x10000000 + 3 * PS, 0x10000000 + 4 * PS], onlyFirst: true });
    assert.deepEqual(cursor.next(8), { mapping: 0, page: 3, count: 2 });
    assert.equal(cursor.next(8), null);
    cursor.retry(0, 4, 1);
    assert.deepEqual(cursor.next(8), { mapping: 0, page: 4, count: 1 });
    assert.equal(cursor.next(8), null);
  });
});
