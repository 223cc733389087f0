// The push's order: first the pages it is given first (in their order), then the next run of missing
// pages, starting after the latest fault (pre-paging), wrapping around every mapping. Shared with
// the fault thread through SharedState: pages asked for are marked (a fault on one waits for the
// push), and the latest fault is the hint.
import { locate, type Located } from './address-map.js';
import { Counter, type SharedState } from './shared-state.js';

export interface PushRun {
  mapping: number;
  page: number;
  count: number;
}

export interface PushOrder {
  /** page addresses to ask for before any other, in this order (those not migrated are passed over) */
  first?: number[];
  /** ask for those alone: the rest is left to faults (--no-push) */
  onlyFirst?: boolean;
}

export class PushCursor {
  mapping = 0;
  page = 0;
  #seenSeq = -1;
  #state: SharedState;
  readonly #first: number[];
  #firstAt = 0;
  readonly #onlyFirst: boolean;
  readonly #at: Located = { mapping: -1, page: 0 };
  /** onlyFirst: runs to ask for again (the rest of the map is not walked) */
  readonly #again: PushRun[] = [];

  constructor(state: SharedState, order: PushOrder = {}) {
    this.#state = state;
    this.#first = (order.first ?? []).map((a) => a - (a % state.pageSize));
    this.#onlyFirst = order.onlyFirst ?? false;
  }

  /**
   * `tag`: what to mark the pages asked for with (see requestTag); null once nothing is left to ask
   * for, or (firstOnly) nothing of the pages given first.
   */
  next(batch: number, tag = 1, firstOnly = false): PushRun | null {
    const first = this.#nextFirst(batch, tag);
    if (first || this.#onlyFirst || firstOnly) return first;
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

  /**
   * The next run of the pages given first: consecutive entries that are consecutive pages of one
   * mapping, missing and not asked for yet. Looked up where they are now (a remap may have moved them).
   */
  #nextFirst(batch: number, tag: number): PushRun | null {
    const state = this.#state;
    const ps = state.pageSize;
    const at = this.#at;
    for (let again = this.#again.shift(); again; again = this.#again.shift()) {
      let p = again.page;
      while (p < again.page + again.count && this.#taken(again.mapping, p)) p++;
      if (p === again.page + again.count) continue;
      let end = p + 1;
      while (end < again.page + again.count && end - p < batch && !this.#taken(again.mapping, end)) end++;
      if (end < again.page + again.count) this.#again.unshift({ mapping: again.mapping, page: end, count: again.page + again.count - end });
      state.requested[again.mapping].fill(tag, p, end);
      return { mapping: again.mapping, page: p, count: end - p };
    }
    while (this.#firstAt < this.#first.length) {
      const addr = this.#first[this.#firstAt++];
      if (locate(state, addr, at).mapping < 0 || this.#taken(at.mapping, at.page)) continue;
      const run = { mapping: at.mapping, page: at.page, count: 1 };
      while (run.count < batch && this.#firstAt < this.#first.length && this.#first[this.#firstAt] === addr + run.count * ps) {
        const p = run.page + run.count;
        if (locate(state, this.#first[this.#firstAt], at).mapping !== run.mapping || at.page !== p || this.#taken(run.mapping, p)) break;
        run.count++;
        this.#firstAt++;
      }
      state.requested[run.mapping].fill(tag, run.page, run.page + run.count);
      return run;
    }
    return null;
  }

  #taken(mapping: number, page: number): boolean {
    return this.#state.requested[mapping][page] !== 0 || Atomics.load(this.#state.present[mapping], page) !== 0;
  }

  /** Pages a request could not install (the map was changing, or a checksum failed): ask again. */
  retry(mapping: number, page: number, count: number): void {
    this.#state.requested[mapping].fill(0, page, page + count);
    if (this.#onlyFirst) this.#again.push({ mapping, page, count });
    else if (mapping < this.mapping || (mapping === this.mapping && page < this.page)) {
      this.mapping = mapping;
      this.page = page;
    }
  }
}
