// The target's address map: as many lazy regions as the kernel lets a task map (issue 20: zdtm's
// maps06 has 20,480, and a fixed table of 16,384 threw a RangeError after the uffd was taken).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
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
