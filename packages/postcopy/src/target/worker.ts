// Fault and push threads. Each owns one blocking connection and never yields to an event loop
// on its hot path: poll(uffd) -> read -> GET -> read reply -> UFFDIO_COPY.
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
  /** after a lost connection, keep reconnecting for this long before giving up (0: give up at once) */
  resumeMs: number;
  /** a reply that brings no byte for this long counts as a lost connection (0: wait forever) */
  replyTimeoutMs: number;
  /** the migration's pre-shared key, when the source asks for one */
  key?: PresharedKey;
  /** ask for, and check, a CRC32C with every page */
  checksums: boolean;
}

export type WorkerMessage =
  | { type: 'ready' }
  /** at: when the last page was in, as performance.timeOrigin + performance.now() (comparable across threads and processes) */
  | { type: 'complete'; at: number }
  /** present: what the child surely has (presentAtFork), taken where the event was read */
  | { type: 'fork'; uffd: number; map: MapSnapshot; present: Uint8Array[] }
  | { type: 'fatal'; code: string; message: string; remoteCode?: string; remoteMessage?: string }
  | { type: 'stopped'; latency?: LatencySummary };

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
 * Only for a page with at most this much of the push's window ahead of it: one further back
 * would hold its reader (a GET served by redis, say) for several ms.
 */
const AWAIT_BYTES_AHEAD = 2 << 20;

interface AwaitedFault {
  pageAddr: number;
  mapping: number;
  page: number;
  t0: number;
}

