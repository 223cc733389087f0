// The fault handler: owns a userfaultfd, runs a fault thread and a push thread, reports progress.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { PostcopyError, RemoteError, type ErrorCode } from '../errors.js';
import { C, native } from '../native/index.js';
import { DEFAULT_PAGE_SIZE, type RegionInfo } from '../protocol/frames.js';
import type { Endpoint } from '../transport/transport.js';
import { TlsBridge, type TlsMaterial } from '../transport/tls.js';
import type { PresharedKey } from '../protocol/auth.js';
import { silentLogger, type Logger } from '../util/log.js';
import { residentPages } from '../util/pagemap.js';
import { childrenOf, statFields } from '../util/proctree.js';
import { parseMaps } from '../source/live-process.js';
import { waitReadable } from '../util/wait-readable.js';
import { prestartThreads, siblingModule, startThread } from '../util/thread.js';
import { allPresent, Counter, createSharedState, type MapSnapshot, type Mapping, type SharedState } from './shared-state.js';
import { verifyResident } from './verify.js';
import type { LatencySummary, WorkerConfig, WorkerMessage } from './worker.js';
import type { CriuConnection } from './criu-channel.js';
import { decodeKeeperHandover, encodeKeeperMappings, encodeKeeperPid, encodeKeeperRecoverAt, KEEPER_DONE, KEEPER_HANDOVER_HEAD, KeeperTag } from '../protocol/keeper.js';
import { checkPushPriority, type PushPriority } from '../util/push-priority.js';

export interface FaultHandlerOptions {
  /** the source; none with `criu`, whose connection is given */
  endpoint?: Endpoint;
  /**
   * a userfaultfd with every mapping registered in MISSING mode; the handler owns it from now on.
   * Leave it out to start the threads (and connect them) before it exists, then call attach().
   */
  uffd?: number;
  mappings: Mapping[];
  pageSize?: number;
  /** extra pages fetched after a faulting page (default 0) */
  readahead?: number;
  /** background push of every remaining page (default true) */
  push?: boolean;
  /**
   * Page addresses to install before any other, in this order: with the push, it starts with them;
   * without it, they are installed alone (the pages the kernel reads for others, which never fault).
   */
  pushFirst?: number[];
  /**
   * A fault on a page that a push request in flight is bringing waits for it, instead of fetching
   * it, if at most this much of the push's window is ahead of that request (the oldest always
   * qualifies). Default 0: a fault fetches its page itself, unless the page before it is in already
   * (a scanner that caught up with the push): that one waits for the oldest request. A wait
   * saves sending the page twice, but a 2 MiB request ahead held a random reader (a redis GET) for
   * ms: redis GET p99 during post-copy was 1.2–1.8 ms with 2 MiB, 1.1–1.3 ms with none, stock
   * 1.1–1.2 ms (docs/benchmarks.md, session 12).
   */
  awaitPushBytes?: number;
  /** how far the push thread lowers itself (util/push-priority.ts; default normal) */
  pushPriority?: PushPriority;
  /** record the pages that fault while missing, in order: the report's `touched` (a working set to replay) */
  recordTouches?: boolean;
  pushBatch?: number;
  pushWindow?: number;
  /** the largest GET the source accepts, in pages (default: 4 MiB worth) */
  maxGetPages?: number;
  /** a process whose memory this is: killed on a fatal error, so it never runs on missing pages */
  targetPid?: number | (() => number | undefined);
  /**
   * The source is CRIU's lazy page server (`criu dump --lazy-pages`) for task `pid`: `regions` are
   * its lazy VMAs, lazy[r][p] marks the pages CRIU holds. It serves one connection, shared by every
   * task of the tree (CriuPageServerConnection), so the fault thread also does the push. A child the
   * task forks asks for its parent's pages, which CRIU keeps for as long as the connection lasts.
   */
  criu?: { pid: number; regions: RegionInfo[]; lazy: Uint8Array[]; connection: CriuConnection };
  /**
   * One thread, which also pushes between faults, instead of a fault and a push thread: for fork
   * children, which come in storms and often live briefly (a thread's start costs ~0.1 s of CPU).
   */
  singleThread?: boolean;
  /** for a fork child: its pid, once found among its parent's children (undefined: not found); its targetPid then */
  forkPid?: Promise<number | undefined>;
  /**
   * A fork child's handler: when its task exits before every page came, it tells the source DONE
   * (nothing it lacks will be read), not ABORT. A source counts a served connection's ABORT only
   * once a connection accepted after it said DONE: a storm's last child that exited early would
   * otherwise hold the source's completion for ever.
   */
  forkChild?: boolean;
  /** pages already present, nonzero (a forked child starts with what it surely has: presentAtFork) */
  initialPresent?: Uint8Array[];
  /** where the pages are (a forked child starts from its parent's map at the fork) */
  initialMap?: MapSnapshot;
  /**
   * After a lost connection (a reset, EOF without BYE, no reply within replyTimeoutMs), keep
   * reconnecting this long, with faulting threads blocked, before failing (default 30 s; CRIU's
   * page server cannot be reconnected, so 0 there). A source that says BYE or ERROR is not retried.
   */
  resumeTimeoutMs?: number;
  /** a reply that brings no byte for this long counts as a lost connection (default 10 s) */
  replyTimeoutMs?: number;
  /**
   * With a targetPid: a small keeper process (native/pckeeper.c) holds a copy of the uffd, and
   * SIGKILLs the target if this process dies without releasing it, before its missing pages could
   * read as zero (default true).
   */
  keeper?: boolean;
  /**
   * If this process dies, its keeper waits this long on this Unix socket path for another handler
   * to take the migration over (FaultHandler.recover, `attach --recover`) before it kills the target.
   */
  recoverAt?: { path: string; graceMs: number };
  /** a keeper already holding this uffd (recover() passes the connection it took over) */
  keeperSocket?: number;
  /** for a tls:// endpoint: this target's certificate and key, and the CA that signed the source's */
  tls?: TlsMaterial;
  /** the migration's pre-shared key (protocol/auth.ts), for a source that asks for one */
  key?: PresharedKey;
  /**
   * A CRC32C with every page, checked here; a page that fails is fetched again (default true).
   * Worth its CPU where pages cross a wire; where both ends share one kernel (loopback, a unix
   * socket) the pages are only ever copied by it, and the CRCs are ~10% of a push's CPU.
   */
  checksums?: boolean;
  /** CPU masks for the threads (0 = unpinned) */
  faultCpuMask?: number;
  pushCpuMask?: number;
  logger?: Logger;
}

