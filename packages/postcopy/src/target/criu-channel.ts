// The fault thread's side of CRIU's page server (the wire: protocol/criu-page-server.ts).
import { PostcopyError, ProtocolError } from '../errors.js';
import { native } from '../native/index.js';
import type { RegionInfo } from '../protocol/frames.js';
import { ByeReason, Flag, FrameType } from '../protocol/frames.js';
import { PS_HEADER_SIZE, PS_IOV_ADD_PRESENT, PS_IOV_CLOSE, PS_IOV_GET, readIov, writeIov } from '../protocol/criu-page-server.js';
import { FdReader } from '../transport/fd-reader.js';
import type { Endpoint } from '../transport/transport.js';
import type { PageChannel, Run } from './channel.js';

const KERNEL_PAGE = 4096;

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
 * or more runs, the last with Flag.END. One request at a time: CRIU serves one connection, in order.
 */
export class CriuPageChannel implements PageChannel {
  readonly fd: number;
  readonly pageSize = KERNEL_PAGE;
  readonly regions: RegionInfo[];
  #pid: number;
  #lazy: Uint8Array[];
  #reader: FdReader;
  #out = Buffer.alloc(PS_HEADER_SIZE);
  #pending: Pending | null = null;
  #held = 0;
  #closed = false;
  /** CRIU's page server sends no checksums */
  readonly corrupt: number[] = [];

  /** lazy[r][p] is 1 when page p of region r is one CRIU holds (PE_LAZY in the pagemap). */
  constructor(endpoint: Endpoint, pid: number, regions: RegionInfo[], lazy: Uint8Array[]) {
    if (endpoint.kind !== 'tcp') throw new PostcopyError('ERR_INVALID_ARG', 'CRIU page servers listen on TCP');
    if (lazy.length !== regions.length) throw new PostcopyError('ERR_INVALID_ARG', 'one lazy-page map per region');
    this.fd = native.tcpConnect(endpoint.host, endpoint.port);
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
      this.#write(this.#out);
      r.need(PS_HEADER_SIZE);
      const iov = readIov(r.buf, r.start);
      if (iov.cmd !== PS_IOV_ADD_PRESENT) throw new ProtocolError(`CRIU page server answered command 0x${iov.cmd.toString(16)}, not PS_IOV_ADD_F|PE_PRESENT`);
      if (iov.nrPages === 0 || iov.nrPages > count || iov.vaddr !== vaddr || iov.dstId !== this.#pid)
        throw new ProtocolError(`CRIU page server sent ${iov.nrPages} pages at 0x${iov.vaddr.toString(16)} for ${iov.dstId}, asked ${count} at 0x${vaddr.toString(16)} for ${this.#pid}`);
      count = iov.nrPages; // it may stop early, at a pipe boundary: the next read asks for the rest
      r.need(PS_HEADER_SIZE + count * KERNEL_PAGE);
      this.#held = PS_HEADER_SIZE + count * KERNEL_PAGE;
      dataOffset = r.start + PS_HEADER_SIZE;
    }
    p.done += count;
    const last = p.done === p.count;
    if (last) this.#pending = null;
    const type = !lazy[first] ? FrameType.ZERO : p.flags & Flag.BACKGROUND ? FrameType.PUSH : FrameType.PAGES;
    return { type, flags: last ? Flag.END : 0, id: p.id, region: p.region, firstPage: first, count, dataOffset };
  }

  /** PS_IOV_CLOSE: the dump side may finish (and its frozen tasks go away). Waits for its answer. */
  bye(reason: number): void {
    if (this.#closed || this.#pending || reason !== ByeReason.DONE) return;
    try {
      writeIov(this.#out, 0, { cmd: PS_IOV_CLOSE, nrPages: 0, vaddr: 0, dstId: 0 });
      this.#write(this.#out);
      this.#reader.consume(this.#held);
      this.#held = 0;
      this.#reader.need(4);
    } catch {
      // the dump side is gone already
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.close(this.fd);
  }

  #write(buf: Buffer): void {
    const n = native.writeAll(this.fd, buf, 0, buf.length);
    if (n !== buf.length) throw new PostcopyError('ERR_PEER_CLOSED', `write to the CRIU page server failed: errno ${-n}`);
  }
}
