// A blocking connection to a page server, for a thread that may block (never the event loop).
import { ConnectionLost, PostcopyError, ProtocolError, RemoteError } from '../errors.js';
import { native } from '../native/index.js';
import { FdReader } from '../transport/fd-reader.js';
import { newNonce, NONCE_SIZE, proof, proofMatches, targetHelloAuth, type PresharedKey } from '../protocol/auth.js';
import { decodeBody, encodeAuth, encodeBye, encodeHello, readHeader, readRun, writeGet, GET_FRAME_SIZE } from '../protocol/codec.js';
import { BYTE_ORDER_MARK, CHECKSUM_SIZE, Feature, Flag, FrameType, HEADER_SIZE, PROTOCOL_VERSION, Role, type Header, type RegionInfo } from '../protocol/frames.js';
import type { Endpoint } from '../transport/transport.js';

export interface Run {
  type: number;
  flags: number;
  id: number;
  region: number;
  firstPage: number;
  count: number;
  /** PAGES/PUSH: the page bytes are channel.data[dataOffset, dataOffset + count*pageSize), valid until the next read */
  dataOffset: number;
}

/** What the fault and push threads need from a connection to a source. */
export interface PageChannel {
  readonly regions: RegionInfo[];
  /** the buffer holding the last run's pages */
  readonly data: Buffer;
  handshake(): RegionInfo[];
  sendGet(id: number, region: number, firstPage: number, count: number, flags: number): void;
  readRun(): Run;
  /** pages (indexes into the last run) whose data failed its checksum; empty when all passed */
  readonly corrupt: number[];
  bye(reason: number): void;
  close(): void;
}

const RUN_DESC = 16;
const RUN_FRAME = HEADER_SIZE + RUN_DESC;

export class BlockingChannel implements PageChannel {
  readonly fd: number;
  readonly pageSize: number;
  regions: RegionInfo[] = [];
  #get = Buffer.alloc(GET_FRAME_SIZE);
  #reader: FdReader;
  /** bytes of the last frame returned, consumed on the next read */
  #held = 0;
  #closed = false;
  readonly #checksums: boolean;
  #key: PresharedKey | null;
  /** the CRC32Cs of the last run's pages, as computed here */
  #sums = Buffer.alloc(0);
  readonly corrupt: number[] = [];

  /**
   * replyTimeoutMs: a reply that brings no byte for this long counts as a lost connection (0: wait
   * forever). key: the migration's pre-shared key, when the source asks for one. checksums: ask for
   * a CRC32C with every page, and check it (see FaultHandlerOptions.checksums).
   */
  constructor(endpoint: Endpoint, pageSize: number, replyTimeoutMs = 0, key?: PresharedKey, checksums = true) {
    this.pageSize = pageSize;
    this.#key = key ?? null;
    this.#checksums = checksums;
    if (endpoint.kind === 'tls') throw new PostcopyError('ERR_INVALID_ARG', 'a thread cannot speak TLS: connect through the handler\'s TlsBridge');
    this.fd = endpoint.kind === 'tcp' ? native.tcpConnect(endpoint.host, endpoint.port) : native.unixConnect(endpoint.path);
    if (replyTimeoutMs > 0) native.setRecvTimeout(this.fd, replyTimeoutMs);
    this.#reader = new FdReader(this.fd, Math.max(pageSize * 64, 1 << 20) + RUN_FRAME, 'source');
  }

  /** the receive buffer holding the last run's pages (see Run.dataOffset) */
  get data(): Buffer {
    return this.#reader.buf;
  }

