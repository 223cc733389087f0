// Fault and push threads. Each owns one blocking connection and never yields to an event loop
// on its hot path: poll(uffd) -> read -> GET -> read reply -> UFFDIO_COPY.
import { readFileSync } from 'node:fs';
import { createHistogram } from 'node:perf_hooks';
import { parentPort } from 'node:worker_threads';
import { ConnectionLost, PostcopyError, RemoteError } from '../errors.js';
import { C, native } from '../native/index.js';
import { threadData } from '../util/thread.js';
import { ByeReason, Flag, FrameType } from '../protocol/frames.js';
import type { Endpoint } from '../transport/transport.js';
import { CriuPageChannel, type CriuConnection } from './criu-channel.js';
import type { RegionInfo } from '../protocol/frames.js';
import type { PresharedKey } from '../protocol/auth.js';
import { BlockingChannel, type PageChannel, type Run } from './channel.js';
import { beginMapChange, dropRange, endMapChange, locate, moveRange, snapshotMap, type Located } from './address-map.js';
import { installPages, type Installer } from './install.js';
import { PushCursor, type PushOrder } from './push-cursor.js';
import { lowerThisThread, type PushPriority } from '../util/push-priority.js';
import { UFFD_MSG_SIZE, UffdEvent, UffdMessage } from './uffd-message.js';
import { allPresent, Counter, LATENCY_BOUNDS_NS, presentAtFork, requestsAhead, requestTag, type MapSnapshot, type Mapping, type SharedState } from './shared-state.js';

export interface WorkerConfig {
  role: 'fault' | 'push';
  /** the source (a postcopy one; CRIU's comes as criu.connection) */
  endpoint?: Endpoint;
  /** -1: it comes later, in Counter.UFFD, before GO */
  uffd: number;
  stopFd: number;
  /** the push thread signals it after installing pages while faults wait for them (Counter.AWAITING) */
  pushFd: number;
  pageSize: number;
  mappings: Mapping[];
  present: Uint8Array[];
  requested: Uint8Array[];
  counters: Int32Array;
  extents: Float64Array;
  /** fault path: extra pages fetched after the faulting one */
  readahead: number;
  maxGetPages: number;
  /** push path: pages per background request, and requests in flight */
  pushBatch: number;
  pushWindow: number;
  /** pin this thread to these CPUs (bit mask), 0 = leave as is */
  cpuMask: number;
  /** the source is CRIU's page server (one connection for the tree, task `pid`'s lazy ranges as regions) */
  criu?: { pid: number; regions: RegionInfo[]; lazy: Uint8Array[]; connection: CriuConnection };
  /** fault thread: also push, between faults, on its own connection (for single-connection sources) */
  inlinePush?: boolean;
  /** what the push asks for first, and whether it asks for anything else */
  pushOrder?: PushOrder;
  /** fault thread: wait for the push to bring a page it asked for, if at most this much of its window is ahead (0: never) */
  awaitPushBytes: number;
  /** push thread: lower itself so (the fault thread never is) */
  pushPriority?: PushPriority;
  /** fault thread: record the address of each page that faulted while missing, in order (its working set) */
  recordTouches?: boolean;
  /** after a lost connection, keep reconnecting for this long before giving up (0: give up at once) */
  resumeMs: number;
  /** a reply that brings no byte for this long counts as a lost connection (0: wait forever) */
  replyTimeoutMs: number;
  /** the migration's pre-shared key, when the source asks for one */
  key?: PresharedKey;
  /** ask for, and check, a CRC32C with every page */
  checksums: boolean;
  /** a fork child's handler: its task's exit ends it with BYE DONE (FaultHandlerOptions.forkChild) */
  exitIsDone?: boolean;
}

export type WorkerMessage =
  | { type: 'ready' }
  /** at: when the last page was in, as performance.timeOrigin + performance.now() (comparable across threads and processes) */
  | { type: 'complete'; at: number }
  /** present: what the child surely has (presentAtFork), taken where the event was read */
  | { type: 'fork'; uffd: number; map: MapSnapshot; present: Uint8Array[] }
  | { type: 'fatal'; code: string; message: string; remoteCode?: string; remoteMessage?: string }
  /** the fault thread stopped reading the uffd: every fork it saw was posted before this */
  | { type: 'drained' }
  | { type: 'stopped'; latency?: LatencySummary; touched?: number[] };

