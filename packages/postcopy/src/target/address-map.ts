// Where each page of the migrated memory lives in the target process now. Pages are named by
// (mapping, page) for good: present bits and the source's regions never move. mremap moves their
// addresses, munmap removes them. The extent table covers every page of every mapping with runs of
// {mapping, firstPage, count, address or -1 when unmapped}.
//
// Only the fault thread writes the table, while it applies memory events (it reads them from the
// uffd), with Counter.MAP_SEQ odd. The push thread reads it under that seqlock. Until the first move,
// addresses are the mappings' own, and lookups take that fast path.
import { PostcopyError } from '../errors.js';
import { Counter, EXTENT_FIELDS, markPresent, type MapSnapshot, type SharedState } from './shared-state.js';

interface Extent {
  mapping: number;
  first: number;
  count: number;
  /** address of page `first`, or -1: unmapped */
  addr: number;
}

const moved = (state: SharedState) => Atomics.load(state.counters, Counter.MOVED) !== 0;

/** A (mapping, page) found at an address; mapping -1 when no migrated page is there. */
export interface Located {
  mapping: number;
  page: number;
}

/** Which migrated page lives at `addr` now (page-aligned or not). */
export function locate(state: SharedState, addr: number, out: Located): Located {
  const ps = state.pageSize;
  out.mapping = -1;
  if (!moved(state)) {
    const ms = state.mappings;
    for (let i = 0; i < ms.length; i++) {
      if (addr >= ms[i].localStart && addr < ms[i].localStart + ms[i].length) {
        out.mapping = i;
        out.page = Math.floor((addr - ms[i].localStart) / ps);
        break;
      }
    }
    return out;
  }
  const t = state.extents;
  const n = Atomics.load(state.counters, Counter.EXTENTS);
  for (let e = 0; e < n * EXTENT_FIELDS; e += EXTENT_FIELDS) {
    const a = t[e + 3];
    if (a >= 0 && addr >= a && addr < a + t[e + 2] * ps) {
      out.mapping = t[e];
      out.page = t[e + 1] + Math.floor((addr - a) / ps);
      break;
    }
  }
  return out;
}

/** A run of pages at consecutive addresses. */
export interface Span {
  /** address of the first page, -1 when it is unmapped */
  addr: number;
  count: number;
}

/** Where page `page` of `mapping` is, and how many pages from it (up to `end`) follow it in memory. */
export function spanAt(state: SharedState, mapping: number, page: number, end: number, out: Span): Span {
  const ps = state.pageSize;
  if (!moved(state)) {
    out.addr = state.mappings[mapping].localStart + page * ps;
    out.count = end - page;
    return out;
  }
  const t = state.extents;
  const n = Atomics.load(state.counters, Counter.EXTENTS);
  for (let e = 0; e < n * EXTENT_FIELDS; e += EXTENT_FIELDS) {
    const first = t[e + 1];
    if (t[e] === mapping && page >= first && page < first + t[e + 2]) {
      out.addr = t[e + 3] < 0 ? -1 : t[e + 3] + (page - first) * ps;
      out.count = Math.min(end, first + t[e + 2]) - page;
      return out;
    }
  }
  throw new PostcopyError('ERR_UFFD', `page ${page} of mapping ${mapping} is missing from the extent table`);
}

/** The push thread's read side: waits out a writer, returns the sequence to compare afterwards. */
export function mapSeq(state: SharedState): number {
  for (let spins = 0; ; spins++) {
    const seq = Atomics.load(state.counters, Counter.MAP_SEQ);
    if ((seq & 1) === 0) return seq;
    if (spins > 100) Atomics.wait(state.counters, Counter.MAP_SEQ, seq, 1);
  }
}

export function mapChangedSince(state: SharedState, seq: number): boolean {
  return Atomics.load(state.counters, Counter.MAP_SEQ) !== seq;
}

/** The writer's side: the fault thread brackets its uffd reads and memory events with these. */
export function beginMapChange(state: SharedState): void {
  Atomics.add(state.counters, Counter.MAP_SEQ, 1);
}

export function endMapChange(state: SharedState): void {
  Atomics.add(state.counters, Counter.MAP_SEQ, 1);
  Atomics.notify(state.counters, Counter.MAP_SEQ);
}

export function snapshotMap(state: SharedState): MapSnapshot {
  const n = Atomics.load(state.counters, Counter.EXTENTS);
  return { extents: state.extents.slice(0, n * EXTENT_FIELDS), moved: moved(state) };
}

