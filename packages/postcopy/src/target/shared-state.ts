// State shared between the handler (main thread) and its fault and push threads, in SharedArrayBuffers.
import { C, native } from '../native/index.js';
import { PostcopyError } from '../errors.js';

/** One local range backed by one source region. */
export interface Mapping {
  regionId: number;
  localStart: number;
  length: number;
}

export const Counter = {
  PRESENT: 0,
  FAULTED: 1, // data pages installed by the fault path (including read-ahead)
  PUSHED: 2, // data pages installed by the background push
  ZERO: 3, // never-touched pages mapped as zero pages
  RACED: 4, // pages found already installed by the other thread
  FAULTS: 5, // fault events served
  HINT_MAPPING: 6, // where the last fault was: the push continues from there
  HINT_PAGE: 7,
  HINT_SEQ: 8,
  STOP: 9,
  TOTAL: 10,
  /** fault events read from the uffd; FAULTS catches up once each is resolved */
  EVENTS: 11,
  /** set once every thread is connected: nothing is fetched before the handler is fully up */
  GO: 12,
  /** pages the process itself dropped (MADV_DONTNEED, munmap): never fetched */
  DROPPED: 13,
  /** the userfaultfd, when it arrives after the threads started (FaultHandler.attach) */
  UFFD: 14,
} as const;
const COUNTERS = 16;

export interface SharedState {
  pageSize: number;
  mappings: Mapping[];
  /** one byte per page per mapping: 1 once installed */
  present: Uint8Array[];
  counters: Int32Array;
}

export function createSharedState(pageSize: number, mappings: Mapping[], initialPresent?: Uint8Array[]): SharedState {
  const present = mappings.map((m, i) => {
    if (m.length % pageSize !== 0 || m.localStart % pageSize !== 0)
      throw new PostcopyError('ERR_PAGE_SIZE', `mapping 0x${m.localStart.toString(16)}+${m.length} is not aligned to ${pageSize}`);
    const bits = new Uint8Array(new SharedArrayBuffer(m.length / pageSize));
    if (initialPresent?.[i]) bits.set(initialPresent[i]);
    return bits;
  });
  const counters = new Int32Array(new SharedArrayBuffer(COUNTERS * 4));
  counters[Counter.TOTAL] = present.reduce((n, p) => n + p.length, 0);
  counters[Counter.PRESENT] = present.reduce((n, p) => n + p.reduce((a, b) => a + b, 0), 0);
  return { pageSize, mappings, present, counters };
}

export function findMapping(state: SharedState, addr: number): number {
  const ms = state.mappings;
  for (let i = 0; i < ms.length; i++) if (addr >= ms[i].localStart && addr < ms[i].localStart + ms[i].length) return i;
  return -1;
}

export function allPresent(state: SharedState): boolean {
  return Atomics.load(state.counters, Counter.PRESENT) >= state.counters[Counter.TOTAL];
}

/** Marks every page of [start, end) that lies in a mapping as present without data (dropped). */
export function dropRange(state: SharedState, start: number, end: number): void {
  state.mappings.forEach((m, i) => {
    const lo = Math.max(start, m.localStart);
    const hi = Math.min(end, m.localStart + m.length);
    if (hi <= lo) return;
    const first = Math.floor((lo - m.localStart) / state.pageSize);
    const last = Math.ceil((hi - m.localStart) / state.pageSize);
    markPresent(state, i, first, last - first, Counter.DROPPED);
  });
}

/** Marks pages present; credits newly present ones to `counter`. */
function markPresent(state: SharedState, mapping: number, first: number, count: number, counter: number): void {
  const bits = state.present[mapping];
  let fresh = 0;
  for (let p = first; p < first + count; p++) if (Atomics.exchange(bits, p, 1) === 0) fresh++;
  if (fresh) {
    Atomics.add(state.counters, counter, fresh);
    Atomics.add(state.counters, Counter.PRESENT, fresh);
  }
}

/**
 * Installs pages with UFFDIO_COPY (data) or UFFDIO_ZEROPAGE (data === null), skipping pages that
 * are already there. Throws ERR_UFFD when the target address space is gone or the kernel refuses.
 */
export function installPages(
  state: SharedState,
  uffd: number,
  mapping: number,
  first: number,
  count: number,
  data: Uint8Array | null,
  dataOffset: number,
  counter: number,
): void {
  const ps = state.pageSize;
  const base = state.mappings[mapping].localStart;
  const end = first + count;
  let p = first;
  let retries = 0;
  while (p < end) {
    const len = (end - p) * ps;
    const r = data
      ? native.uffdCopy(uffd, base + p * ps, data, dataOffset + (p - first) * ps, len, false)
      : native.uffdZeropage(uffd, base + p * ps, len, false);
    if (r > 0) {
      const n = Math.floor(r / ps);
      markPresent(state, mapping, p, n, data ? counter : Counter.ZERO);
      p += n;
      retries = 0;
    } else if (r === -C.EEXIST) {
      markPresent(state, mapping, p, 1, Counter.RACED);
      p++;
    } else if (r === -C.EAGAIN && retries++ < 5000) {
      // The mapping is changing (a fork) until the fault thread reads that event: wait a little.
      if (retries > 10) Atomics.wait(state.counters, Counter.STOP, 0, 1);
    } else if (r === -C.ENOENT) {
      // No VMA there any more (munmap; its UNMAP event is on its way): nobody can read the page.
      markPresent(state, mapping, p, 1, Counter.DROPPED);
      p++;
    } else {
      if (r === -C.ESRCH) throw new PostcopyError('ERR_TARGET_GONE', 'the target process has exited');
      throw new PostcopyError('ERR_UFFD', `${data ? 'UFFDIO_COPY' : 'UFFDIO_ZEROPAGE'} at 0x${(base + p * ps).toString(16)} failed: errno ${-r}`);
    }
  }
}