export interface Progress {
  pages: number;
  present: number;
  faulted: number;
  pushed: number;
  zero: number;
  raced: number;
  /** pages that failed their checksum on arrival and were fetched again */
  corrupt: number;
  /** reconnections after a lost connection */
  resumes: number;
  /** pages the process dropped or unmapped while they were missing: never fetched */
  dropped: number;
  faults: number;
  /** faults served before the push was let go: during `criu restore`, and the tasks' very first */
  faultsBeforePush: number;
}

export interface HandlerReport extends Progress {
  complete: boolean;
  /**
   * When the last page was installed, as performance.timeOrigin + performance.now() of the thread
   * that installed it: a high-resolution wall-clock time in ms, comparable across processes.
   */
  completedAt?: number;
  /** the process exited before every page arrived (nothing lost: nobody will read them) */
  exited?: boolean;
  /**
   * Pages counted as present that the task did not have when it looked complete (an internal
   * error, fetched again before the uffd was let go); 0 when checked and none.
   */
  gaps: number;
  /** whether the task's memory was checked against its pagemap before the uffd was let go */
  verified: boolean;
  /** the task's pid, where known (a forked child's is found among its parent's children) */
  pid?: number;
  /** recordTouches: the addresses of the pages that faulted while missing, in order */
  touched?: number[];
  /** it exited early, killed by this signal (as far as its zombie could still be seen) */
  exitSignal?: number;
  latency: LatencySummary | null;
}

const workerUrl = siblingModule(import.meta.url, 'worker');
/** How often a task may still lack pages it was counted as having before its handler gives up on it. */
const MAX_VERIFY_ROUNDS = 3;
/** How long a fork child's pid is looked for among its parent's children. */
const FIND_CHILD_MS = 2000;
/** Push requests in flight are told apart by a byte (shared-state.ts: requestTag). */
const MAX_PUSH_WINDOW = 64;

/** Throws ERR_INVALID_ARG for a push batch or window the handler cannot use. */
export function checkPushSettings(o: { pushBatch?: number; pushWindow?: number }): void {
  if (o.pushWindow !== undefined && !(Number.isInteger(o.pushWindow) && o.pushWindow >= 1 && o.pushWindow <= MAX_PUSH_WINDOW))
    throw new PostcopyError('ERR_INVALID_ARG', `pushWindow must be 1 to ${MAX_PUSH_WINDOW} requests, not ${o.pushWindow}`);
  if (o.pushBatch !== undefined && !(Number.isInteger(o.pushBatch) && o.pushBatch >= 1))
    throw new PostcopyError('ERR_INVALID_ARG', `pushBatch must be a positive number of pages, not ${o.pushBatch}`);
}