export interface LatencySummary {
  count: number;
  minNs: number;
  p50Ns: number;
  p90Ns: number;
  p99Ns: number;
  maxNs: number;
  meanNs: number;
  stddevNs: number;
  /** faults served within each bound of LATENCY_BOUNDS_NS, cumulative (as the histogram's percentiles place them) */
  buckets?: number[];
}

/** Cumulative counts at each bound, from a histogram's percentile points. */
function latencyBuckets(hist: ReturnType<typeof createHistogram>): number[] {
  const points = [...hist.percentiles.entries()].sort((a, b) => a[0] - b[0]);
  return LATENCY_BOUNDS_NS.map((bound) => {
    let share = 0;
    for (const [p, ns] of points) if (ns <= bound) share = p;
    return Math.round((hist.count * share) / 100);
  });
}

const config = threadData<WorkerConfig>();
const state: SharedState = { pageSize: config.pageSize, mappings: config.mappings, present: config.present, requested: config.requested, counters: config.counters, extents: config.extents };
const post = (m: WorkerMessage) => parentPort!.postMessage(m);
const stopping = () => Atomics.load(state.counters, Counter.STOP) !== 0;

function validate(c: PageChannel): void {
  for (const m of state.mappings) {
    const r = c.regions.find((x) => x.id === m.regionId);
    if (!r || r.length !== m.length)
      throw new PostcopyError('ERR_OUT_OF_RANGE', `mapping 0x${m.localStart.toString(16)}+${m.length} does not match source region ${m.regionId}`);
  }
}

/**
 * How long a fault waits for the push to bring a page it has asked for already, before fetching it
 * itself. A page in flight arrives within a few ms (a window of requests at network speed); asking
 * for it again would send it twice and cost both ends a round trip, on CPUs the push needs.
 */
const AWAIT_PUSH_MS = 20;

/**
 * What the push may ask for now: the pages given first once the memory is registered (FIRST_GO),
 * everything once the push is let go (REGISTERED), nothing before.
 */
const pushGate = (): 'none' | 'first' | 'all' =>
  Atomics.load(state.counters, Counter.REGISTERED) ? 'all' : Atomics.load(state.counters, Counter.FIRST_GO) ? 'first' : 'none';

/** How many push requests in flight a fault may wait behind, for this many bytes of the push's window. */
const awaitRequests = (bytes: number) => (bytes <= 0 ? 0 : Math.max(1, Math.floor(bytes / (config.pushBatch * state.pageSize))));

interface AwaitedFault {
  pageAddr: number;
  mapping: number;
  page: number;
  t0: number;
}

/** How often a handler with no pidfd of its task looks whether the task's memory is gone. */
const PROBE_MS = 100;
/** A recorded working set keeps at most this many pages (4 GiB of 4 KiB pages; 8 MiB of addresses). */
const MAX_TOUCHED = 1 << 20;

function probeAddress(): number {
  let min = 65536;
  try {
    min = Number(readFileSync('/proc/sys/vm/mmap_min_addr', 'utf8').trim()) || min;
  } catch {
    // keep the usual default
  }
  const ps = state.pageSize;
  return Math.max(ps, Math.ceil(min / ps) * ps);
}

/** What native.pollIn says of the fault thread's fds: bit i is fds[i] readable. */
const Ready = {
  UFFD: 1,
  STOP: 2,
  /** the push installed pages faults wait for, or the handler found gaps */
  PUSH_SIGNAL: 4,
  /** the task exited */
  PIDFD: 8,
} as const;

/**
 * The fault thread: poll the uffd (and the stop, push-signal and task fds), read a batch of
 * messages, apply the memory events, then resolve each fault: wake it (the page came meanwhile),
 * let it wait for the push (its page is on the way), or fetch it. Between faults, with no push
 * thread, it pushes one batch at a time itself.
 */
