// The safety net under "a task never runs on a page it did not get": before a handler lets go of a
// uffd as complete, every page it counts as present must be in the task's memory (its pagemap).
import { PostcopyError } from '../errors.js';
import { residentPages } from '../util/pagemap.js';
import { extentsNow, mapChangedSince, mapSeq } from './address-map.js';
import { Counter, DROPPED_MARK, type SharedState } from './shared-state.js';

export interface Gap {
  mapping: number;
  first: number;
  count: number;
}

/**
 * Pages marked present (not dropped) that task `pid` does not have, as runs; their marks are
 * cleared (and their push requests forgotten), so that they are fetched again. null: the task has
 * exited (nothing to protect). Reads the map under its seqlock, and again if it changed meanwhile.
 */
export function verifyResident(state: SharedState, pid: number): Gap[] | null {
  for (let tries = 0; tries < 20; tries++) {
    const seq = mapSeq(state);
    const spans = extentsNow(state);
    const found: Gap[] = [];
    try {
      for (const x of spans) {
        if (x.addr < 0 || x.count === 0) continue;
        const resident = residentPages(pid, x.addr, x.count * state.pageSize, state.pageSize, 'ERR_TARGET_GONE');
        const bits = state.present[x.mapping];
        let run: Gap | null = null;
        for (let i = 0; i < x.count; i++) {
          const v = Atomics.load(bits, x.first + i);
          const gap = v !== 0 && v !== DROPPED_MARK && !resident[i];
          if (gap && run && run.first + run.count === x.first + i) run.count++;
          else if (gap) found.push((run = { mapping: x.mapping, first: x.first + i, count: 1 }));
        }
      }
    } catch (err) {
      if ((err as PostcopyError).code === 'ERR_TARGET_GONE' || (err as { code?: string }).code === 'ENOENT' || (err as { code?: string }).code === 'ESRCH') return null;
      throw err;
    }
    if (mapChangedSince(state, seq)) continue;
    for (const g of found) forget(state, g);
    return found;
  }
  throw new PostcopyError('ERR_UFFD', 'the task kept changing its memory map while its pages were checked');
}

/** Marks a run missing again (unless it was dropped meanwhile): the fault path or push fetches it. */
function forget(state: SharedState, g: Gap): void {
  const bits = state.present[g.mapping];
  let cleared = 0;
  for (let p = g.first; p < g.first + g.count; p++) {
    const v = Atomics.load(bits, p);
    if (v !== 0 && v !== DROPPED_MARK && Atomics.compareExchange(bits, p, v, 0) === v) cleared++;
    Atomics.store(state.requested[g.mapping], p, 0);
  }
  Atomics.sub(state.counters, Counter.PRESENT, cleared);
}
