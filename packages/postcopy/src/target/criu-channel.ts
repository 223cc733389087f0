// The fault thread's side of CRIU's page server (the wire: protocol/criu-page-server.ts).
import { PostcopyError, ProtocolError } from '../errors.js';
import { native } from '../native/index.js';
import type { RegionInfo } from '../protocol/frames.js';
import { Flag, FrameType } from '../protocol/frames.js';
import { PS_HEADER_SIZE, PS_IOV_ADD_PRESENT, PS_IOV_CLOSE, PS_IOV_GET, readIov, writeIov } from '../protocol/criu-page-server.js';
import { FdReader } from '../transport/fd-reader.js';
import type { Endpoint } from '../transport/transport.js';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { TlsBridge, type TlsMaterial } from '../transport/tls.js';
import { SharedLock } from '../util/shared-lock.js';
import { waitReadable } from '../util/wait-readable.js';
import type { PageChannel, Run } from './channel.js';

const KERNEL_PAGE = 4096;
/** how long PS_IOV_CLOSE waits for its answer (the dump side is gone if it says nothing) */
const CLOSE_ANSWER_MS = 5000;
let bridges = 0;

/** One connection to CRIU's page server, shared by the fault threads of every task it serves. */
export interface CriuConnection {
  fd: number;
  /** a SharedLock's memory: one request and its whole answer at a time, whatever thread asks */
  lock: Int32Array;
}

/**
 * The owner's side of the connection: CRIU's page server takes one connection and serves every task
 * of the dump on it, each request naming its task (dst_id), so the handlers of a whole tree, and of
 * the children it forks, share it. Closed with PS_IOV_CLOSE once every one of them is done.
 */
export class CriuPageServerConnection {
  readonly shared: CriuConnection;
  #lock: SharedLock;
  #closed = false;
  #bridge: TlsBridge | null;

  private constructor(fd: number, bridge: TlsBridge | null = null) {
    this.#lock = new SharedLock();
    this.shared = { fd, lock: this.#lock.memory };
    this.#bridge = bridge;
  }

  /** With `tls` (CRIU's --tls), through a local bridge: the threads speak plain sockets. */
  static async connect(endpoint: Endpoint, tls?: TlsMaterial): Promise<CriuPageServerConnection> {
    if (endpoint.kind !== 'tcp') throw new PostcopyError('ERR_INVALID_ARG', 'CRIU page servers listen on TCP');
    if (!tls) return new CriuPageServerConnection(native.tcpConnect(endpoint.host, endpoint.port));
    const bridge = await TlsBridge.start(join(tmpdir(), `postcopy-criu-tls-${process.pid}-${++bridges}.sock`), endpoint, tls);
    try {
      return new CriuPageServerConnection(native.unixConnect(bridge.path), bridge);
    } catch (err) {
      await bridge.close();
      throw err;
    }
  }

  /** A connected stream that speaks CRIU's page-server protocol (our image page server's socket). */
  static over(fd: number): CriuPageServerConnection {
    return new CriuPageServerConnection(fd);
  }

  /**
   * PS_IOV_CLOSE, waiting for its answer, when `release`: the dump side may finish (its frozen tasks
   * go). Without it (a failure), the connection just closes: CRIU's page server ends all the same.
   */
  async close(release: boolean): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const fd = this.shared.fd;
    if (release) {
      this.#lock.acquire();
      try {
        const out = Buffer.alloc(PS_HEADER_SIZE);
        writeIov(out, 0, { cmd: PS_IOV_CLOSE, nrPages: 0, vaddr: 0, dstId: 0 });
        // Waited for on the event loop: a TLS bridge carries the answer there.
        if (native.writeAll(fd, out, 0, out.length) === out.length) {
          await waitReadable(fd, CLOSE_ANSWER_MS, "CRIU page server's answer to PS_IOV_CLOSE").then(() => native.readFull(fd, Buffer.alloc(4), 0, 4), () => {});
        }
      } finally {
        this.#lock.release();
      }
    }
    native.close(fd);
    await this.#bridge?.close();
  }
}

interface Pending {
  id: number;
  region: number;
  firstPage: number;
  count: number;
  done: number;
  flags: number;
}

/**
 * The fault thread's view of CRIU's page server, shaped like BlockingChannel: GETs by region and
 * page, runs back with ids. Regions are whole lazy VMAs; only their lazy pages (those CRIU keeps)
 * are asked for, the others come back as ZERO runs without a round trip. CRIU has no request ids
 * and may answer with fewer pages than asked (a pipe boundary), so a request is answered by one
 * or more runs, the last with Flag.END. One request at a time: CRIU serves one connection, in order,
 * and other tasks' threads share it (CriuConnection), so each exchange holds its lock.
 */
