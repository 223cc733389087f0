// State shared between the handler (main thread) and its fault and push threads, in SharedArrayBuffers.
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
  /** entries in the extent table (see address-map.ts) */
  EXTENTS: 15,
  /** 1 once a page has moved (mremap): addresses then come from the extent table */
  MOVED: 16,
  /** odd while the fault thread reads and applies memory events: a seqlock for the push thread */
  MAP_SEQ: 17,
  /** pages that failed their checksum on arrival: not installed, fetched again */
  CORRUPT: 18,
  /** times a thread reconnected after losing its connection */
  RESUMES: 19,
  /** faults the fault thread leaves to the push, which asked for their pages already: it signals pushFd after each install */
  AWAITING: 20,
  /** the id of the oldest push request in flight (see requestTag) */
  PUSH_HEAD: 21,
  /**
   * 1 once every range is registered with the uffd. `criu restore` hands a task's uffd over before
   * its restorer registers the task's memory: until then no VMA is registered (ENOENT), and the
   * push must hold its pages rather than take them for unmapped.
   */
  REGISTERED: 22,
  /**
   * Bumped by the fault thread before each read of the uffd. A page is marked present with the
   * stamp of the epoch in which its install returned (presentStamp): a fork read in epoch E may
   * postdate installs stamped E, never older ones (see presentAtFork).
   */
  EPOCH: 23,
  /** pages found marked present but not in the task's memory when it looked complete (verifyResident) */
  GAPS: 24,
  /** a pidfd of the task, once its pid is known (0 before): the fault thread ends when it exits */
  PIDFD: 25,
  /**
   * 1 once the handler has started a handler for every child its task forked before the fault thread
   * stopped: only then does that thread say BYE, so a source that ends with its last connection
   * is still there for the children (a fork read just before the stop came after the handler had
   * waited for its children).
   */
  BYE_OK: 26,
  /**
   * 1 once the memory is registered but the push as a whole still waits (criu restore has said
   * RESTORE_FINISHED and not yet exited): the pages given first may go in now, before the tasks run.
   */
  FIRST_GO: 27,
  /** faults served before the push was let go (REGISTERED): the restore's own, and the task's first */
  EARLY_FAULTS: 28,
} as const;
const COUNTERS = 29;
/**
 * Extents the table holds: room for every mapping twice over and then some, at least 2^14. A task
 * may have as many lazy regions as the kernel lets it map (vm.max_map_count, 65,530 by default:
 * CRIU's zdtm maps06 has 20,480); one that fragments its moved memory further is refused.
 */
export const extentCapacity = (mappings: number) => Math.max(1 << 14, 2 * mappings + 1024);
export const EXTENT_FIELDS = 4;

export interface SharedState {
  pageSize: number;
  mappings: Mapping[];
  /** one byte per page per mapping: 0 while missing, then the presentStamp of the epoch it arrived in */
  present: Uint8Array[];
  /** one byte per page per mapping: 0, or requestTag() of the push request that asked for it */
  requested: Uint8Array[];
  counters: Int32Array;
  /** where each page is now: {mapping, firstPage, count, address or -1} per entry (address-map.ts) */
  extents: Float64Array;
}

/** The map of a process at a fork: the child's handler starts from it. */
export interface MapSnapshot {
  extents: Float64Array;
  moved: boolean;
}

