// The page server: answers GETs from any number of targets, straight from a MemorySource.
// Two engines answer alike (see session.ts):
//  - 'thread' (default when the source can be described): each connection gets a thread with
//    blocking calls, so a fault's round trip never waits on the event loop;
//  - 'loop': every connection on the event loop, for sources that live only in this thread.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import type { Worker } from 'node:worker_threads';
import { PostcopyError, ProtocolError, type ErrorCode } from '../errors.js';
import { native } from '../native/index.js';
import { encodeBye, encodeError } from '../protocol/codec.js';
import { FrameDecoder } from '../protocol/decoder.js';
import { checkKey } from '../protocol/auth.js';
import { ByeReason, FrameType, type Frame, type Get } from '../protocol/frames.js';
import type { Listener, Transport } from '../transport/index.js';
import { silentLogger, type Logger } from '../util/log.js';
import { prestartThreads, siblingModule, startThread } from '../util/thread.js';
import type { MemorySource } from './memory-source.js';
import { checkPushPriority, type PushPriority } from '../util/push-priority.js';
import { checkGet, maxGetPagesFor, maxRunSize, runEnd, SourceHandshake, StatSlot, STAT_SLOTS, writeRun, type Grant, type ConnectionMessage, type ConnectionThreadConfig } from './session.js';

export type ServerEngine = 'thread' | 'loop';

export interface PageServerOptions {
  /** largest GET served, in bytes (default 4 MiB) */
  maxGetBytes?: number;
  /** default: 'thread' when the source has describe(), else 'loop' */
  engine?: ServerEngine;
  logger?: Logger;
  /**
   * Keys a target must prove it holds (protocol/auth.ts), each with what it may read. A failed
   * proof or a GET outside the grant gets an ERROR (ERR_AUTH, ERR_NOT_GRANTED) and is logged.
   * None: any target that connects may read every region.
   */
  grants?: Grant[];
  /** how far a connection thread lowers itself once it serves the push (BACKGROUND GETs); default normal */
  backgroundPriority?: PushPriority;
}

export interface ServerStats {
  connections: number;
  gets: number;
  pagesSent: number;
  zeroPages: number;
  bytesSent: number;
  errors: number;
}

interface ThreadConnection {
  fd: number;
  worker: Worker;
  control: Int32Array;
  exited: Promise<void>;
}

/** How one connection ended, as the server saw it. */
export interface ConnectionEnd {
  /** connections are numbered in the order they were accepted */
  id: number;
  /** it got through the handshake (a target that read, or could have read, pages) */
  served: boolean;
  /** the key it proved it holds (null: none asked, or it never got that far) */
  keyId: string | null;
  /** it said BYE DONE: its target has every page */
  done: boolean;
}

export interface CompletionOptions {
  /** with several keys: each of these must have said DONE on some connection (default: none) */
  keyIds?: readonly string[];
  /** how long the server must stay without a connection, complete, before the promise resolves (default 200 ms) */
  graceMs?: number;
}

const DEFAULT_GRACE_MS = 200;

/** Whether `ends` (every connection ended so far, none open) make a complete migration: see PageServer.isComplete. */
export function completeAfter(ends: readonly ConnectionEnd[], keyIds: readonly string[] = []): boolean {
  if (!ends.some((e) => e.done)) return false;
  if (!keyIds.every((k) => ends.some((e) => e.done && e.keyId === k))) return false;
  // A served connection that ended without DONE (BYE ABORT, an error, or lost: a target resumes on a
  // new connection) counts only once a connection accepted after it, with the same key, said DONE.
  // "Accepted after it", not "after it ended": a handler reconnects at once, and the server may see
  // the new connection before the old one's end (a FIN held up by a cut link comes late). The price:
  // a handler's DONE covers a failure of another handler accepted before it (a fork child's DONE, a
  // parent's failure); a DONE says its target has every page, so a handler's own threads are right.
  return ends.every((f) => !f.served || f.done || ends.some((d) => d.done && d.id > f.id && d.keyId === f.keyId));
}