let bridges = 0;

/** What a keeper holds for a successor. */
interface KeptMigration {
  pageSize: number;
  mappings: Mapping[];
}

/** native/pckeeper.c, built by node-gyp with the addon. */
function keeperBinary(): string {
  return fileURLToPath(new URL('../../build/Release/pckeeper', import.meta.url));
}

export class FaultHandler extends EventEmitter {
  readonly pageSize: number;
  #state: SharedState;
  #options: FaultHandlerOptions;
  #stopFd: number;
  /** the push thread signals it when it installed pages while faults wait for them */
  #pushFd: number;
  #uffd: number;
  #keeper: { sock: number; timer: NodeJS.Timeout | null } | null = null;
  #bridge: TlsBridge | null = null;
  #children: Promise<FaultHandler>[] = [];
  /** #finish is running: every page looked present, and the task's memory is being checked */
  #finishing = false;
  #verifyRounds = 0;
  #verified = false;
  #exitSignal: number | undefined;
  /** a pidfd of the target, once its pid is known: the fault thread watches it (Counter.PIDFD) */
  #pidfd = -1;
  /** a fork child's pid, once found (see #findChild), and the search for it */
  #foundPid: number | undefined;
  #pidSearch: Promise<unknown> | null = null;
  #exitedEarly = false;
  #workers: Worker[] = [];
  #exited: Promise<void>[] = [];
  #latency: LatencySummary | null = null;
  #touched: number[] | undefined;
  #completedAt: number | undefined;
  #fatal: PostcopyError | null = null;
  #stopped: Promise<HandlerReport> | null = null;
  #done: Promise<HandlerReport>;
  #resolveDone!: (r: HandlerReport) => void;
  #rejectDone!: (e: Error) => void;
  #log: Logger;