export class CriuPageChannel implements PageChannel {
  readonly fd: number;
  readonly pageSize = KERNEL_PAGE;
  readonly regions: RegionInfo[];
  #pid: number;
  #lock: SharedLock;
  #lazy: Uint8Array[];
  #reader: FdReader;
  #out = Buffer.alloc(PS_HEADER_SIZE);
  #pending: Pending | null = null;
  #held = 0;
  /** CRIU's page server sends no checksums */
  readonly corrupt: number[] = [];

  /**
   * lazy[r][p] is 1 when page p of region r is one CRIU holds (PE_LAZY in the pagemap). `pid`: the
   * task as the dump names it (a forked child asks for its parent's pages, as it had them at the fork).
   */
  constructor(connection: CriuConnection, pid: number, regions: RegionInfo[], lazy: Uint8Array[]) {
    if (lazy.length !== regions.length) throw new PostcopyError('ERR_INVALID_ARG', 'one lazy-page map per region');
    this.fd = connection.fd;
    this.#lock = new SharedLock(connection.lock);
    this.#pid = pid;
    this.regions = regions;
    this.#lazy = lazy;
    this.#reader = new FdReader(this.fd, 4 << 20, 'CRIU page server');
  }

  get data(): Buffer {
    return this.#reader.buf;
  }

  handshake(): RegionInfo[] {
    return this.regions;
  }

  sendGet(id: number, region: number, firstPage: number, count: number, flags: number): void {
    if (this.#pending) throw new PostcopyError('ERR_INVALID_ARG', 'CRIU page channel: one request at a time');
    const r = this.regions[region];
    if (!r || count < 1 || (firstPage + count) * KERNEL_PAGE > r.length) throw new PostcopyError('ERR_OUT_OF_RANGE', `pages ${firstPage}+${count} outside lazy VMA ${region}`);
    this.#pending = { id, region, firstPage, count, done: 0, flags };
  }

  readRun(): Run {
    const r = this.#reader;
    r.consume(this.#held);
    this.#held = 0;
    const p = this.#pending;
    if (!p) throw new ProtocolError('no request outstanding on the CRIU page channel');
    const lazy = this.#lazy[p.region];
    const first = p.firstPage + p.done;
    const end = p.firstPage + p.count;
    let q = first + 1;
    while (q < end && lazy[q] === lazy[first]) q++;
    let count = q - first;
    let dataOffset = 0;
    if (lazy[first]) {
      const vaddr = this.regions[p.region].start + first * KERNEL_PAGE;
      writeIov(this.#out, 0, { cmd: PS_IOV_GET, nrPages: count, vaddr, dstId: this.#pid });
      // The whole answer is read before another thread may ask: nothing else is then in flight, so
      // this reader never takes bytes of another task's answer.
      this.#lock.acquire();
      try {
        this.#write(this.#out);
        r.need(PS_HEADER_SIZE);
        const iov = readIov(r.buf, r.start);
        if (iov.cmd !== PS_IOV_ADD_PRESENT) throw new ProtocolError(`CRIU page server answered command 0x${iov.cmd.toString(16)}, not PS_IOV_ADD_F|PE_PRESENT`);
        if (iov.nrPages === 0 || iov.nrPages > count || iov.vaddr !== vaddr || iov.dstId !== this.#pid)
          throw new ProtocolError(`CRIU page server sent ${iov.nrPages} pages at 0x${iov.vaddr.toString(16)} for ${iov.dstId}, asked ${count} at 0x${vaddr.toString(16)} for ${this.#pid}`);
        count = iov.nrPages; // it may stop early, at a pipe boundary: the next read asks for the rest
        r.need(PS_HEADER_SIZE + count * KERNEL_PAGE);
      } finally {
        this.#lock.release();
      }
      this.#held = PS_HEADER_SIZE + count * KERNEL_PAGE;
      dataOffset = r.start + PS_HEADER_SIZE;
    }
    p.done += count;
    const last = p.done === p.count;
    if (last) this.#pending = null;
    const type = !lazy[first] ? FrameType.ZERO : p.flags & Flag.BACKGROUND ? FrameType.PUSH : FrameType.PAGES;
    return { type, flags: last ? Flag.END : 0, id: p.id, region: p.region, firstPage: first, count, dataOffset };
  }

  /** The connection is the tree's: its owner ends it (CriuPageServerConnection.close) once every task is done. */
  bye(_reason: number): void {}

  close(): void {}

  #write(buf: Buffer): void {
    const n = native.writeAll(this.fd, buf, 0, buf.length);
    if (n !== buf.length) throw new PostcopyError('ERR_PEER_CLOSED', `write to the CRIU page server failed: errno ${-n}`);
  }
}