const threadUrl = siblingModule(import.meta.url, 'connection-thread');

/**
 * Events: 'done' (connection id, key id or null) when a target reports every page present;
 * 'error-frame' ({ code, message }) for each ERROR sent; 'connection' (id) when one is accepted;
 * 'connection-end' (ConnectionEnd) when one has ended; 'idle' when the last open one has ended.
 */
export class PageServer extends EventEmitter {
  readonly engine: ServerEngine;
  #source: MemorySource;
  #grants: Grant[] | undefined;
  #backgroundPriority: PushPriority | undefined;
  #maxGetPages: number;
  #log: Logger;
  #listener: Listener | null = null;
  #sockets = new Set<Socket>();
  #threads = new Set<ThreadConnection>();
  #nextConnection = 1;
  /** the loop engine's counters, and one slot array per thread connection (kept after it ends) */
  #loopStats = new Float64Array(STAT_SLOTS);
  #threadStats: Float64Array[] = [];
  #connections = 0;
  /** connections accepted and not yet ended, by id: whether each got through the handshake, its key, DONE */
  #open = new Map<number, ConnectionEnd>();
  #ended: ConnectionEnd[] = [];

  constructor(source: MemorySource, options: PageServerOptions = {}) {
    super();
    this.#source = source;
    this.#maxGetPages = maxGetPagesFor(source.pageSize, options.maxGetBytes);
    this.#log = options.logger ?? silentLogger;
    for (const g of options.grants ?? []) checkKey(g);
    this.#grants = options.grants?.length ? options.grants : undefined;
    this.#backgroundPriority = options.backgroundPriority === undefined ? undefined : checkPushPriority(options.backgroundPriority);
    this.engine = options.engine ?? (source.describe ? 'thread' : 'loop');
    if (this.engine === 'thread' && !source.describe) throw new PostcopyError('ERR_INVALID_ARG', 'the thread engine needs a source with describe()');
  }

  /** Starts `count` connection threads ahead, to be used by the next connections (see util/thread.ts). */
  static prestartThreads(count: number): Promise<void> {
    return prestartThreads(threadUrl, count);
  }

  /** Connections accepted and not ended yet (a thread connection ends when its thread has exited). */
  get openConnections(): number {
    return this.#open.size;
  }