export function createSharedState(pageSize: number, mappings: Mapping[], initialPresent?: Uint8Array[], map?: MapSnapshot): SharedState {
  const present = mappings.map((m, i) => {
    if (m.length % pageSize !== 0 || m.localStart % pageSize !== 0)
      throw new PostcopyError('ERR_PAGE_SIZE', `mapping 0x${m.localStart.toString(16)}+${m.length} is not aligned to ${pageSize}`);
    const bits = new Uint8Array(new SharedArrayBuffer(m.length / pageSize));
    const given = initialPresent?.[i];
    if (given) for (let p = 0; p < bits.length; p++) bits[p] = given[p] === DROPPED_MARK ? DROPPED_MARK : given[p] ? 1 : 0;
    return bits;
  });
  const requested = present.map((bits) => new Uint8Array(new SharedArrayBuffer(bits.length)));
  const counters = new Int32Array(new SharedArrayBuffer(COUNTERS * 4));
  counters[Counter.TOTAL] = present.reduce((n, p) => n + p.length, 0);
  counters[Counter.PRESENT] = present.reduce((n, p) => n + p.reduce((a, b) => a + (b ? 1 : 0), 0), 0);
  const extents = new Float64Array(new SharedArrayBuffer(extentCapacity(mappings.length) * EXTENT_FIELDS * 8));
  if (map) {
    extents.set(map.extents);
    counters[Counter.EXTENTS] = map.extents.length / EXTENT_FIELDS;
    counters[Counter.MOVED] = map.moved ? 1 : 0;
  } else {
    mappings.forEach((m, i) => extents.set([i, 0, m.length / pageSize, m.localStart], i * EXTENT_FIELDS));
    counters[Counter.EXTENTS] = mappings.length;
  }
  return { pageSize, mappings, present, requested, counters, extents };
}

/** A push request's id as a nonzero byte: unambiguous among fewer than 255 requests in flight. */
export const requestTag = (id: number) => (id % 255) + 1;

/** How many requests ahead of the oldest in flight the one tagged `tag` is. */
export const requestsAhead = (tag: number, headId: number) => (tag - requestTag(headId) + 255) % 255;

export function allPresent(state: SharedState): boolean {
  return Atomics.load(state.counters, Counter.PRESENT) >= state.counters[Counter.TOTAL];
}

/** The byte a page arriving in `epoch` is marked with: 1 to 254. */
export const presentStamp = (epoch: number) => (epoch % 254) + 1;
/**
 * The mark of a page the process dropped or unmapped while we served it: present for our counts,
 * but no longer in memory (verifyResident skips it). A fork child inherits it.
 */
export const DROPPED_MARK = 255;

/**
 * Marks pages present; credits newly present ones to `counter`. Call it after the install has
 * returned: the epoch read here must not precede the install (presentAtFork relies on it).
 */
export function markPresent(state: SharedState, mapping: number, first: number, count: number, counter: number): void {
  const bits = state.present[mapping];
  const stamp = counter === Counter.DROPPED ? DROPPED_MARK : presentStamp(Atomics.load(state.counters, Counter.EPOCH));
  let fresh = 0;
  for (let p = first; p < first + count; p++) if (Atomics.exchange(bits, p, stamp) === 0) fresh++;
  if (fresh) {
    Atomics.add(state.counters, counter, fresh);
    Atomics.add(state.counters, Counter.PRESENT, fresh);
  }
}


/**
 * The pages a child forked in the current epoch surely has, for the fault thread that has just read
 * its UFFD_EVENT_FORK. The kernel copies the parent's page tables under the mmap lock and holds
 * every UFFDIO_COPY/ZEROPAGE at -EAGAIN (mmap_changing) from then until the event is read. So an
 * install that returned before this epoch began (before the read) came before the copy: the child
 * has it. Pages stamped with this epoch may have arrived after the event was read, in the parent
 * alone: they count as missing (a child that has one anyway gets EEXIST, counted as raced). A stamp
 * that comes round again after 254 epochs only makes a page count as missing, never the reverse.
 * Dropped pages stay dropped (DROPPED_MARK): the child inherits the dropping, which came before.
 */
export function presentAtFork(state: SharedState): Uint8Array[] {
  const recent = presentStamp(Atomics.load(state.counters, Counter.EPOCH));
  return state.present.map((bits) => {
    const child = new Uint8Array(new SharedArrayBuffer(bits.length));
    for (let p = 0; p < bits.length; p++) {
      const v = Atomics.load(bits, p);
      child[p] = v === DROPPED_MARK ? DROPPED_MARK : v !== 0 && v !== recent ? 1 : 0;
    }
    return child;
  });
}

/** Upper bounds of the fault-latency buckets, ns: 10 us to 100 ms (a Prometheus histogram's, in seconds, in the agent). */
export const LATENCY_BOUNDS_NS = [10e3, 25e3, 50e3, 100e3, 250e3, 500e3, 1e6, 2.5e6, 5e6, 10e6, 25e6, 100e6];
