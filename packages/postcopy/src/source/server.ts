// The page server: answers GETs from any number of targets, straight from a MemorySource.
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { PostcopyError, ProtocolError, type ErrorCode } from '../errors.js';
import { encodeBye, encodeError, encodeHello, encodeRegions, encodeRunHeader } from '../protocol/codec.js';
import { FrameDecoder } from '../protocol/decoder.js';
import {
  BYTE_ORDER_MARK,
  ByeReason,
  Feature,
  Flag,
  FrameType,
  PROTOCOL_VERSION,
  Role,
  type Frame,
  type Get,
  type RegionInfo,
} from '../protocol/frames.js';
import type { Listener, Transport } from '../transport/index.js';
import { silentLogger, type Logger } from '../util/log.js';
import type { MemorySource } from './memory-source.js';

export interface PageServerOptions {
  /** largest GET served, in bytes (default 4 MiB) */
  maxGetBytes?: number;
  logger?: Logger;
}

export interface ServerStats {
  connections: number;
  gets: number;
  pagesSent: number;
  zeroPages: number;
  bytesSent: number;
  errors: number;
}

/**
 * Events: 'done' (connection id) when a target reports every page present;
 * 'error-frame' ({ code, message }) for each ERROR sent.
 */
export class PageServer extends EventEmitter {
  readonly stats: ServerStats = { connections: 0, gets: 0, pagesSent: 0, zeroPages: 0, bytesSent: 0, errors: 0 };
  #source: MemorySource;
  #maxGetPages: number;
  #log: Logger;
  #listener: Listener | null = null;
  #sockets = new Set<Socket>();
  #nextConnection = 1;

  constructor(source: MemorySource, options: PageServerOptions = {}) {
    super();
    this.#source = source;
    this.#maxGetPages = Math.max(1, Math.floor((options.maxGetBytes ?? 4 << 20) / source.pageSize));
    this.#log = options.logger ?? silentLogger;
  }

  get maxGetPages(): number {
    return this.#maxGetPages;
  }

  async listen(transport: Transport): Promise<Listener> {
    this.#listener = await transport.listen((socket) => this.handle(socket));
    return this.#listener;
  }

  /** Serves one already-connected stream. */
  handle(socket: Socket): void {
    const id = this.#nextConnection++;
    this.stats.connections++;
    this.#sockets.add(socket);
    const decoder = new FrameDecoder();
    let greeted = false;
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
        if (!greeted) {
          greeted = this.#greet(socket, frame, log);
          if (!greeted) return;
          continue;
        }
        switch (frame.type) {
          case FrameType.GET:
            this.#serve(socket, frame, log);
            break;
          case FrameType.BYE:
            if (frame.reason === ByeReason.DONE) this.emit('done', id);
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

  #greet(socket: Socket, frame: Frame, log: Logger): boolean {
    if (frame.type !== FrameType.HELLO) {
      this.#fail(socket, 0, 'ERR_PROTOCOL', 'the first frame must be HELLO', log);
      return false;
    }
    if (frame.byteOrderMark !== BYTE_ORDER_MARK) {
      this.#fail(socket, 0, 'ERR_PROTOCOL', `byte-order mark 0x${frame.byteOrderMark.toString(16)} is not 0x${BYTE_ORDER_MARK.toString(16)}`, log);
      return false;
    }
    if (frame.version !== PROTOCOL_VERSION) {
      this.#fail(socket, 0, 'ERR_VERSION', `protocol version ${frame.version} is not supported (this source speaks ${PROTOCOL_VERSION})`, log);
      return false;
    }
    if (frame.pageSize !== this.#source.pageSize) {
      this.#fail(socket, 0, 'ERR_PAGE_SIZE', `target page size ${frame.pageSize} does not match the source's ${this.#source.pageSize}`, log);
      return false;
    }
    socket.cork();
    socket.write(encodeHello({ version: PROTOCOL_VERSION, pageSize: this.#source.pageSize, features: Feature.ZERO | Feature.PUSH, role: Role.SOURCE, auth: new Uint8Array(0) }));
    socket.write(encodeRegions(this.#source.regions));
    socket.uncork();
    return true;
  }

  #serve(socket: Socket, get: Get, log: Logger): void {
    this.stats.gets++;
    const region: RegionInfo | undefined = this.#source.regions[get.region];
    const pages = region ? region.length / this.#source.pageSize : 0;
    if (!region) return this.#reject(socket, get.id, 'ERR_OUT_OF_RANGE', `no region ${get.region}`, log);
    if (get.count === 0 || get.count > this.#maxGetPages)
      return this.#reject(socket, get.id, 'ERR_OUT_OF_RANGE', `GET of ${get.count} pages (allowed 1..${this.#maxGetPages})`, log);
    if (get.firstPage + get.count > pages)
      return this.#reject(socket, get.id, 'ERR_OUT_OF_RANGE', `pages ${get.firstPage}+${get.count} outside region ${get.region} of ${pages} pages`, log);

    const dataType = get.flags & Flag.BACKGROUND ? FrameType.PUSH : FrameType.PAGES;
    const ps = this.#source.pageSize;
    socket.cork();
    try {
      let p = get.firstPage;
      const end = get.firstPage + get.count;
      while (p < end) {
        const zero = this.#source.untouched(region, p);
        let q = p + 1;
        while (q < end && this.#source.untouched(region, q) === zero) q++;
        const flags = q === end ? Flag.END : 0;
        if (zero) {
          socket.write(encodeRunHeader(FrameType.ZERO, get.id, flags, get.region, p, q - p, 0));
          this.stats.zeroPages += q - p;
        } else {
          const data = Buffer.allocUnsafe((q - p) * ps);
          this.#source.read(region, p, q - p, data, 0);
          socket.write(encodeRunHeader(dataType, get.id, flags, get.region, p, q - p, data.length));
          socket.write(data);
          this.stats.pagesSent += q - p;
          this.stats.bytesSent += data.length;
        }
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
    this.stats.errors++;
    log.warn({ code, id }, message);
    this.emit('error-frame', { code, message });
    socket.write(encodeError(id, code, message));
  }

  #fail(socket: Socket, id: number, code: ErrorCode, message: string, log: Logger): void {
    this.#reject(socket, id, code, message, log);
    socket.end();
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await this.#listener?.close();
    this.#listener = null;
  }

  /** Tells every connected target the source is going away. */
  sayBye(reason: number = ByeReason.ABORT): void {
    for (const s of this.#sockets) s.end(encodeBye(reason));
  }
}