  /** How every connection that has ended so far ended, in the order they were accepted. */
  get ended(): readonly ConnectionEnd[] {
    return [...this.#ended].sort((a, b) => a.id - b.id);
  }

  /**
   * Whether every target this server serves is done, as far as it can tell now: no connection is
   * open, at least one said BYE DONE (with keyIds: one for each of these keys), and every served
   * connection that ended otherwise (BYE ABORT, an error, a lost connection) was followed by a
   * connection with the same key that said DONE (the target resumed, or another handler took over).
   * A target that forks serves its child from a handler of its own, with connections of their own:
   * the child's handler connects before the parent's closes, so this holds only once both are done.
   */
  isComplete(keyIds: readonly string[] = []): boolean {
    return this.#open.size === 0 && completeAfter(this.#ended, keyIds);
  }

  /**
   * Resolves once isComplete() has held for graceMs with no connection accepted meanwhile. The grace
   * covers a connection that opens just after the last one closed, which isComplete() cannot see
   * coming: a handler's thread that reconnects after its connection broke, or a handler that opens
   * a second connection after its first one ended. Never rejects; stop waiting with a signal.
   */
  whenComplete(options: CompletionOptions = {}): Promise<void> {
    const graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
    const keyIds = options.keyIds ?? [];
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | null = null;
      const check = () => {
        if (timer || !this.isComplete(keyIds)) return;
        timer = setTimeout(() => {
          timer = null;
          if (!this.isComplete(keyIds)) return;
          this.off('connection', opened);
          this.off('connection-end', check);
          resolve();
        }, graceMs);
      };
      const opened = () => {
        if (timer) clearTimeout(timer);
        timer = null;
      };
      this.on('connection', opened);
      this.on('connection-end', check);
      check();
    });
  }

  #opened(id: number): ConnectionEnd {
    const conn: ConnectionEnd = { id, served: false, keyId: null, done: false };
    this.#connections++;
    this.#open.set(id, conn);
    this.emit('connection', id);
    return conn;
  }

  #closed(conn: ConnectionEnd): void {
    if (!this.#open.delete(conn.id)) return;
    this.#ended.push(conn);
    this.emit('connection-end', { ...conn });
    if (this.#open.size === 0) this.emit('idle');
  }

  get maxGetPages(): number {
    return this.#maxGetPages;
  }

  get stats(): ServerStats {
    const sum = (slot: number) => this.#threadStats.reduce((n, s) => n + s[slot], this.#loopStats[slot]);
    return {
      connections: this.#connections,
      gets: sum(StatSlot.GETS),
      pagesSent: sum(StatSlot.PAGES),
      zeroPages: sum(StatSlot.ZERO),
      bytesSent: sum(StatSlot.BYTES),
      errors: sum(StatSlot.ERRORS),
    };
  }

  async listen(transport: Transport): Promise<Listener> {
    const threaded = this.engine === 'thread';
    this.#listener = await transport.listen((socket) => (threaded ? this.#adopt(socket) : this.handle(socket)), { pauseOnConnect: threaded });
    return this.#listener;
  }

  /** Serves one already-connected stream on the event loop. */
  handle(socket: Socket): void {
    const id = this.#nextConnection++;
    const conn = this.#opened(id);
    this.#sockets.add(socket);
    const decoder = new FrameDecoder();
    const handshake = new SourceHandshake(this.#source, this.#grants);
    const log = this.#log.child({ connection: id });
    socket.on('data', (chunk: Buffer) => {
      let frames: Frame[];
      try {
        frames = decoder.push(chunk);
      } catch (err) {
        this.#fail(socket, 0, err instanceof ProtocolError ? err.code : 'ERR_PROTOCOL', (err as Error).message, log);
        return;
      }
      for (const frame of frames) {
        if (socket.destroyed) return;
        if (!handshake.done) {
          const answer = handshake.step(frame);
          if ('code' in answer) return this.#fail(socket, 0, answer.code, answer.message, log);
          socket.write(answer.send);
          if (handshake.done) Object.assign(conn, { served: true, keyId: handshake.keyId });
          continue;
        }
        switch (frame.type) {
          case FrameType.GET:
            this.#serve(socket, frame, handshake, log);
            break;
          case FrameType.BYE:
            if (frame.reason === ByeReason.DONE) {
              conn.done = true;
              this.emit('done', id, handshake.keyId);
            }
            socket.end();
            return;
          default:
            this.#fail(socket, 0, 'ERR_PROTOCOL', `unexpected frame type ${frame.type} from a target`, log);
            return;
        }
      }
    });
    socket.on('error', (err) => log.debug({ err }, 'socket error'));
    socket.on('close', () => {
      this.#sockets.delete(socket);
      this.#closed(conn);
    });
  }

  /** Moves a paused, unread connection to a thread of its own. */
  #adopt(socket: Socket): void {
    const handleFd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    const fd = typeof handleFd === 'number' && handleFd >= 0 ? native.dup(handleFd) : -1;
    if (fd < 0) {
      this.#log.warn('cannot take the socket off the event loop; serving it there');
      this.handle(socket);
      socket.resume();
      return;
    }
    socket.destroy(); // closes Node's fd; ours stays open on the same connection
    const id = this.#nextConnection++;
    const conn = this.#opened(id);
    const log = this.#log.child({ connection: id });
    const stats = new Float64Array(new SharedArrayBuffer(STAT_SLOTS * 8));
    const control = new Int32Array(new SharedArrayBuffer(4));
    this.#threadStats.push(stats);
    const config: ConnectionThreadConfig = { fd, source: this.#source.describe!(), maxGetPages: this.#maxGetPages, stats, control, grants: this.#grants, backgroundPriority: this.#backgroundPriority };
    const worker = startThread(threadUrl, config);
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    const thread: ThreadConnection = { fd, worker, control, exited };
    this.#threads.add(thread);
    worker.on('message', (m: ConnectionMessage) => {
      if (m.type === 'served') Object.assign(conn, { served: true, keyId: m.keyId });
      else if (m.type === 'done') {
        conn.done = true;
        this.emit('done', id, m.keyId);
      } else if (m.type === 'error-frame') {
        log.warn({ code: m.code }, m.message);
        this.emit('error-frame', { code: m.code, message: m.message });
      }
    });
    worker.on('error', (err) => log.error({ err }, 'connection thread crashed'));
    // Node delivers every message the thread posted before 'exit': conn is final here.
    void exited.then(() => {
      native.close(fd); // only now: the thread may have been blocked on it
      this.#threads.delete(thread);
      this.#closed(conn);
    });
  }

  #serve(socket: Socket, get: Get, handshake: SourceHandshake, log: Logger): void {
    this.#loopStats[StatSlot.GETS]++;
    const rejected = checkGet(get, this.#source, this.#maxGetPages) ?? handshake.checkGrant(get);
    if (rejected) return this.#reject(socket, get.id, rejected.code, rejected.message, log);
    const region = this.#source.regions[get.region];
    socket.cork();
    try {
      for (let p = get.firstPage, end = get.firstPage + get.count; p < end; ) {
        const q = runEnd(this.#source, region, p, end);
        const zero = this.#source.untouched(region, p);
        const run = Buffer.allocUnsafe(maxRunSize(this.#source.pageSize, q - p));
        socket.write(run.subarray(0, writeRun(run, 0, this.#source, get, p, q, handshake.checksums)));
        this.#loopStats[zero ? StatSlot.ZERO : StatSlot.PAGES] += q - p;
        if (!zero) this.#loopStats[StatSlot.BYTES] += (q - p) * this.#source.pageSize;
        p = q;
      }
    } catch (err) {
      const code: ErrorCode = err instanceof PostcopyError ? err.code : 'ERR_SOURCE_GONE';
      this.#reject(socket, get.id, code, (err as Error).message, log);
    } finally {
      socket.uncork();
    }
  }

  #reject(socket: Socket, id: number, code: ErrorCode, message: string, log: Logger): void {
    this.#loopStats[StatSlot.ERRORS]++;
    log.warn({ code, id }, message);
    this.emit('error-frame', { code, message });
    socket.write(encodeError(id, code, message));
  }

  #fail(socket: Socket, id: number, code: ErrorCode, message: string, log: Logger): void {
    this.#reject(socket, id, code, message, log);
    socket.end();
  }

  /**
   * Stops accepting, then ends every connection with BYE ABORT: a target that has not finished
   * fails at once rather than trying to resume against a source that is going away.
   */
  async close(): Promise<void> {
    const listening = this.#listener?.close(); // no new connections from here on
    this.#listener = null;
    this.sayBye(ByeReason.ABORT);
    // Event-loop connections: give BYE a moment to leave, then drop whatever is still open.
    const sockets = [...this.#sockets];
    const closed = Promise.all(sockets.map((s) => (s.closed ? null : new Promise((r) => s.once('close', r)))));
    await Promise.race([closed, new Promise((r) => setTimeout(r, 500).unref())]);
    for (const s of sockets) s.destroy();
    await Promise.all([...this.#threads].map((t) => t.exited));
    await listening;
  }

  /** Tells every connected target the source is going away. */
  sayBye(reason: number = ByeReason.ABORT): void {
    for (const s of this.#sockets) s.end(encodeBye(reason));
    for (const t of this.#threads) {
      Atomics.store(t.control, 0, reason + 1);
      native.shutdown(t.fd, 0); // the thread sees EOF, sends BYE and ends
    }
  }
}