  private constructor(options: FaultHandlerOptions) {
    super();
    this.#options = options;
    this.pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    this.#state = createSharedState(this.pageSize, options.mappings, options.initialPresent, options.initialMap);
    this.#uffd = options.uffd ?? -1;
    this.#stopFd = native.eventfd();
    this.#pushFd = native.eventfd();
    // poll(2) on a blocking userfaultfd always reports POLLERR, so the fault thread needs it non-blocking.
    if (this.#uffd >= 0) {
      native.setBlocking(this.#uffd, false);
      this.#startKeeper();
      this.#state.counters[Counter.REGISTERED] = 1;
    }
    this.#log = options.logger ?? silentLogger;
    this.#done = new Promise((resolve, reject) => {
      this.#resolveDone = resolve;
      this.#rejectDone = reject;
    });
    this.#done.catch(() => {}); // observed through done()
    FaultHandler.#live.add(this);
    this.#pidSearch = options.forkPid?.then((pid) => {
      this.#foundPid = pid;
      this.#targetPid(); // watched from now on
      if (!pid) this.#log.warn('the pid of a forked child was not found: it is served without a check of its memory at the end');
    }) ?? null;
  }

  /** Starts `count` fault/push threads ahead, to be used by the next handlers (see util/thread.ts). */
  static prestartThreads(count: number): Promise<void> {
    return prestartThreads(workerUrl, count);
  }

  /** Starts the threads and resolves once both are connected to the source. */
  static async start(options: FaultHandlerOptions): Promise<FaultHandler> {
    checkPushSettings(options);
    const handler = new FaultHandler(options);
    await handler.#spawn();
    return handler;
  }

  get progress(): Progress {
    const c = this.#state.counters;
    return {
      pages: c[Counter.TOTAL],
      present: Atomics.load(c, Counter.PRESENT),
      faulted: Atomics.load(c, Counter.FAULTED),
      pushed: Atomics.load(c, Counter.PUSHED),
      zero: Atomics.load(c, Counter.ZERO),
      raced: Atomics.load(c, Counter.RACED),
      corrupt: Atomics.load(c, Counter.CORRUPT),
      resumes: Atomics.load(c, Counter.RESUMES),
      dropped: Atomics.load(c, Counter.DROPPED),
      faults: Atomics.load(c, Counter.FAULTS),
      faultsBeforePush: Atomics.load(c, Counter.EARLY_FAULTS),
    };
  }

  /**
   * Drops pages of a mapping (MADV_DONTNEED) and marks them missing, so the next touch faults
   * again. For repeated measurements: nothing may touch that range meanwhile. Blocks until the
   * fault thread has finished its bookkeeping for the faults already resolved (the faulting
   * thread resumes on UFFDIO_COPY, before its page is marked present).
   */
  evict(mapping: number, firstPage = 0, count?: number): void {
    const m = this.#state.mappings[mapping];
    const bits = this.#state.present[mapping];
    if (!m) throw new PostcopyError('ERR_INVALID_ARG', `no mapping ${mapping}`);
    const n = count ?? bits.length - firstPage;
    if (firstPage < 0 || n < 0 || firstPage + n > bits.length) throw new PostcopyError('ERR_OUT_OF_RANGE', `pages ${firstPage}+${n} outside mapping ${mapping}`);
    const c = this.#state.counters;
    const deadline = performance.now() + 1000;
    for (let seen = Atomics.load(c, Counter.FAULTS); seen !== Atomics.load(c, Counter.EVENTS); seen = Atomics.load(c, Counter.FAULTS)) {
      if (performance.now() > deadline) throw new PostcopyError('ERR_TIMEOUT', 'the fault thread did not settle within 1 s');
      Atomics.wait(c, Counter.FAULTS, seen, 1);
    }
    native.madvise(m.localStart + firstPage * this.pageSize, n * this.pageSize, C.MADV_DONTNEED);
    let cleared = 0;
    for (let p = firstPage; p < firstPage + n; p++) cleared += Atomics.exchange(bits, p, 0) ? 1 : 0;
    Atomics.sub(this.#state.counters, Counter.PRESENT, cleared);
  }

  /** Resolves when every page is present (the source has been told it may let go); rejects on a fatal error. */
  done(): Promise<HandlerReport> {
    return this.#done;
  }

  async #spawn(): Promise<void> {
    const o = this.#options;
    let endpoint = o.endpoint;
    if (!endpoint && !o.criu) throw new PostcopyError('ERR_INVALID_ARG', 'a fault handler needs a source: an endpoint, or a CRIU page server connection');
    if (endpoint?.kind === 'tls') {
      // Threads speak plain sockets: a local bridge carries each of their connections over TLS.
      if (!o.tls) throw new PostcopyError('ERR_INVALID_ARG', 'a tls:// source needs this target\'s certificate, key and CA');
      this.#bridge = await TlsBridge.start(join(tmpdir(), `postcopy-tls-${process.pid}-${++bridges}.sock`), endpoint, o.tls);
      endpoint = { kind: 'unix', path: this.#bridge.path };
    }
    const maxGetPages = o.maxGetPages ?? Math.max(1, Math.floor((4 << 20) / this.pageSize));
    const push = o.push ?? true;
    const first = o.pushFirst ?? [];
    const base: Omit<WorkerConfig, 'role' | 'cpuMask'> = {
      endpoint,
      uffd: this.#uffd,
      stopFd: this.#stopFd,
      pushFd: this.#pushFd,
      pageSize: this.pageSize,
      mappings: this.#state.mappings,
      present: this.#state.present,
      requested: this.#state.requested,
      counters: this.#state.counters,
      extents: this.#state.extents,
      readahead: o.readahead ?? 0,
      maxGetPages,
      pushBatch: o.pushBatch ?? Math.max(1, Math.floor((256 << 10) / this.pageSize)),
      pushWindow: o.pushWindow ?? 4,
      resumeMs: o.criu ? 0 : (o.resumeTimeoutMs ?? 30_000),
      replyTimeoutMs: o.replyTimeoutMs ?? 10_000,
      key: o.key,
      checksums: o.checksums ?? true,
      awaitPushBytes: o.awaitPushBytes ?? 0,
      exitIsDone: !!o.forkChild,
      pushOrder: { first, onlyFirst: !push },
      recordTouches: o.recordTouches,
      pushPriority: o.pushPriority === undefined ? undefined : checkPushPriority(o.pushPriority),
    };
    const oneThread = !!o.criu || !!o.singleThread;
    // Without a push, the fault thread installs the pages given first itself, between faults.
    const inlinePush = (oneThread && push) || (!push && first.length > 0);
    const roles: WorkerConfig[] = [{ ...base, role: 'fault', cpuMask: o.faultCpuMask ?? 0, criu: o.criu, inlinePush }];
    if (push && !oneThread) roles.push({ ...base, role: 'push', cpuMask: o.pushCpuMask ?? 0 });
    const ready = roles.map(
      (config) =>
        new Promise<void>((resolve, reject) => {
          const worker = startThread(workerUrl, config);
          this.#workers.push(worker);
          this.#exited.push(new Promise<void>((done) => worker.once('exit', () => done())));
          let isReady = false;
          worker.on('message', (m: WorkerMessage) => {
            if (m.type === 'ready') {
              isReady = true;
              resolve();
            } else if (m.type === 'complete') {
              this.#completedAt ??= m.at;
              this.#onComplete();
            }
            else if (m.type === 'fork') this.#onFork(m.uffd, m.map, m.present);
            else if (m.type === 'fatal') {
              const fail = () => {
                // Before the threads are up, a TLS failure is why: say so (after that, it is a lost connection).
                const tlsFailure = !isReady && connectionEnded(m.code) ? this.#bridge?.lastError : null;
                const err = m.remoteCode
                  ? new RemoteError(m.remoteCode as ErrorCode, m.remoteMessage ?? m.message)
                  : tlsFailure
                    ? new PostcopyError('ERR_AUTH', `TLS with the source failed: ${tlsFailure.message}`)
                    : new PostcopyError(m.code as ErrorCode, `${config.role} thread: ${m.message}`);
                if (!isReady) reject(err);
                this.#onFatal(err);
              };
              // TLS 1.3 refuses a client certificate after the client's handshake is done: the
              // thread may see its connection end before the bridge hears why. Give it a moment.
              if (!isReady && connectionEnded(m.code) && this.#bridge && !this.#bridge.lastError) setTimeout(fail, 200);
              else fail();
            } else if (m.type === 'drained') {
              void Promise.allSettled(this.#children).then(() => {
                Atomics.store(this.#state.counters, Counter.BYE_OK, 1);
                Atomics.notify(this.#state.counters, Counter.BYE_OK);
              });
            } else if (m.type === 'stopped') {
              if (m.latency) this.#latency = m.latency;
              if (m.touched) this.#touched = m.touched;
            }
          });
          worker.on('error', (err) => {
            const e = new PostcopyError('ERR_UFFD', `${config.role} thread crashed: ${err.message}`, { cause: err });
            if (!isReady) reject(e);
            this.#onFatal(e);
          });
        }),
    );
    try {
      await Promise.all(ready);
    } catch (err) {
      await this.stop();
      throw err;
    }
    if (this.#uffd >= 0) this.#begin();
  }

  /**
   * Hands over the userfaultfd of a handler started without one; its threads are connected already.
   * `registered: false`: its ranges get registered later (criu restore's restorer does it after
   * handing the uffd over); call registered() once they are.
   */
  attach(uffd: number, o: { registered?: boolean } = {}): void {
    if (this.#uffd >= 0) throw new PostcopyError('ERR_INVALID_ARG', 'this handler has its userfaultfd already');
    this.#uffd = uffd;
    native.setBlocking(uffd, false);
    Atomics.store(this.#state.counters, Counter.UFFD, uffd);
    if (o.registered !== false) this.registered();
    this.#log.info({ missing: this.#state.counters[Counter.TOTAL] - Atomics.load(this.#state.counters, Counter.PRESENT) }, 'userfaultfd attached');
    this.#begin();
  }

  /**
   * The memory is registered, but the push as a whole is to wait (registered() comes later): the
   * pages given first (pushFirst) may go in now.
   */
  pushFirstNow(): void {
    Atomics.store(this.#state.counters, Counter.FIRST_GO, 1);
    Atomics.notify(this.#state.counters, Counter.REGISTERED); // the push waits there
  }

  /**
   * Every range is registered with the uffd now: the push may install anywhere (see attach). The
   * keeper starts now, not at attach: its fork of this process took CPU from `criu restore`.
   */
  registered(): void {
    Atomics.store(this.#state.counters, Counter.REGISTERED, 1);
    Atomics.notify(this.#state.counters, Counter.REGISTERED);
    if (!this.#stopped && this.#uffd >= 0 && !this.#keeper) this.#startKeeper();
  }

  /** Hands a copy of the uffd to a keeper process, and names the target to it once known. */
  #startKeeper(): void {
    if (this.#options.keeper === false || (this.#options.targetPid === undefined && !this.#options.forkPid)) return;
    if (this.#options.keeperSocket !== undefined) return this.#useKeeper(this.#options.keeperSocket, false);
    const [ours, theirs] = native.socketpair(true);
    const child = spawn(keeperBinary(), [], { stdio: ['ignore', 'ignore', 'inherit', theirs] });
    native.close(theirs);
    child.on('error', (err) => this.#log.warn({ err }, 'the uffd keeper did not start: a crash of this process would let the target read zeros'));
    child.unref();
    this.#useKeeper(ours, true);
  }

  /** Tells the keeper what it keeps: the uffd (unless it has it), the mappings, where to wait for a successor, the pid. */
  #useKeeper(sock: number, sendUffd: boolean): void {
    const send = (b: Buffer) => native.writeAll(sock, b, 0, b.length);
    if (sendUffd) native.sendFd(sock, this.#uffd, Buffer.of(KeeperTag.UFFD));
    send(encodeKeeperMappings(Buffer.from(JSON.stringify({ pageSize: this.pageSize, mappings: this.#state.mappings } satisfies KeptMigration))));
    const recover = this.#options.recoverAt;
    if (recover) send(encodeKeeperRecoverAt(recover.path, recover.graceMs));
    const announce = () => {
      const pid = this.#targetPid();
      if (!pid) return false;
      send(encodeKeeperPid(pid));
      return true;
    };
    const timer = announce() ? null : setInterval(() => announce() && clearInterval(timer!), 20);
    timer?.unref();
    this.#keeper = { sock, timer };
  }

  /**
   * Takes over a migration whose handler died: its keeper waits on `path` (see recoverAt) and hands
   * over the uffd, the target's pid and the mappings. Pages already in are found in the target's
   * /proc/PID/pagemap. Faults that waited meanwhile are served in order.
   */
  static async recover(path: string, options: Omit<FaultHandlerOptions, 'uffd' | 'mappings' | 'pageSize' | 'targetPid' | 'keeperSocket'>, timeoutMs = 10_000): Promise<FaultHandler> {
    const sock = native.unixConnect(path);
    try {
      await waitReadable(sock, timeoutMs, 'the keeper\'s userfaultfd');
      const tag = Buffer.alloc(1);
      const { fd: uffd } = native.recvFd(sock, tag);
      if (uffd < 0 || tag[0] !== KeeperTag.UFFD) throw new PostcopyError('ERR_PROTOCOL', `the keeper at ${path} sent no userfaultfd`);
      const head = Buffer.alloc(KEEPER_HANDOVER_HEAD);
      if (native.readFull(sock, head, 0, head.length) !== head.length) throw new PostcopyError('ERR_PROTOCOL', `the keeper at ${path} ended early`);
      const { pid, mappingsLength } = decodeKeeperHandover(head);
      const describe = Buffer.alloc(mappingsLength);
      if (native.readFull(sock, describe, 0, describe.length) !== describe.length) throw new PostcopyError('ERR_PROTOCOL', `the keeper at ${path} ended early`);
      const kept = JSON.parse(describe.toString('utf8')) as KeptMigration;
      const initialPresent = kept.mappings.map((m) => residentPages(pid, m.localStart, m.length, kept.pageSize, 'ERR_TARGET_GONE'));
      const handler = await FaultHandler.start({ ...options, uffd, mappings: kept.mappings, pageSize: kept.pageSize, targetPid: pid, keeperSocket: sock, initialPresent });
      // Faults the dead handler had read but not resolved would wait forever: wake every thread,
      // so that each faults again, into this handler.
      for (const m of kept.mappings) native.uffdWake(uffd, m.localStart, m.length);
      return handler;
    } catch (err) {
      native.close(sock); // the keeper sees it end: it kills the target rather than let it read zeros
      throw err;
    }
  }

  /** The uffd needs no keeper any more: every page is in, the target is gone, or stop() was asked for. */
  #releaseKeeper(): void {
    const k = this.#keeper;
    if (!k) return;
    this.#keeper = null;
    if (k.timer) clearInterval(k.timer);
    native.writeAll(k.sock, KEEPER_DONE, 0, KEEPER_DONE.length);
    native.close(k.sock);
  }

  #begin(): void {
    this.#targetPid(); // watched from now on, if known
    this.#go();
    if (allPresent(this.#state)) this.#onComplete();
  }

  /** Releases the threads; both must be connected first, or a fast push could finish before a fault thread exists. */
  #go(): void {
    Atomics.store(this.#state.counters, Counter.GO, 1);
    Atomics.notify(this.#state.counters, Counter.GO);
  }

  #onComplete(): void {
    if (this.#stopped || this.#finishing || !allPresent(this.#state)) return;
    this.#finishing = true;
    this.#finish().catch((err: PostcopyError) => this.#onFatal(err.code ? err : new PostcopyError('ERR_UFFD', err.message, { cause: err })));
  }

  /**
   * Every page looks present: check that the task has each one before its uffd is let go (closing
   * it would make any page it lacks read as zero), then wait for the handlers of its fork children
   * to be connected (a source ends once no target is connected), then stop.
   */
  async #finish(): Promise<void> {
    await this.#pidSearch; // a fork child's memory is checked too, once its pid is known
    const pid = this.#targetPid();
    if (pid) {
      const gaps = verifyResident(this.#state, pid);
      const pages = gaps?.reduce((n, g) => n + g.count, 0) ?? 0;
      if (pages) {
        this.#log.error({ pid, pages, runs: gaps!.length, first: gaps!.slice(0, 4) }, `INTERNAL ERROR: ${pages} pages counted as present were not in the memory of task ${pid}; fetching them again`);
        this.#completedAt = undefined;
        this.#finishing = false;
        if (++this.#verifyRounds >= MAX_VERIFY_ROUNDS) throw new PostcopyError('ERR_UFFD', `task ${pid} still lacked ${pages} pages after ${MAX_VERIFY_ROUNDS} rounds`);
        // The fault thread fetches them, and says complete again.
        Atomics.add(this.#state.counters, Counter.GAPS, pages);
        native.eventfdSignal(this.#pushFd);
        return;
      }
      this.#verified = gaps !== null;
    } else this.#log.warn('the task\'s pid is not known: its memory cannot be checked before its uffd is let go');
    await Promise.allSettled(this.#children);
    if (this.#stopped) return;
    this.#completedAt ??= performance.timeOrigin + performance.now();
    this.#log.info(this.progress, 'every page is present');
    this.stop().then(this.#resolveDone, this.#rejectDone);
  }

  /**
   * The process forked: its child has the memory the parent had then, missing pages included, and
   * a userfaultfd of its own. A handler like this one serves it, starting from our present pages
   * (a page that arrived here just after the fork is fetched again when the child faults on it).
   * Children are reported through 'child' events and children().
   */
  #onFork(uffd: number, map: MapSnapshot, present: Uint8Array[]): void {
    const parent = this.#targetPid();
    const found = parent ? FaultHandler.#findChild(parent, map) : Promise.resolve(undefined);
    const { uffd: _parent, targetPid: _pid, keeperSocket: _keeper, ...rest } = this.#options;
    // No keeper of its own: spawning one forks this whole process (all its threads' memory) once
    // per fork, and in a storm of forks that stalled the event loop for seconds (malloc's fork lock).
    const child = FaultHandler.start({ ...rest, uffd, singleThread: true, keeper: false, initialPresent: present, initialMap: map, forkPid: parent ? found : undefined, forkChild: true });
    this.#children.push(child);
    child.then(
      (h) => this.emit('child', h),
      (err: PostcopyError) => {
        this.#log.error({ code: err.code }, `cannot serve a forked child: ${err.message}`);
        void found.then((pid) => pid && killQuietly(pid)); // it must never read a page it did not get
      },
    );
  }

  /** Handlers of the children forked so far (each resolves once its threads are up). */
  children(): Promise<FaultHandler>[] {
    return [...this.#children];
  }

  #onFatal(err: PostcopyError): void {
    if (err.code === 'ERR_TARGET_GONE') {
      // The process exited: nothing of it is left to lose. Not a failure of the migration, but
      // a task killed by a signal during post-copy is worth saying.
      this.#exitedEarly = true;
      const pid = this.#targetPid();
      void exitSignalOf(pid)
        .then((signal) => {
          this.#exitSignal = signal;
          if (signal) this.#log.warn({ pid, signal }, `task ${pid} died of signal ${signal} during post-copy`);
        })
        .finally(() => this.stop().then(this.#resolveDone, this.#rejectDone));
      return;
    }
    if (this.#fatal || allPresent(this.#state)) return;
    this.#fatal = err;
    this.#log.error({ code: err.code }, err.message);
    const target = this.#targetPid();
    if (target) killQuietly(target); // it must never run on pages we could not fetch
    this.emit('fatal', err);
    this.stop().finally(() => this.#rejectDone(err));
  }

  #targetPid(): number | undefined {
    const t = this.#options.targetPid;
    const pid = this.#options.forkPid ? this.#foundPid : typeof t === 'function' ? t() : t;
    if (pid) {
      FaultHandler.#claimed.add(pid);
      if (this.#pidfd < 0 && !this.#stopped) this.#watch(pid);
    }
    return pid;
  }

  /** Hands the fault thread a pidfd of the target: a target that exits ends the handler (ERR_TARGET_GONE). */
  #watch(pid: number): void {
    const fd = native.pidfdOpen(pid);
    if (fd < 0) return;
    this.#pidfd = fd;
    Atomics.store(this.#state.counters, Counter.PIDFD, fd);
    native.eventfdSignal(this.#pushFd); // a fault thread asleep in poll looks again
  }

  /** Pids some handler serves (a fork child is looked for among the others). */
  static #claimed = new Set<number>();
  static #live = new Set<FaultHandler>();
  /** Fork children being looked for, oldest first: concurrent forks take the new pids in order. */
  static #looking: number[] = [];
  static #lookSeq = 0;

  /**
   * The pid of the child whose fork event was just read: a new child of `parent` that no handler
   * serves, has a memory of its own (not a vfork or thread) holding the migrated ranges, and is
   * not a zombie. The kernel gives it its pid just after the event is read.
   */
  static async #findChild(parent: number, map: MapSnapshot): Promise<number | undefined> {
    const me = ++FaultHandler.#lookSeq;
    FaultHandler.#looking.push(me);
    const probe = map.extents.length >= 4 ? firstMappedAddress(map) : -1;
    try {
      const deadline = performance.now() + FIND_CHILD_MS;
      while (performance.now() < deadline) {
        for (const h of FaultHandler.#live) h.#targetPid(); // claims the pids others serve
        if (FaultHandler.#looking[0] === me) {
          const pid = childrenOf(parent)
            .filter((c) => !FaultHandler.#claimed.has(c) && native.sameMemory(c, parent) === 0 && isForkChild(c, probe))
            .sort((a, b) => a - b)[0];
          if (pid) {
            FaultHandler.#claimed.add(pid);
            return pid;
          }
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      return undefined;
    } finally {
      FaultHandler.#looking.splice(FaultHandler.#looking.indexOf(me), 1);
    }
  }

  /** Stops both threads (each tells the source DONE or ABORT) and returns the final report. */
  stop(): Promise<HandlerReport> {
    this.#stopped ??= (async () => {
      Atomics.store(this.#state.counters, Counter.STOP, 1);
      Atomics.notify(this.#state.counters, Counter.STOP);
      this.#go();
      native.eventfdSignal(this.#stopFd);
      await Promise.all(this.#exited);
      native.close(this.#stopFd);
      native.close(this.#pushFd);
      if (this.#pidfd >= 0) native.close(this.#pidfd);
      FaultHandler.#live.delete(this);
      const complete = allPresent(this.#state);
      // Closing the uffd unregisters it; only safe when nothing is missing or the target is dead.
      if (this.#uffd >= 0 && (complete || this.#targetPid())) native.close(this.#uffd);
      this.#releaseKeeper();
      await this.#bridge?.close();
      const pid = this.#targetPid();
      // A pid stays claimed while its process lives: a later fork must not take it for its child.
      if (pid && !existsSync(`/proc/${pid}`)) FaultHandler.#claimed.delete(pid);
      return { ...this.progress, complete, completedAt: complete ? this.#completedAt : undefined, exited: this.#exitedEarly, latency: this.#latency, gaps: Atomics.load(this.#state.counters, Counter.GAPS), verified: this.#verified, ...(pid ? { pid } : {}), ...(this.#exitSignal ? { exitSignal: this.#exitSignal } : {}), ...(this.#touched ? { touched: this.#touched } : {}) };
    })();
    return this.#stopped;
  }
}

/** The address of the first page still mapped in a fork's map snapshot, or -1. */
function firstMappedAddress(map: MapSnapshot): number {
  for (let e = 0; e + 3 < map.extents.length; e += 4) if (map.extents[e + 3] >= 0 && map.extents[e + 2] > 0) return map.extents[e + 3];
  return -1;
}

/** Whether process `pid` is alive (not a zombie) and maps `addr` (-1: anything). */
function isForkChild(pid: number, addr: number): boolean {
  const state = statFields(pid)?.[0];
  if (!state || state === 'Z') return false;
  if (addr < 0) return true;
  try {
    return parseMaps(readFileSync(`/proc/${pid}/maps`, 'utf8')).some((e) => addr >= e.start && addr < e.end);
  } catch {
    return false; // gone
  }
}

/**
 * The signal that killed process `pid`, read from its zombie's /proc/PID/stat (exit_code, field
 * 52) within a few ms of its exit; undefined if it exited normally or was reaped before we looked.
 */
async function exitSignalOf(pid: number | undefined): Promise<number | undefined> {
  if (!pid) return undefined;
  for (let tries = 0; tries < 20; tries++) {
    const fields = statFields(pid);
    if (!fields) return undefined; // reaped
    if (fields[0] === 'Z' || fields[0] === 'X') return Number(fields[49]) & 0x7f || undefined;
    await new Promise((r) => setTimeout(r, 1));
  }
  return undefined;
}

/** A thread's connection ended, lost or closed for good. */
const connectionEnded = (code: string) => code === 'ERR_PEER_CLOSED' || code === 'ERR_CONNECTION_LOST';

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone already
  }
}