  /**
   * HELLO exchange; returns the source's regions. With a key, both ends prove they hold it first
   * (protocol/auth.ts): a source that cannot, or asks for none, is refused with ERR_AUTH.
   */
  handshake(): RegionInfo[] {
    const key = this.#key;
    const nonceTarget = key ? newNonce() : null;
    const features = Feature.ZERO | Feature.PUSH | (this.#checksums ? Feature.CHECKSUM : 0) | (key ? Feature.AUTH : 0);
    this.#write(encodeHello({ version: PROTOCOL_VERSION, pageSize: this.pageSize, features, role: Role.TARGET, auth: key ? targetHelloAuth(key, nonceTarget!) : new Uint8Array(0) }));
    const first = this.#readFrame();
    if (first.type !== FrameType.HELLO) throw new ProtocolError('expected HELLO from the source');
    if (first.byteOrderMark !== BYTE_ORDER_MARK || first.version !== PROTOCOL_VERSION || first.pageSize !== this.pageSize)
      throw new ProtocolError('source HELLO does not match ours');
    if (this.#checksums && !(first.features & Feature.CHECKSUM)) throw new ProtocolError('the source does not checksum its pages');
    if (key) {
      if (first.auth.length !== NONCE_SIZE + 32) throw new PostcopyError('ERR_AUTH', 'the source asks for no key, so it cannot prove it holds ours');
      const nonceSource = first.auth.subarray(0, NONCE_SIZE);
      const sourceHoldsKey = proofMatches(proof('source', key, nonceTarget!, nonceSource), first.auth.subarray(NONCE_SIZE));
      // Our proof goes out either way, so that the source too can tell (and log) the keys differ.
      this.#write(encodeAuth(proof('target', key, nonceTarget!, nonceSource)));
      if (!sourceHoldsKey) throw new PostcopyError('ERR_AUTH', `the source does not hold key ${JSON.stringify(key.keyId)}`);
    }
    const second = this.#readFrame();
    if (second.type !== FrameType.REGIONS) throw new ProtocolError(`expected REGIONS from the source, got frame type ${second.type}`);
    this.regions = second.regions;
    return this.regions;
  }

  sendGet(id: number, region: number, firstPage: number, count: number, flags: number): void {
    writeGet(this.#get, id, region, firstPage, count, flags);
    this.#write(this.#get);
  }

  /** Reads the next page run. Its data (if any) lands in this.data from offset 0. */
  readRun(): Run {
    const r = this.#reader;
    r.consume(this.#held);
    this.#held = 0;
    r.need(HEADER_SIZE);
    const h = readHeader(r.buf, r.start);
    if (h.type === FrameType.PAGES || h.type === FrameType.PUSH || h.type === FrameType.ZERO) {
      if (h.length < RUN_DESC) throw new ProtocolError('truncated page run');
      const dataLen = h.length - RUN_DESC;
      r.need(RUN_FRAME + dataLen);
      const run = readRun(r.buf, r.start + HEADER_SIZE);
      const zero = h.type === FrameType.ZERO;
      const table = h.flags & Flag.CHECKSUMS && !zero ? run.count * CHECKSUM_SIZE : 0;
      if (this.#checksums && !zero && !table) throw new ProtocolError('a page run without its checksums');
      const expected = zero ? 0 : table + run.count * this.pageSize;
      if (dataLen !== expected) throw new ProtocolError(`page run of ${run.count} pages carries ${dataLen} bytes`);
      this.#held = RUN_FRAME + dataLen;
      const dataOffset = r.start + RUN_FRAME + table;
      this.corrupt.length = 0;
      if (table) this.#verify(r.buf, dataOffset - table, dataOffset, run.count);
      return { type: h.type, flags: h.flags, id: h.id, region: run.region, firstPage: run.firstPage, count: run.count, dataOffset };
    }
    const frame = this.#takeFrame(h);
    if (frame.type === FrameType.ERROR) throw new RemoteError(frame.code, frame.message);
    if (frame.type === FrameType.BYE) throw new PostcopyError('ERR_PEER_CLOSED', 'the source said BYE mid-migration');
    throw new ProtocolError(`unexpected frame type ${h.type} from the source`);
  }

  /** Lists in this.corrupt the pages whose CRC32C does not match the one sent with them. */
  #verify(buf: Buffer, table: number, data: number, count: number): void {
    const size = count * CHECKSUM_SIZE;
    if (this.#sums.length < size) this.#sums = Buffer.alloc(Math.max(size, 4096));
    native.crc32cPages(buf, data, this.pageSize, count, this.#sums, 0);
    for (let i = 0; i < count; i++) if (this.#sums.readUInt32LE(i * CHECKSUM_SIZE) !== buf.readUInt32LE(table + i * CHECKSUM_SIZE)) this.corrupt.push(i);
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
    const r = this.#reader;
    r.need(HEADER_SIZE);
    const frame = this.#takeFrame(readHeader(r.buf, r.start));
    if (frame.type === FrameType.ERROR) throw new RemoteError(frame.code, frame.message);
    return frame;
  }

  /** Decodes the frame whose header is at the reader's start, and consumes it. */
  #takeFrame(h: Header) {
    const r = this.#reader;
    r.need(HEADER_SIZE + h.length);
    const frame = decodeBody(h, Buffer.from(r.buf.subarray(r.start + HEADER_SIZE, r.start + HEADER_SIZE + h.length)));
    r.consume(HEADER_SIZE + h.length);
    return frame;
  }

  #write(buf: Buffer): void {
    const n = native.writeAll(this.fd, buf, 0, buf.length);
    if (n !== buf.length) throw new ConnectionLost(`write to the source failed: errno ${-n}`);
  }
}