/** Every run of pages at consecutive addresses now, as {mapping, first, count, addr} (-1: unmapped). */
export function extentsNow(state: SharedState): { mapping: number; first: number; count: number; addr: number }[] {
  if (!moved(state)) return state.mappings.map((m, i) => ({ mapping: i, first: 0, count: m.length / state.pageSize, addr: m.localStart }));
  return readTable(state);
}

function readTable(state: SharedState): Extent[] {
  const t = state.extents;
  const n = state.counters[Counter.EXTENTS];
  const out: Extent[] = [];
  for (let e = 0; e < n * EXTENT_FIELDS; e += EXTENT_FIELDS) out.push({ mapping: t[e], first: t[e + 1], count: t[e + 2], addr: t[e + 3] });
  return out;
}

function writeTable(state: SharedState, extents: Extent[]): void {
  // Merge neighbours that moved together, so moving a buffer back and forth does not grow the table.
  extents.sort((a, b) => a.mapping - b.mapping || a.first - b.first);
  const merged: Extent[] = [];
  for (const x of extents) {
    const last = merged[merged.length - 1];
    const ps = state.pageSize;
    if (last && last.mapping === x.mapping && last.first + last.count === x.first && (last.addr < 0 ? x.addr < 0 : x.addr === last.addr + last.count * ps)) last.count += x.count;
    else merged.push({ ...x });
  }
  const capacity = state.extents.length / EXTENT_FIELDS;
  if (merged.length > capacity)
    throw new PostcopyError('ERR_UFFD', `the process split its migrated memory into more than ${capacity} moved pieces`);
  merged.forEach((x, i) => state.extents.set([x.mapping, x.first, x.count, x.addr], i * EXTENT_FIELDS));
  Atomics.store(state.counters, Counter.EXTENTS, merged.length);
}

/**
 * Cuts extents at the edges of the address range [start, end). Pieces outside are passed through as
 * the same objects; `inside` lists the pieces within it.
 */
function split(extents: Extent[], start: number, end: number, ps: number): { pieces: Extent[]; inside: Extent[] } {
  const pieces: Extent[] = [];
  const inside: Extent[] = [];
  for (const x of extents) {
    const lo = x.addr;
    const hi = x.addr + x.count * ps;
    if (x.addr < 0 || hi <= start || lo >= end) {
      pieces.push(x);
      continue;
    }
    const cutLo = Math.max(0, Math.ceil((start - lo) / ps));
    const cutHi = Math.min(x.count, Math.ceil((end - lo) / ps));
    if (cutLo > 0) pieces.push({ ...x, count: cutLo });
    const mid = { mapping: x.mapping, first: x.first + cutLo, count: cutHi - cutLo, addr: lo + cutLo * ps };
    pieces.push(mid);
    inside.push(mid);
    if (cutHi < x.count) pieces.push({ mapping: x.mapping, first: x.first + cutHi, count: x.count - cutHi, addr: lo + cutHi * ps });
  }
  return { pieces, inside };
}

/**
 * Pages in [start, end) will never be fetched: the process dropped them (MADV_DONTNEED reads as
 * zero) or unmapped them (then they are nowhere any more).
 */
export function dropRange(state: SharedState, start: number, end: number, unmapped: boolean): void {
  const { pieces, inside } = split(readTable(state), start, end, state.pageSize);
  for (const x of inside) {
    markPresent(state, x.mapping, x.first, x.count, Counter.DROPPED);
    if (unmapped) x.addr = -1;
  }
  writeTable(state, pieces);
  // An unmapped page is nowhere now: lookups must read the table (the fast path would still find
  // it at its mapping's address). Found by the model test (test/address-map.test.ts).
  if (unmapped && inside.length) Atomics.store(state.counters, Counter.MOVED, 1);
}

/** mremap moved [from, from + length) to `to` (the two never overlap); what was at `to` is gone. */
export function moveRange(state: SharedState, from: number, to: number, length: number): void {
  const ps = state.pageSize;
  const source = split(readTable(state), from, from + length, ps);
  const destination = split(source.pieces, to, to + length, ps);
  for (const x of destination.inside) {
    markPresent(state, x.mapping, x.first, x.count, Counter.DROPPED);
    x.addr = -1;
  }
  for (const x of source.inside) x.addr += to - from;
  writeTable(state, destination.pieces);
  Atomics.store(state.counters, Counter.MOVED, 1);
}