function faultLoop(): LatencySummary {
  const hist = createHistogram();
  const ps = state.pageSize;
  const uffd = config.uffd;
  const msgSize = C.UFFD_MSG_SIZE;
  const msgs = Buffer.alloc(msgSize * 64);
  let cursor = config.inlinePush ? new PushCursor() : null;
  // Only a separate push thread can bring a page while this thread waits.
  const awaitPush = !cursor && config.pushFd >= 0;
  // pushFd also says that the handler found gaps (Counter.GAPS): this thread then fetches them.
  // The task's pidfd, once the handler knows its pid: a task that exits ends the handler, faults or not.
  const fds = Int32Array.of(uffd, config.stopFd, config.pushFd, -1);
  let gapsSeen = 0;
  const signalBuf = Buffer.alloc(8);
  const batch = Math.max(1, Math.min(config.pushBatch, config.maxGetPages));
  let pushDone = !cursor;
  let lastWoken = -1;
  let nextId = 1;
  let completed = allPresent(state);
  const where: Located = { mapping: -1, page: 0 };
  // Faults that met a map change we had not read yet: their threads are woken to fault again
  // once it is read (or after a moment), and are then resolved at the address that holds.
  const deferred: number[] = [];
  let deferredSince = 0;
  const wakeDeferred = () => {
    for (const addr of deferred) native.uffdWake(uffd, addr, ps);
    deferred.length = 0;
  };
  // Faults on pages a push request is bringing: the push's UFFDIO_COPY wakes their threads.
  let awaiting: AwaitedFault[] = [];
  const corrupt: number[] = [];
  /**
   * GET, then install. Returns the first page it had to leave missing because the map changed under
   * it, or -1; pages that failed their checksum are left missing too, and listed in `corrupt`.
   */
  const fetchOnce = (mi: number, page: number, count: number, flags: number, counter: number): number => {
    // A refetch (see lastWoken) keeps its present bit: the page is counted once, where it first arrived.
    const m = state.mappings[mi];
    const id = nextId++;
    const c = channel!;
    let missingFrom = -1;
    corrupt.length = 0;
    c.sendGet(id, m.regionId, page, count, flags);
    for (;;) {
      const run = c.readRun();
      if (run.id !== id || run.region !== m.regionId || run.firstPage < page || run.firstPage + run.count > page + count)
        throw new PostcopyError('ERR_PROTOCOL', `reply ${run.id} (${run.firstPage}+${run.count}) does not match GET ${id} (${page}+${count})`);
      if (missingFrom < 0) missingFrom = installRun(c, run, mi, counter, 'fault', corrupt);
      if (run.flags & Flag.END) return missingFrom;
    }
  };
  const fetch = (mi: number, page: number, count: number, flags: number, counter: number): number => {
    for (;;) {
      try {
        return fetchOnce(mi, page, count, flags, counter);
      } catch (err) {
        if (!(err instanceof ConnectionLost)) throw err;
        resume(err); // then the whole request again: pages already installed are skipped
      }
    }
  };
  /** Fetches the faulting page until it arrives intact (or the map changes under it). */
  const resolve = (mi: number, page: number, count: number): boolean => {
    for (let attempt = 0; ; attempt++) {
      const missingFrom = fetch(mi, page, count, 0, Counter.FAULTED);
      for (const p of corrupt) cursor?.retry(mi, p, 1);
      if (missingFrom === page) return false;
      if (!corrupt.includes(page)) return true;
      if (attempt >= MAX_REFETCH) throw new PostcopyError('ERR_PROTOCOL', `page ${page} of mapping ${mi} failed its checksum ${attempt + 1} times`);
      count = 1;
    }
  };
  const defer = (pageAddr: number) => {
    if (deferred.length === 0) deferredSince = performance.now();
    deferred.push(pageAddr);
  };
  /** Fetches a missing faulting page (and its read-ahead) here. */
  const fetchForFault = (mi: number, page: number, pageAddr: number) => {
    lastWoken = -1;
    const bits = state.present[mi];
    const limit = Math.min(bits.length, page + 1 + config.readahead, page + config.maxGetPages);
    let end = page + 1;
    while (end < limit && !Atomics.load(bits, end)) end++;
    if (!resolve(mi, page, end - page)) defer(pageAddr);
  };
  const faultServed = (t0: number) => {
    Atomics.add(state.counters, Counter.FAULTS, 1);
    hist.record(Math.max(1, Math.round((performance.now() - t0) * 1e6)));
  };
  /**
   * Awaited faults whose page is in: done (the wake covers a copy that raced the fault). Those the
   * push gave up on (a retry clears the mark) or that waited too long: fetched here.
   */
  const settleAwaited = () => {
    if (!awaiting.length) return;
    const now = performance.now();
    const still: AwaitedFault[] = [];
    for (const a of awaiting) {
      if (Atomics.load(state.present[a.mapping], a.page)) {
        native.uffdWake(uffd, a.pageAddr, ps);
        faultServed(a.t0);
      } else if (now - a.t0 > AWAIT_PUSH_MS || !Atomics.load(state.requested[a.mapping], a.page)) {
        fetchForFault(a.mapping, a.page, a.pageAddr);
        faultServed(a.t0);
      } else still.push(a);
    }
    awaiting = still;
    Atomics.store(state.counters, Counter.AWAITING, awaiting.length);
  };
  // In requests: the oldest one always qualifies.
  const awaitAhead = Math.max(1, Math.floor(AWAIT_BYTES_AHEAD / (config.pushBatch * ps)));
  const pushBringsSoon = (mi: number, page: number) => {
    // Until the ranges are registered the push holds its pages: a fault does not wait on it.
    const tag = Atomics.load(state.requested[mi], page);
    return tag !== 0 && Atomics.load(state.counters, Counter.REGISTERED) !== 0 && requestsAhead(tag, Atomics.load(state.counters, Counter.PUSH_HEAD)) < awaitAhead;
  };
  const pollTimeout = () => {
    let ms = deferred.length ? (pushDone ? 1 : 0) : pushDone ? -1 : 0;
    if (awaiting.length) {
      const left = Math.max(1, Math.ceil(awaiting[0].t0 + AWAIT_PUSH_MS - performance.now()));
      ms = ms < 0 ? left : Math.min(ms, left);
    }
    return ms;
  };
  while (!stopping()) {
    fds[3] = Atomics.load(state.counters, Counter.PIDFD) || -1;
    const ready = native.pollIn(fds, pollTimeout());
    if (ready < 0) throw new PostcopyError('ERR_UFFD', `poll failed: errno ${-ready}`);
    if (ready & 2) break;
    if (ready & 8 && !(ready & 1)) throw new PostcopyError('ERR_TARGET_GONE', 'the target process has exited');
    if (ready & 4) native.readInto(config.pushFd, signalBuf, 0, 8);
    const gaps = Atomics.load(state.counters, Counter.GAPS);
    if (gaps !== gapsSeen) {
      // Pages we had counted as present were not in the task's memory (handler.ts, verifyResident):
      // fetch them here, whether or not a push thread ran.
      gapsSeen = gaps;
      cursor ??= new PushCursor();
      pushDone = false;
      completed = false;
    }
    settleAwaited();
    if (deferred.length && performance.now() - deferredSince > 2) wakeDeferred();
    if (!(ready & 1)) {
      // No fault waiting: push one batch on this connection, then look again.
      if (ready === 0 && cursor) {
        const next = cursor.next(batch);
        if (!next) pushDone = true;
        else {
          const missingFrom = fetch(next.mapping, next.page, next.count, Flag.BACKGROUND, Counter.PUSHED);
          if (missingFrom >= 0) cursor.retry(next.mapping, missingFrom, next.page + next.count - missingFrom);
          for (const p of corrupt) cursor.retry(next.mapping, p, 1);
        }
      }
    } else {
      // Memory events first: they change where pages are, and each fault read with them is
      // resolved against the map as it stands after them.
      beginMapChange(state);
      let n: number;
      let events = 0;
      try {
        // A new epoch before each read: a fork read now sees what was installed before it (presentAtFork).
        Atomics.add(state.counters, Counter.EPOCH, 1);
        n = native.readInto(uffd, msgs, 0, msgs.length);
        for (let off = 0; off + msgSize <= n; off += msgSize) {
          if (msgs[off] !== C.UFFD_EVENT_PAGEFAULT) {
            memoryEvent(msgs[off], msgs, off);
            events++;
          }
        }
      } finally {
        endMapChange(state);
      }
      if (n === -C.EAGAIN) continue;
      if (n <= 0) throw new PostcopyError('ERR_UFFD', `reading the userfaultfd failed: ${n === 0 ? 'closed' : `errno ${-n}`}`);
      if (events && deferred.length) wakeDeferred();
      if (events && awaiting.length) {
        // Their pages may have moved: let them fault again, against the new map.
        for (const a of awaiting) {
          native.uffdWake(uffd, a.pageAddr, ps);
          Atomics.add(state.counters, Counter.FAULTS, 1);
        }
        awaiting = [];
      }
      for (let off = 0; off + msgSize <= n; off += msgSize) {
        if (msgs[off] !== C.UFFD_EVENT_PAGEFAULT) continue;
        Atomics.add(state.counters, Counter.EVENTS, 1);
        const t0 = performance.now();
        const addr = msgs.readUInt32LE(off + 16) + msgs.readUInt32LE(off + 20) * 0x100000000;
        const pageAddr = addr - (addr % ps);
        const mi = locate(state, addr, where).mapping;
        if (mi < 0) {
          // Registered memory the source never had: the part an mremap or brk grew. Fresh memory reads as zero.
          const r = native.uffdZeropage(uffd, pageAddr, ps, false);
          if (r === -C.EAGAIN) defer(pageAddr);
          else if (r < 0) native.uffdWake(uffd, pageAddr, ps);
        } else {
          const page = where.page;
          Atomics.store(state.counters, Counter.HINT_MAPPING, mi);
          Atomics.store(state.counters, Counter.HINT_PAGE, page);
          Atomics.add(state.counters, Counter.HINT_SEQ, 1);
          if (Atomics.load(state.present[mi], page) && pageAddr !== lastWoken) {
            // Installed by the push meanwhile: let the fault retry. If the same page faults right
            // again, the bit lied (a fork copied it from a parent where it arrived too late): fetch.
            native.uffdWake(uffd, pageAddr, ps);
            lastWoken = pageAddr;
          } else if (awaitPush && pageAddr !== lastWoken && pushBringsSoon(mi, page)) {
            awaiting.push({ pageAddr, mapping: mi, page, t0 });
            continue; // served once its page is in (settleAwaited)
          } else fetchForFault(mi, page, pageAddr);
        }
        faultServed(t0);
      }
      // After publishing the count, look at the pages once more: a push that installed one before
      // it could see the count did not signal (both sides use sequentially consistent atomics).
      Atomics.store(state.counters, Counter.AWAITING, awaiting.length);
      settleAwaited();
    }
    if (!completed && allPresent(state)) {
      completed = true;
      post({ type: 'complete', at: performance.timeOrigin + performance.now() });
    }
  }
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

const u64At = (buf: Buffer, off: number) => buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * 0x100000000;

/**
 * The process changed its memory map. REMOVE (MADV_DONTNEED) and UNMAP: those pages must never be
 * fetched, they read as zero or are gone; after REMOVE the range is unregistered so the kernel
 * zero-fills it. REMAP: the pages moved, missing ones included; they are fetched for their new
 * place. FORK: the child gets a handler of its own, starting from this map.
 */
function memoryEvent(event: number, msgs: Buffer, off: number): void {
  if (event === C.UFFD_EVENT_REMOVE || event === C.UFFD_EVENT_UNMAP) {
    const start = u64At(msgs, off + 8);
    const end = u64At(msgs, off + 16);
    dropRange(state, start, end, event === C.UFFD_EVENT_UNMAP);
    if (event === C.UFFD_EVENT_REMOVE) {
      try {
        native.uffdUnregister(config.uffd, start, end - start);
      } catch {
        // the process is gone: nothing left to protect
      }
    }
    return;
  }
  if (event === C.UFFD_EVENT_REMAP) {
    moveRange(state, u64At(msgs, off + 8), u64At(msgs, off + 16), u64At(msgs, off + 24));
    return;
  }
  if (event === C.UFFD_EVENT_FORK) {
    // The child's userfaultfd arrived in this process: the handler's main thread serves it.
    post({ type: 'fork', uffd: msgs.readUInt32LE(off + 8), map: snapshotMap(state), present: presentAtFork(state) });
    return;
  }
  throw new PostcopyError('ERR_UFFD', `the process sent userfaultfd event ${event}, which this handler does not know`);
}

/** Picks the next run of missing pages, starting after the latest fault (pre-paging), then wrapping. */
class PushCursor {
  mapping = 0;
  page = 0;
  #seenSeq = -1;
  /** pages already asked for (shared: a fault on one waits for the push): a hint that jumps back must not ask again */
  #requested = state.requested;

  /** `tag`: what to mark the pages asked for with (see requestTag) */
  next(batch: number, tag = 1): { mapping: number; page: number; count: number } | null {
    const seq = Atomics.load(state.counters, Counter.HINT_SEQ);
    if (seq !== this.#seenSeq && seq > 0) {
      this.#seenSeq = seq;
      this.mapping = Atomics.load(state.counters, Counter.HINT_MAPPING);
      this.page = Atomics.load(state.counters, Counter.HINT_PAGE) + 1;
    }
    const total = state.mappings.length;
    for (let scanned = 0; scanned <= total; scanned++) {
      const bits = state.present[this.mapping];
      const asked = this.#requested[this.mapping];
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
    this.#requested[mapping].fill(0, page, page + count);
    if (mapping < this.mapping || (mapping === this.mapping && page < this.page)) {
      this.mapping = mapping;
      this.page = page;
    }
  }
}

function pushLoop(): void {
  const cursor = new PushCursor();
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
  while (!Atomics.load(state.counters, Counter.REGISTERED) && !stopping()) Atomics.wait(state.counters, Counter.REGISTERED, 0, 20);
  while (!stopping()) {
    try {
      if (resend) {
        resend = false;
        for (const r of inflight) ask(r); // whole requests again: installed pages are skipped
      }
      while (inflight.length < config.pushWindow) {
        const next = cursor.next(batch, requestTag(nextId));
        if (!next) break;
        const request = { id: nextId++, ...next };
        inflight.push(request);
        if (inflight.length === 1) Atomics.store(state.counters, Counter.PUSH_HEAD, request.id);
        ask(request);
      }
      if (inflight.length === 0) {
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
  if (!config.resumeMs || stopping()) throw lost;
  const giveUpAt = performance.now() + config.resumeMs;
  for (let delay = 10; ; delay = Math.min(1000, delay * 2)) {
    try {
      channel = connect();
      Atomics.add(state.counters, Counter.RESUMES, 1);
      return channel;
    } catch (err) {
      if (!retryable(err)) throw err;
      if (stopping() || performance.now() + delay > giveUpAt)
        throw new ConnectionLost(`the source stayed unreachable for ${config.resumeMs} ms (${lost.message}; last try: ${(err as Error).message})`);
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
    if (config.role === 'fault') latency = faultLoop();
    else pushLoop();
    channel?.bye(allPresent(state) ? ByeReason.DONE : ByeReason.ABORT);
  } catch (err) {
    const e = err as PostcopyError;
    const remote = err instanceof RemoteError ? { remoteCode: err.remoteCode, remoteMessage: err.remoteMessage } : {};
    post({ type: 'fatal', code: e.code ?? 'ERR_UFFD', message: e.message, ...remote });
    channel?.bye(ByeReason.ABORT);
  } finally {
    channel?.close();
    post({ type: 'stopped', latency });
  }
}

main();
