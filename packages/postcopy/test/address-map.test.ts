// The target's address map: as many lazy regions as the kernel lets a task map (issue 20: zdtm's
// maps06 has 20,480, and a fixed table of 16,384 threw a RangeError after the uffd was taken).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { dropRange, locate, moveRange, spanAt } from '../src/target/address-map.js';
import { createSharedState, type Mapping } from '../src/target/shared-state.js';

const PS = 4096;

describe('the address map', () => {
  it('holds 20,480 regions, and follows a move and an unmap among them', () => {
    // One page each, a page apart, as maps06 lays them out.
    const mappings: Mapping[] = Array.from({ length: 20_480 }, (_, i) => ({ regionId: i, localStart: 0x10000000 + i * 2 * PS, length: PS }));
    const state = createSharedState(PS, mappings);
    const last = mappings.length - 1;
    assert.deepEqual(locate(state, mappings[last].localStart + 5, { mapping: -1, page: 0 }), { mapping: last, page: 0 });
    // The last region moves far away; the first is unmapped: the table now holds every region apart.
    moveRange(state, mappings[last].localStart, 0x70000000, PS);
    dropRange(state, mappings[0].localStart, mappings[0].localStart + PS, true);
    assert.equal(spanAt(state, last, 0, 1, { addr: 0, count: 0 }).addr, 0x70000000);
    assert.equal(spanAt(state, 0, 0, 1, { addr: 0, count: 0 }).addr, -1);
    assert.equal(locate(state, 0x70000000, { mapping: -1, page: 0 }).mapping, last);
    assert.equal(locate(state, mappings[1].localStart, { mapping: -1, page: 0 }).mapping, 1);
  });
});

/** What the map should say: each page's address (-1: unmapped), and whether it was dropped. */
interface ModelPage {
  mapping: number;
  page: number;
  addr: number;
  dropped: boolean;
}

const BASE = 0x10000000;
/** addresses in play: 64 pages from BASE (the mappings, and room to move them to) */
const SPAN = 64;
const pageAddr = fc.integer({ min: 0, max: SPAN - 1 }).map((p) => BASE + p * PS);

type Op = { kind: 'drop'; start: number; pages: number; unmapped: boolean } | { kind: 'move'; from: number; to: number; pages: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('drop' as const), start: pageAddr, pages: fc.integer({ min: 1, max: 8 }), unmapped: fc.boolean() }),
  fc.record({ kind: fc.constant('move' as const), from: pageAddr, to: pageAddr, pages: fc.integer({ min: 1, max: 8 }) }).filter((m) => m.from + m.pages * PS <= m.to || m.to + m.pages * PS <= m.from),
);

/** 1 to 4 mappings of 1 to 8 pages in the first half of the span, apart from each other. */
const layout = fc.array(fc.integer({ min: 1, max: 8 }), { minLength: 1, maxLength: 4 }).map((sizes) => {
  let at = BASE;
  return sizes.map((pages, i) => {
    const m: Mapping = { regionId: i, localStart: at, length: pages * PS };
    at += (pages + 1) * PS;
    return m;
  });
});

describe('the address map, against a model of every page', () => {
  it('after any mix of mremaps, munmaps and MADV_DONTNEEDs, finds each page where the model has it, and the page at each address', () => {
    fc.assert(
      fc.property(layout, fc.array(op, { maxLength: 12 }), (mappings, ops) => {
        const state = createSharedState(PS, mappings);
        const model: ModelPage[] = mappings.flatMap((m, mi) => Array.from({ length: m.length / PS }, (_, page) => ({ mapping: mi, page, addr: m.localStart + page * PS, dropped: false })));
        const within = (p: ModelPage, start: number, pages: number) => p.addr >= start && p.addr < start + pages * PS;
        for (const o of ops) {
          if (o.kind === 'drop') {
            for (const p of model.filter((x) => within(x, o.start, o.pages))) {
              p.dropped = true;
              if (o.unmapped) p.addr = -1;
            }
            dropRange(state, o.start, o.start + o.pages * PS, o.unmapped);
          } else {
            // What was at the destination is gone; then the source's pages move there.
            const moving = model.filter((x) => within(x, o.from, o.pages));
            for (const p of model.filter((x) => within(x, o.to, o.pages))) {
              p.dropped = true;
              p.addr = -1;
            }
            for (const p of moving) p.addr += o.to - o.from;
            moveRange(state, o.from, o.to, o.pages * PS);
          }
        }
        for (const p of model) {
          assert.equal(spanAt(state, p.mapping, p.page, p.page + 1, { addr: 0, count: 0 }).addr, p.addr, `page ${p.page} of mapping ${p.mapping}`);
          assert.equal(state.present[p.mapping][p.page] !== 0, p.dropped, `page ${p.page} of mapping ${p.mapping} dropped`);
        }
        for (let a = BASE; a < BASE + SPAN * PS; a += PS) {
          const at = model.find((p) => p.addr === a);
          const got = locate(state, a + 123, { mapping: -1, page: 0 });
          assert.deepEqual(at ? { mapping: at.mapping, page: at.page } : { mapping: -1 }, got.mapping < 0 ? { mapping: -1 } : { ...got }, `address 0x${a.toString(16)}`);
        }
      }),
      { numRuns: 500, seed: 20261207 },
    );
  });
});
