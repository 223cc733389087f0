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

const threadUrl = siblingModule(import.meta.url, 'connection-thread');

/**
 * Events: 'done' (connection id, key id or null) when a target reports every page present;
 * 'error-frame' ({ code, message }) for each ERROR sent.
 */
export class PageServer extends EventEmitter {
  readonly engine: ServerEngine;
  #source: MemorySource;
  #grants: Grant[] | undefined;
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

  constructor(source: MemorySource, options: PageServerOptions = {}) {
    super();
    this.#source = source;
    this.#maxGetPages = maxGetPagesFor(source.pageSize, options.maxGetBytes);
    this.#log = options.logger ?? silentLogger;
    for (const g of options.grants ?? []) checkKey(g);
    this.#grants = options.grants?.length ? options.grants : undefined;
    this.engine = options.engine ?? (source.describe ? 'thread' : 'loop');
    if (this.engine === 'thread' && !source.describe) throw new PostcopyError('ERR_INVALID_ARG', 'the thread engine needs a source with describe()');
  }

  /** Starts `count` connection threads ahead, to be used by the next connections (see util/thread.ts). */
  static prestartThreads(count: number): Promise<void> {
    return prestartThreads(threadUrl, count);
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
    this.#connections++;
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
          continue;
        }
        switch (frame.type) {
          case FrameType.GET:
            this.#serve(socket, frame, handshake, log);
            break;
          case FrameType.BYE:
            if (frame.reason === ByeReason.DONE) this.emit('done', id, handshake.keyId);
            socket.end();
            return;
          default:
            this.#fail(socket, 0, 'ERR_PROTOCOL', `unexpected frame type ${frame.type} from a target`, log);
            return;
        }
      }
    });
    socket.on('error', (err) => log.debug({ err }, 'socket error'));
    socket.on('close', () => this.#sockets.delete(socket));
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
    this.#connections++;
    const log = this.#log.child({ connection: id });
    const stats = new Float64Array(new SharedArrayBuffer(STAT_SLOTS * 8));
    const control = new Int32Array(new SharedArrayBuffer(4));
    this.#threadStats.push(stats);
    const config: ConnectionThreadConfig = { fd, source: this.#source.describe!(), maxGetPages: this.#maxGetPages, stats, control, grants: this.#grants };
    const worker = startThread(threadUrl, config);
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    const conn: ThreadConnection = { fd, worker, control, exited };
    this.#threads.add(conn);
    worker.on('message', (m: ConnectionMessage) => {
      if (m.type === 'done') this.emit('done', id, m.keyId);
      else if (m.type === 'error-frame') {
        log.warn({ code: m.code }, m.message);
        this.emit('error-frame', { code: m.code, message: m.message });
      }
    });
    worker.on('error', (err) => log.error({ err }, 'connection thread crashed'));
    void exited.then(() => {
      native.close(fd); // only now: the thread may have been blocked on it
      this.#threads.delete(conn);
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
