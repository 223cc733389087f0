// The push's order: the next run of missing pages, starting after the latest fault (pre-paging),
// then wrapping around every mapping. Shared with the fault thread through SharedState: pages asked
// for are marked (a fault on one waits for the push), and the latest fault is the hint.
import { Counter, type SharedState } from './shared-state.js';

export interface PushRun {
  mapping: number;
  page: number;
  count: number;
}

export class PushCursor {
  mapping = 0;
  page = 0;
  #seenSeq = -1;
  #state: SharedState;

  constructor(state: SharedState) {
    this.#state = state;
  }

  /** `tag`: what to mark the pages asked for with (see requestTag); null once nothing is left to ask for */
  next(batch: number, tag = 1): PushRun | null {
    const state = this.#state;
    const seq = Atomics.load(state.counters, Counter.HINT_SEQ);
    if (seq !== this.#seenSeq && seq > 0) {
      this.#seenSeq = seq;
      this.mapping = Atomics.load(state.counters, Counter.HINT_MAPPING);
      this.page = Atomics.load(state.counters, Counter.HINT_PAGE) + 1;
    }
    const total = state.mappings.length;
    for (let scanned = 0; scanned <= total; scanned++) {
      const bits = state.present[this.mapping];
      // pages already asked for: a hint that jumps back must not ask again
      const asked = state.requested[this.mapping];
      let p = this.page;
      while (p < bits.length && (asked[p] || Atomics.load(bits, p))) p++;
      if (p < bits.length) {
        let end = p + 1;
        while (end < bits.length && end - p < batch && !asked[end] && !Atomics.load(bits, end)) end++;
        asked.fill(tag, p, end);
        const out = { mapping: this.mapping, page: p, count: end - p };
        this.page = end;
        return out;
      }
      this.mapping = (this.mapping + 1) % total;
      this.page = 0;
    }
    return null;
  }

  /** Pages a request could not install (the map was changing, or a checksum failed): ask again. */
  retry(mapping: number, page: number, count: number): void {
    this.#state.requested[mapping].fill(0, page, page + count);
    if (mapping < this.mapping || (mapping === this.mapping && page < this.page)) {
      this.mapping = mapping;
      this.page = page;
    }
  }
}