class FaultLoop {
  readonly #hist = createHistogram();
  readonly #ps = state.pageSize;
  readonly #uffd = config.uffd;
  readonly #msgs = Buffer.alloc(UFFD_MSG_SIZE * 64);
  readonly #msg = new UffdMessage();
  /** uffd, stop, push signal, and the task's pidfd once the handler knows its pid */
  readonly #fds = Int32Array.of(config.uffd, config.stopFd, config.pushFd, -1);
  readonly #signalBuf = Buffer.alloc(8);
  readonly #batch = Math.max(1, Math.min(config.pushBatch, config.maxGetPages));
  /** this thread's own push (inlinePush), or the gaps it was asked to fetch */
  #cursor: PushCursor | null = config.inlinePush ? new PushCursor(state, config.pushOrder) : null;
  /** only a separate push thread can bring a page while this thread waits */
  readonly #awaitPush = !config.inlinePush && config.pushFd >= 0;
  /** in requests: the oldest one always qualifies */
  readonly #awaitAhead = awaitRequests(config.awaitPushBytes);
  /** a fault right after installed pages (a scanner's) waits for the push's oldest request, or as far as awaitPushBytes goes */
  readonly #scanAwaitAhead = Math.max(1, this.#awaitAhead);
  #pushDone = !config.inlinePush;
  #gapsSeen = 0;
  #lastWoken = -1;
  #nextId = 1;
  #completed = allPresent(state);
  readonly #where: Located = { mapping: -1, page: 0 };
  /** the pages that faulted while missing, in order (recordTouches) */
  readonly touched: number[] | null = config.recordTouches ? [] : null;
  /**
   * Faults that met a map change we had not read yet: their threads are woken to fault again once
   * it is read (or after a moment), and are then resolved at the address that holds.
   */
  #deferred: number[] = [];
  #deferredSince = 0;
  /** faults on pages a push request is bringing: the push's UFFDIO_COPY wakes their threads */
  #awaiting: AwaitedFault[] = [];
  readonly #corrupt: number[] = [];
  #probedAt = 0;
  /** the lowest address a uffd ioctl takes (vm.mmap_min_addr), rounded up to a page; -1: no probing */
  #probeAddr = probeAddress();

