// A blocking connection to a page server, for a thread that may block (never the event loop).
import { PostcopyError, ProtocolError, RemoteError } from '../errors.js';
import { C, native } from '../native/index.js';
import { decodeBody, encodeBye, encodeHello, readHeader, readRun, writeGet, GET_FRAME_SIZE } from '../protocol/codec.js';
import { BYTE_ORDER_MARK, Feature, FrameType, HEADER_SIZE, PROTOCOL_VERSION, Role, type RegionInfo } from '../protocol/frames.js';
import type { Endpoint } from '../transport/transport.js';

export interface Run {
  type: number;
  flags: number;
  id: number;
  region: number;
  firstPage: number;
  count: number;
  /** page bytes are in channel.data[0 .. count*pageSize) for PAGES/PUSH */
}

const RUN_DESC = 16;

export class BlockingChannel {
  readonly fd: number;
  readonly pageSize: number;
  regions: RegionInfo[] = [];
  /** receive buffer for page data; grows on demand */
  data: Buffer;
  #head = Buffer.alloc(HEADER_SIZE + RUN_DESC);
  #get = Buffer.alloc(GET_FRAME_SIZE);
  #closed = false;

  constructor(endpoint: Endpoint, pageSize: number) {
    this.pageSize = pageSize;
    this.fd = endpoint.kind === 'tcp' ? native.tcpConnect(endpoint.host, endpoint.port) : native.unixConnect(endpoint.path);
    this.data = Buffer.alloc(Math.max(pageSize * 64, 1 << 20));
  }

  /** HELLO exchange; returns the source's regions. */
  handshake(): RegionInfo[] {
    const hello = encodeHello({ version: PROTOCOL_VERSION, pageSize: this.pageSize, features: Feature.ZERO | Feature.PUSH, role: Role.TARGET, auth: new Uint8Array(0) });
    this.#write(hello);
    const first = this.#readFrame();
    if (first.type !== FrameType.HELLO) throw new ProtocolError('expected HELLO from the source');
    if (first.byteOrderMark !== BYTE_ORDER_MARK || first.version !== PROTOCOL_VERSION || first.pageSize !== this.pageSize)
      throw new ProtocolError('source HELLO does not match ours');
    const second = this.#readFrame();
    if (second.type !== FrameType.REGIONS) throw new ProtocolError('expected REGIONS from the source');
    this.regions = second.regions;
    return this.regions;
  }

  sendGet(id: number, region: number, firstPage: number, count: number, flags: number): void {
    writeGet(this.#get, id, region, firstPage, count, flags);
    this.#write(this.#get);
  }

  /** Reads the next page run. Its data (if any) lands in this.data from offset 0. */
  readRun(): Run {
    this.#readExact(this.#head, 0, HEADER_SIZE);
    const h = readHeader(this.#head);
    if (h.type === FrameType.PAGES || h.type === FrameType.PUSH || h.type === FrameType.ZERO) {
      if (h.length < RUN_DESC) throw new ProtocolError('truncated page run');
      this.#readExact(this.#head, HEADER_SIZE, RUN_DESC);
      const run = readRun(this.#head.subarray(HEADER_SIZE));
      const dataLen = h.length - RUN_DESC;
      const expected = h.type === FrameType.ZERO ? 0 : run.count * this.pageSize;
      if (dataLen !== expected) throw new ProtocolError(`page run of ${run.count} pages carries ${dataLen} bytes`);
      if (dataLen > this.data.length) this.data = Buffer.alloc(dataLen);
      this.#readExact(this.data, 0, dataLen);
      return { type: h.type, flags: h.flags, id: h.id, ...run };
    }
    const body = Buffer.alloc(h.length);
    this.#readExact(body, 0, h.length);
    const frame = decodeBody(h, body);
    if (frame.type === FrameType.ERROR) throw new RemoteError(frame.code, frame.message);
    if (frame.type === FrameType.BYE) throw new PostcopyError('ERR_PEER_CLOSED', 'the source said BYE mid-migration');
    throw new ProtocolError(`unexpected frame type ${h.type} from the source`);
  }

  bye(reason: number): void {
    if (this.#closed) return;
    try {
      this.#write(encodeBye(reason));
    } catch {
      // the peer is gone already; nothing to tell it
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    native.close(this.fd);
  }

  #readFrame() {
    this.#readExact(this.#head, 0, HEADER_SIZE);
    const h = readHeader(this.#head);
    const body = Buffer.alloc(h.length);
    this.#readExact(body, 0, h.length);
    const frame = decodeBody(h, body);
    if (frame.type === FrameType.ERROR) throw new RemoteError(frame.code, frame.message);
    return frame;
  }

  #readExact(buf: Buffer, offset: number, len: number): void {
    if (len === 0) return;
    const n = native.readFull(this.fd, buf, offset, len);
    if (n === len) return;
    if (n >= 0 || n === -C.ECONNRESET) throw new PostcopyError('ERR_PEER_CLOSED', 'the source closed the connection');
    throw new PostcopyError('ERR_PEER_CLOSED', `read from the source failed: errno ${-n}`);
  }

  #write(buf: Buffer): void {
    const n = native.writeAll(this.fd, buf, 0, buf.length);
    if (n !== buf.length) throw new PostcopyError('ERR_PEER_CLOSED', `write to the source failed: errno ${-n}`);
  }
}