  run(): LatencySummary {
    while (!stopping()) {
      this.#fds[3] = Atomics.load(state.counters, Counter.PIDFD) || -1;
      const ready = native.pollIn(this.#fds, this.#pollTimeout());
      if (ready < 0) throw new PostcopyError('ERR_UFFD', `poll failed: errno ${-ready}`);
      if (ready & Ready.STOP) break;
      if (ready & Ready.PIDFD && !(ready & Ready.UFFD)) throw new PostcopyError('ERR_TARGET_GONE', 'the target process has exited');
      if (ready & Ready.PUSH_SIGNAL) native.readInto(config.pushFd, this.#signalBuf, 0, 8);
      this.#takeGaps();
      this.#settleAwaited();
      if (this.#deferred.length && performance.now() - this.#deferredSince > 2) this.#wakeDeferred();
      if (ready & Ready.UFFD) this.#readMessages();
      else if (ready === 0) {
        this.#pushOneBatch();
        if (this.#fds[3] < 0 && this.#taskGone()) throw new PostcopyError('ERR_TARGET_GONE', 'the target process has exited (its memory is gone)');
      }
      if (!this.#completed && allPresent(state)) {
        this.#completed = true;
        post({ type: 'complete', at: performance.timeOrigin + performance.now() });
      }
    }
    return this.#summary();
  }

  /**
   * Pages we had counted as present were not in the task's memory (handler.ts, verifyResident):
   * fetch them here, whether or not a push thread ran.
   */
  #takeGaps(): void {
    const gaps = Atomics.load(state.counters, Counter.GAPS);
    if (gaps === this.#gapsSeen) return;
    this.#gapsSeen = gaps;
    // (a cursor for the pages given first alone would not walk to the gaps)
    if (!this.#cursor || config.pushOrder?.onlyFirst) this.#cursor = new PushCursor(state);
    this.#pushDone = false;
    this.#completed = false;
  }

  /**
   * No fault waiting: push one batch on this connection, then look again. Not before every range
   * is registered: `criu restore` hands the uffd over before its restorer registers each VMA, and an
   * install there meets no registered VMA (ENOENT), which would count the page as unmapped for good
   * (zdtm: whole VMAs dropped this way, read as zeros once the uffd was let go).
   */
  #pushOneBatch(): void {
    const cursor = this.#cursor;
    if (!cursor) return;
    const gate = pushGate();
    if (gate === 'none') return;
    const next = cursor.next(this.#batch, 1, gate === 'first');
    if (!next) {
      if (gate === 'all') this.#pushDone = true;
      return;
    }
    const missingFrom = this.#fetch(next.mapping, next.page, next.count, Flag.BACKGROUND, Counter.PUSHED);
    if (missingFrom >= 0) cursor.retry(next.mapping, missingFrom, next.page + next.count - missingFrom);
    for (const p of this.#corrupt) cursor.retry(next.mapping, p, 1);
  }

  /**
   * One read of the uffd: memory events first, since they change where pages are, and each fault
   * read with them is resolved against the map as it stands after them.
   */
  #readMessages(): void {
    const msgs = this.#msgs;
    const msg = this.#msg;
    beginMapChange(state);
    let n: number;
    let events = 0;
    try {
      // A new epoch before each read: a fork read now sees what was installed before it (presentAtFork).
      Atomics.add(state.counters, Counter.EPOCH, 1);
      n = native.readInto(this.#uffd, msgs, 0, msgs.length);
      for (let off = 0; off + UFFD_MSG_SIZE <= n; off += UFFD_MSG_SIZE) {
        if (msg.read(msgs, off).kind !== UffdEvent.PAGEFAULT) {
          memoryEvent(msg);
          events++;
        }
      }
    } finally {
      endMapChange(state);
    }
    if (n === -C.EAGAIN) return;
    if (n <= 0) throw new PostcopyError('ERR_UFFD', `reading the userfaultfd failed: ${n === 0 ? 'closed' : `errno ${-n}`}`);
    if (events && this.#deferred.length) this.#wakeDeferred();
    if (events && this.#awaiting.length) {
      // Their pages may have moved: let them fault again, against the new map.
      for (const a of this.#awaiting) {
        native.uffdWake(this.#uffd, a.pageAddr, this.#ps);
        Atomics.add(state.counters, Counter.FAULTS, 1);
      }
      this.#awaiting = [];
    }
    for (let off = 0; off + UFFD_MSG_SIZE <= n; off += UFFD_MSG_SIZE) {
      if (msg.read(msgs, off).kind === UffdEvent.PAGEFAULT) this.#onFault(msg.address);
    }
    // After publishing the count, look at the pages once more: a push that installed one before
    // it could see the count did not signal (both sides use sequentially consistent atomics).
    Atomics.store(state.counters, Counter.AWAITING, this.#awaiting.length);
    this.#settleAwaited();
  }

  #onFault(addr: number): void {
    Atomics.add(state.counters, Counter.EVENTS, 1);
    const t0 = performance.now();
    const ps = this.#ps;
    const pageAddr = addr - (addr % ps);
    const mi = locate(state, addr, this.#where).mapping;
    if (mi < 0) {
      // Registered memory the source never had: the part an mremap or brk grew. Fresh memory reads as zero.
      const r = native.uffdZeropage(this.#uffd, pageAddr, ps, false);
      if (r === -C.EAGAIN) this.#defer(pageAddr);
      else if (r < 0) native.uffdWake(this.#uffd, pageAddr, ps);
    } else {
      const page = this.#where.page;
      // A scanner faults where the push's installed pages end: the page before is in already.
      const afterInstalled = page > 0 && Atomics.load(state.present[mi], page - 1) !== 0;
      Atomics.store(state.counters, Counter.HINT_MAPPING, mi);
      Atomics.store(state.counters, Counter.HINT_PAGE, page);
      Atomics.add(state.counters, Counter.HINT_SEQ, 1);
      const missing = !Atomics.load(state.present[mi], page);
      if (missing && this.touched && this.touched.length < MAX_TOUCHED) this.touched.push(pageAddr);
      if (!missing && pageAddr !== this.#lastWoken) {
        // Installed by the push meanwhile: let the fault retry. If the same page faults right
        // again, the bit lied (a fork copied it from a parent where it arrived too late): fetch.
        native.uffdWake(this.#uffd, pageAddr, ps);
        this.#lastWoken = pageAddr;
      } else if (this.#awaitPush && pageAddr !== this.#lastWoken && this.#pushBringsSoon(mi, page, afterInstalled ? this.#scanAwaitAhead : this.#awaitAhead)) {
        this.#awaiting.push({ pageAddr, mapping: mi, page, t0 });
        return; // served once its page is in (#settleAwaited)
      } else this.#fetchForFault(mi, page, pageAddr);
    }
    this.#faultServed(t0);
  }

  /**
   * GET, then install. Returns the first page it had to leave missing because the map changed under
   * it, or -1; pages that failed their checksum are left missing too, and listed in #corrupt.
   */
  #fetchOnce(mi: number, page: number, count: number, flags: number, counter: number): number {
    // A refetch (see #lastWoken) keeps its present bit: the page is counted once, where it first arrived.
    const m = state.mappings[mi];
    const id = this.#nextId++;
    const c = channel!;
    let missingFrom = -1;
    this.#corrupt.length = 0;
    c.sendGet(id, m.regionId, page, count, flags);
    for (;;) {
      const run = c.readRun();
      if (run.id !== id || run.region !== m.regionId || run.firstPage < page || run.firstPage + run.count > page + count)
        throw new PostcopyError('ERR_PROTOCOL', `reply ${run.id} (${run.firstPage}+${run.count}) does not match GET ${id} (${page}+${count})`);
      if (missingFrom < 0) missingFrom = installRun(c, run, mi, counter, 'fault', this.#corrupt);
      if (run.flags & Flag.END) return missingFrom;
    }
  }

  /** #fetchOnce, again after a lost connection is resumed: pages already installed are skipped. */
  #fetch(mi: number, page: number, count: number, flags: number, counter: number): number {
    for (;;) {
      try {
        return this.#fetchOnce(mi, page, count, flags, counter);
      } catch (err) {
        if (!(err instanceof ConnectionLost)) throw err;
        resume(err);
      }
    }
  }

  /** Fetches the faulting page until it arrives intact (or the map changes under it). */
  #resolve(mi: number, page: number, count: number): boolean {
    for (let attempt = 0; ; attempt++) {
      const missingFrom = this.#fetch(mi, page, count, 0, Counter.FAULTED);
      for (const p of this.#corrupt) this.#cursor?.retry(mi, p, 1);
      if (missingFrom === page) return false;
      if (!this.#corrupt.includes(page)) return true;
      if (attempt >= MAX_REFETCH) throw new PostcopyError('ERR_PROTOCOL', `page ${page} of mapping ${mi} failed its checksum ${attempt + 1} times`);
      count = 1;
    }
  }

  #defer(pageAddr: number): void {
    if (this.#deferred.length === 0) this.#deferredSince = performance.now();
    this.#deferred.push(pageAddr);
  }

  #wakeDeferred(): void {
    for (const addr of this.#deferred) native.uffdWake(this.#uffd, addr, this.#ps);
    this.#deferred.length = 0;
  }

  /** Fetches a missing faulting page (and its read-ahead) here. */
  #fetchForFault(mi: number, page: number, pageAddr: number): void {
    this.#lastWoken = -1;
    const bits = state.present[mi];
    const limit = Math.min(bits.length, page + 1 + config.readahead, page + config.maxGetPages);
    let end = page + 1;
    while (end < limit && !Atomics.load(bits, end)) end++;
    if (!this.#resolve(mi, page, end - page)) this.#defer(pageAddr);
  }

  #faultServed(t0: number): void {
    Atomics.add(state.counters, Counter.FAULTS, 1);
    if (!this.#registered()) Atomics.add(state.counters, Counter.EARLY_FAULTS, 1);
    this.#hist.record(Math.max(1, Math.round((performance.now() - t0) * 1e6)));
  }

  /**
   * Awaited faults whose page is in: done (the wake covers a copy that raced the fault). Those the
   * push gave up on (a retry clears the mark) or that waited too long: fetched here.
   */
  #settleAwaited(): void {
    if (!this.#awaiting.length) return;
    const now = performance.now();
    const still: AwaitedFault[] = [];
    for (const a of this.#awaiting) {
      if (Atomics.load(state.present[a.mapping], a.page)) {
        native.uffdWake(this.#uffd, a.pageAddr, this.#ps);
        this.#faultServed(a.t0);
      } else if (now - a.t0 > AWAIT_PUSH_MS || !Atomics.load(state.requested[a.mapping], a.page)) {
        this.#fetchForFault(a.mapping, a.page, a.pageAddr);
        this.#faultServed(a.t0);
      } else still.push(a);
    }
    this.#awaiting = still;
    Atomics.store(state.counters, Counter.AWAITING, still.length);
  }

  #pushBringsSoon(mi: number, page: number, ahead: number): boolean {
    // Until the ranges are registered the push holds its pages: a fault does not wait on it.
    const tag = Atomics.load(state.requested[mi], page);
    return tag !== 0 && Atomics.load(state.counters, Counter.REGISTERED) !== 0 && requestsAhead(tag, Atomics.load(state.counters, Counter.PUSH_HEAD)) < ahead;
  }

  /**
   * Whether the task's memory is gone, for a task whose pid is not known (a fork child not found
   * among its parent's children: it may have exited at once), so that nothing would end its handler
   * with --no-push. UFFDIO_ZEROPAGE says ESRCH once the uffd's mm is gone. It is asked at an address
   * holding none of the migrated pages: a VMA there is not registered (ENOENT), or is registered
   * memory the source never had, which reads as zero anyway. At most every PROBE_MS.
   */
  #taskGone(): boolean {
    const now = performance.now();
    if (now - this.#probedAt < PROBE_MS || this.#probeAddr < 0) return false;
    this.#probedAt = now;
    if (locate(state, this.#probeAddr, this.#where).mapping >= 0) {
      this.#probeAddr = -1; // a migrated page is there: do not probe (the handler's own end stays)
      return false;
    }
    return native.uffdZeropage(this.#uffd, this.#probeAddr, this.#ps, false) === -C.ESRCH;
  }

  #registered(): boolean {
    return Atomics.load(state.counters, Counter.REGISTERED) !== 0;
  }

  /** 0: look and go on (a push batch to send, deferred faults); -1: sleep until an fd says something. */
  #pollTimeout(): number {
    // A push that waits for the registration looks again every millisecond.
    const pushing = this.#pushDone ? -1 : this.#registered() ? 0 : 1;
    let ms = this.#deferred.length ? (this.#pushDone ? 1 : pushing) : pushing;
    if (ms < 0 && this.#fds[3] < 0) ms = PROBE_MS; // no pidfd: look at the task's memory now and then (#taskGone)
    if (this.#awaiting.length) {
      const left = Math.max(1, Math.ceil(this.#awaiting[0].t0 + AWAIT_PUSH_MS - performance.now()));
      ms = ms < 0 ? left : Math.min(ms, left);
    }
    return ms;
  }

  #summary(): LatencySummary {
    const hist = this.#hist;
    return {
      count: hist.count,
      minNs: hist.count ? hist.min : 0,
      p50Ns: hist.count ? hist.percentile(50) : 0,
      p90Ns: hist.count ? hist.percentile(90) : 0,
      p99Ns: hist.count ? hist.percentile(99) : 0,
      maxNs: hist.count ? hist.max : 0,
      meanNs: hist.count ? hist.mean : 0,
      stddevNs: hist.count ? hist.stddev : 0,
      buckets: hist.count ? latencyBuckets(hist) : LATENCY_BOUNDS_NS.map(() => 0),
    };
  }
}

/** How long the fault thread's BYE waits for the handlers of the children it saw fork (see Counter.BYE_OK). */
const BYE_WAIT_MS = 10_000;

/** How often a faulting page may fail its checksum before the connection is deemed broken. */
const MAX_REFETCH = 8;

/**
 * Installs a run's pages, leaving missing (and listing in `corrupt`, counted) those that failed
 * their checksum. Returns the first page left missing because the map changed, or -1.
 */
function installRun(channel: PageChannel, run: Run, mi: number, counter: number, installer: Installer, corrupt: number[]): number {
  const data = run.type === FrameType.ZERO ? null : channel.data;
  const bad = channel.corrupt;
  const ps = state.pageSize;
  let from = 0;
  for (let i = 0; i <= bad.length; i++) {
    const to = i < bad.length ? bad[i] : run.count;
    if (to > from) {
      const left = installPages(state, config.uffd, mi, run.firstPage + from, to - from, data, run.dataOffset + from * ps, counter, installer);
      if (left) return run.firstPage + to - left;
    }
    if (i < bad.length) {
      corrupt.push(run.firstPage + to);
      Atomics.add(state.counters, Counter.CORRUPT, 1);
    }
    from = to + 1;
  }
  return -1;
}

/**
 * The process changed its memory map. REMOVE (MADV_DONTNEED) and UNMAP: those pages must never be
 * fetched, they read as zero or are gone; after REMOVE the range is unregistered so the kernel
 * zero-fills it. REMAP: the pages moved, missing ones included; they are fetched for their new
 * place. FORK: the child gets a handler of its own, starting from this map.
 */
function memoryEvent(msg: UffdMessage): void {
  switch (msg.kind) {
    case UffdEvent.REMOVE:
    case UffdEvent.UNMAP:
      dropRange(state, msg.start, msg.end, msg.kind === UffdEvent.UNMAP);
      if (msg.kind === UffdEvent.REMOVE) {
        try {
          native.uffdUnregister(config.uffd, msg.start, msg.end - msg.start);
        } catch {
          // the process is gone: nothing left to protect
        }
      }
      return;
    case UffdEvent.REMAP:
      moveRange(state, msg.from, msg.to, msg.length);
      return;
    case UffdEvent.FORK:
      // The child's userfaultfd arrived in this process: the handler's main thread serves it.
      post({ type: 'fork', uffd: msg.childUffd, map: snapshotMap(state), present: presentAtFork(state) });
      return;
    default:
      throw new PostcopyError('ERR_UFFD', `the process sent userfaultfd event ${msg.kind}, which this handler does not know`);
  }
}

function pushLoop(): void {
  lowerThisThread(config.pushPriority);
  const cursor = new PushCursor(state, config.pushOrder);
  const corrupt: number[] = [];
  const batch = Math.max(1, Math.min(config.pushBatch, config.maxGetPages));
  const inflight: { id: number; mapping: number; page: number; count: number }[] = [];
  const idle = new Int32Array(new SharedArrayBuffer(4));
  let nextId = 1;
  const ask = (r: (typeof inflight)[number]) => channel!.sendGet(r.id, state.mappings[r.mapping].regionId, r.page, r.count, Flag.BACKGROUND);
  let resend = false;
  // Nothing can be installed before the memory is registered (criu restore registers it after
  // handing the uffd over): pages fetched meanwhile would only take CPU from the restore itself,
  // and from the faults it makes, which are its downtime.
  while (pushGate() === 'none' && !stopping()) Atomics.wait(state.counters, Counter.REGISTERED, 0, 20);
  while (!stopping()) {
    try {
      if (resend) {
        resend = false;
        for (const r of inflight) ask(r); // whole requests again: installed pages are skipped
      }
      const firstOnly = pushGate() !== 'all';
      while (inflight.length < config.pushWindow) {
        const next = cursor.next(batch, requestTag(nextId), firstOnly);
        if (!next) break;
        const request = { id: nextId++, ...next };
        inflight.push(request);
        if (inflight.length === 1) Atomics.store(state.counters, Counter.PUSH_HEAD, request.id);
        ask(request);
      }
      if (inflight.length === 0) {
        if (firstOnly) {
          Atomics.wait(state.counters, Counter.REGISTERED, 0, 20);
          continue;
        }
        if (allPresent(state)) {
          post({ type: 'complete', at: performance.timeOrigin + performance.now() });
          return;
        }
        Atomics.wait(idle, 0, 0, 1); // the fault thread is installing the last pages
        continue;
      }
      const head = inflight[0];
      const run = channel!.readRun();
      if (run.id !== head.id || run.region !== state.mappings[head.mapping].regionId)
        throw new PostcopyError('ERR_PROTOCOL', `push reply ${run.id} does not match request ${head.id}`);
      if (run.flags & Flag.END) {
        // The next request is the oldest now, before this run's copy wakes a reader that runs on into it.
        inflight.shift();
        if (inflight.length) Atomics.store(state.counters, Counter.PUSH_HEAD, inflight[0].id);
      }
      corrupt.length = 0;
      const missingFrom = installRun(channel!, run, head.mapping, Counter.PUSHED, 'push', corrupt);
      if (missingFrom >= 0) cursor.retry(head.mapping, missingFrom, run.firstPage + run.count - missingFrom);
      for (const p of corrupt) cursor.retry(head.mapping, p, 1);
      if (Atomics.load(state.counters, Counter.AWAITING)) native.eventfdSignal(config.pushFd);
    } catch (err) {
      if (!(err instanceof ConnectionLost)) throw err;
      resume(err);
      resend = true;
    }
  }
}

/** The current connection to the source; replaced when the thread resumes after losing it. */
let channel: PageChannel | null = null;

function connect(): PageChannel {
  const c = config.criu
    ? new CriuPageChannel(config.criu.connection, config.criu.pid, config.criu.regions, config.criu.lazy)
    : new BlockingChannel(config.endpoint!, config.pageSize, config.replyTimeoutMs, config.key, config.checksums);
  try {
    c.handshake();
    validate(c);
    return c;
  } catch (err) {
    c.close();
    throw err;
  }
}

/** A failed connect or handshake worth another try: the source may be back in a moment. */
const retryable = (err: unknown) => err instanceof ConnectionLost || typeof (err as { errno?: unknown }).errno === 'number';

/**
 * The connection broke. Reconnects with back-off (10 ms, doubling, at most 1 s) until resumeMs has
 * passed; the caller then asks again for what it had asked. Faulting threads stay blocked meanwhile.
 */
function resume(lost: ConnectionLost): PageChannel {
  channel?.close();
  channel = null;
  if (stopping()) throw lost;
  if (!config.resumeMs) throw new PostcopyError('ERR_PEER_CLOSED', `${lost.message} (this source cannot be resumed)`);
  const giveUpAt = performance.now() + config.resumeMs;
  for (let delay = 10; ; delay = Math.min(1000, delay * 2)) {
    try {
      channel = connect();
      Atomics.add(state.counters, Counter.RESUMES, 1);
      return channel;
    } catch (err) {
      if (!retryable(err)) throw err;
      if (stopping() || performance.now() + delay > giveUpAt)
        throw new PostcopyError('ERR_PEER_CLOSED', `the source stayed unreachable for ${config.resumeMs} ms (${lost.message}; last try: ${(err as Error).message})`);
    }
    Atomics.wait(state.counters, Counter.STOP, 0, delay);
  }
}

function warmUp(c: PageChannel): void {
  c.sendGet(0, state.mappings[0].regionId, 0, 1, 0);
  for (;;) {
    const run = c.readRun();
    if (run.id !== 0) throw new PostcopyError('ERR_PROTOCOL', `reply ${run.id} to the warm-up GET 0`);
    if (run.flags & Flag.END) return;
  }
}

function main(): void {
  if (config.cpuMask) native.setAffinity(config.cpuMask);
  let latency: LatencySummary | undefined;
  let touched: number[] | undefined;
  try {
    try {
      channel = connect();
    } catch (err) {
      // A source that is slow to answer, or not up yet: the same patience as after a lost connection.
      if (!retryable(err)) throw err;
      resume(err instanceof ConnectionLost ? err : new ConnectionLost((err as Error).message));
    }
    // One page fetched and dropped before the uffd comes: the first real faults (criu restore's,
    // within its downtime) then run through code both ends have run once.
    if (config.role === 'fault' && !config.criu && state.mappings.length) warmUp(channel!);
    post({ type: 'ready' });
    while (Atomics.load(state.counters, Counter.GO) === 0) Atomics.wait(state.counters, Counter.GO, 0);
    if (config.uffd < 0) config.uffd = Atomics.load(state.counters, Counter.UFFD);
    if (config.role === 'fault') {
      const loop = new FaultLoop();
      touched = loop.touched ?? undefined;
      latency = loop.run();
      // Every fork event has been read and posted: the BYE waits until their handlers are connected.
      post({ type: 'drained' });
      Atomics.wait(state.counters, Counter.BYE_OK, 0, BYE_WAIT_MS);
    } else pushLoop();
    channel?.bye(allPresent(state) ? ByeReason.DONE : ByeReason.ABORT);
  } catch (err) {
    const e = err as PostcopyError;
    const remote = err instanceof RemoteError ? { remoteCode: err.remoteCode, remoteMessage: err.remoteMessage } : {};
    post({ type: 'fatal', code: e.code ?? 'ERR_UFFD', message: e.message, ...remote });
    channel?.bye(config.exitIsDone && e.code === 'ERR_TARGET_GONE' ? ByeReason.DONE : ByeReason.ABORT);
  } finally {
    channel?.close();
    post({ type: 'stopped', latency, touched });
  }
}

main();
