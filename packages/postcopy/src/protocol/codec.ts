// Pure encoders and decoders for protocol v1 frames. Little-endian throughout.
import { ProtocolError } from '../errors.js';
import type { ErrorCode } from '../errors.js';
import {
  BYTE_ORDER_MARK,
  CHECKSUM_SIZE,
  Flag,
  FrameType,
  HEADER_SIZE,
  MAGIC,
  MAX_BODY,
  type Auth,
  type Bye,
  type ErrorFrame,
  type Frame,
  type Get,
  type Header,
  type Hello,
  type PageRun,
  type RegionInfo,
  type Regions,
} from './frames.js';

const GET_BODY = 16;
const RUN_BODY = 16;
const REGION_ENTRY = 24;
const HELLO_FIXED = 20;
export const MAX_REGIONS = 65536;
const MAX_TEXT = 1024;

export function writeHeader(buf: Uint8Array, offset: number, type: number, flags: number, id: number, length: number): void {
  const v = view(buf);
  v.setUint16(offset, MAGIC, true);
  v.setUint8(offset + 2, type);
  v.setUint8(offset + 3, flags);
  v.setUint32(offset + 4, id >>> 0, true);
  v.setUint32(offset + 8, length >>> 0, true);
}

/** Reads and validates a header; throws ProtocolError on bad magic, unknown type or oversized body. */
export function readHeader(buf: Uint8Array, offset = 0): Header {
  if (buf.length - offset < HEADER_SIZE) throw new ProtocolError('truncated header');
  const v = view(buf);
  const magic = v.getUint16(offset, true);
  if (magic !== MAGIC) throw new ProtocolError(`bad magic 0x${magic.toString(16)}`);
  const type = v.getUint8(offset + 2);
  if (type < FrameType.HELLO || type > FrameType.AUTH) throw new ProtocolError(`unknown frame type ${type}`);
  const length = v.getUint32(offset + 8, true);
  if (length > MAX_BODY) throw new ProtocolError(`frame body of ${length} bytes exceeds ${MAX_BODY}`);
  return { type, flags: v.getUint8(offset + 3), id: v.getUint32(offset + 4, true), length };
}

// The fault path encodes and decodes into the same few buffers over and over: reuse their views.
const views: { buf: Uint8Array | null; view: DataView | null }[] = Array.from({ length: 4 }, () => ({ buf: null, view: null }));
let nextView = 0;

function view(buf: Uint8Array): DataView {
  for (const e of views) if (e.buf === buf) return e.view!;
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const slot = views[nextView];
  nextView = (nextView + 1) % views.length;
  slot.buf = buf;
  slot.view = v;
  return v;
}

function frame(type: number, flags: number, id: number, bodyLength: number): { buf: Buffer; v: DataView } {
  const buf = Buffer.allocUnsafe(HEADER_SIZE + bodyLength);
  writeHeader(buf, 0, type, flags, id, bodyLength);
  return { buf, v: view(buf) };
}

const TWO_32 = 0x100000000;

// 64-bit fields as two 32-bit halves: no BigInt on the fault path.
function setU64(v: DataView, offset: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new ProtocolError(`value ${value} does not fit an unsigned 64-bit field`);
  v.setUint32(offset, value % TWO_32, true);
  v.setUint32(offset + 4, Math.floor(value / TWO_32), true);
}

function getU64(v: DataView, offset: number): number {
  const high = v.getUint32(offset + 4, true);
  if (high >= 0x200000) throw new ProtocolError('64-bit field exceeds 2^53');
  return high * TWO_32 + v.getUint32(offset, true);
}

export function encodeHello(h: Omit<Hello, 'type' | 'byteOrderMark'> & { byteOrderMark?: number }): Buffer {
  if (h.auth.length > 0xffff) throw new ProtocolError('auth blob too large');
  const { buf, v } = frame(FrameType.HELLO, 0, 0, HELLO_FIXED + h.auth.length);
  const o = HEADER_SIZE;
  v.setUint32(o, h.version, true);
  v.setUint32(o + 4, h.pageSize, true);
  v.setUint32(o + 8, h.byteOrderMark ?? BYTE_ORDER_MARK, true);
  v.setUint32(o + 12, h.features, true);
  v.setUint16(o + 16, h.role, true);
  v.setUint16(o + 18, h.auth.length, true);
  buf.set(h.auth, o + HELLO_FIXED);
  return buf;
}

export function encodeRegions(regions: readonly RegionInfo[]): Buffer {
  if (regions.length > MAX_REGIONS) throw new ProtocolError('too many regions');
  const { buf, v } = frame(FrameType.REGIONS, 0, 0, 4 + regions.length * REGION_ENTRY);
  v.setUint32(HEADER_SIZE, regions.length, true);
  regions.forEach((r, i) => {
    const o = HEADER_SIZE + 4 + i * REGION_ENTRY;
    v.setUint32(o, r.id, true);
    v.setUint32(o + 4, r.flags, true);
    setU64(v, o + 8, r.start);
    setU64(v, o + 16, r.length);
  });
  return buf;
}

export function encodeGet(id: number, region: number, firstPage: number, count: number, flags = 0): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_SIZE + GET_BODY);
  writeGet(buf, id, region, firstPage, count, flags);
  return buf;
}

/** Writes a GET into a reusable 28-byte buffer (the fault path allocates nothing). */
export function writeGet(buf: Uint8Array, id: number, region: number, firstPage: number, count: number, flags = 0): void {
  writeHeader(buf, 0, FrameType.GET, flags, id, GET_BODY);
  writeRunBody(buf, HEADER_SIZE, region, firstPage, count);
}

/** region, count, firstPage: the body of a GET and the descriptor of a page run alike (see readRun). */
function writeRunBody(buf: Uint8Array, offset: number, region: number, firstPage: number, count: number): void {
  const v = view(buf);
  v.setUint32(offset, region, true);
  v.setUint32(offset + 4, count, true);
  setU64(v, offset + 8, firstPage);
}

/** Header plus run descriptor of a PAGES/PUSH/ZERO frame; the page bytes follow it on the wire. */
export function encodeRunHeader(
  type: PageRun['type'],
  id: number,
  flags: number,
  region: number,
  firstPage: number,
  count: number,
  dataLength: number,
): Buffer {
  const buf = Buffer.allocUnsafe(HEADER_SIZE + RUN_BODY);
  writeRunHeader(buf, 0, type, id, flags, region, firstPage, count, dataLength);
  return buf;
}

/**
 * Writes a PAGES/PUSH/ZERO header and run descriptor (RUN_HEADER_SIZE bytes) at offset; the data
 * follows. With Flag.CHECKSUMS, `dataLength` counts the checksum table that comes first.
 */
export function writeRunHeader(
  buf: Uint8Array,
  offset: number,
  type: PageRun['type'],
  id: number,
  flags: number,
  region: number,
  firstPage: number,
  count: number,
  dataLength: number,
): void {
  writeHeader(buf, offset, type, flags, id, RUN_BODY + dataLength);
  writeRunBody(buf, offset + HEADER_SIZE, region, firstPage, count);
}

export function encodeError(id: number, code: ErrorCode, message: string): Buffer {
  const c = Buffer.from(code, 'ascii').subarray(0, 64);
  const m = Buffer.from(message, 'utf8').subarray(0, MAX_TEXT);
  const { buf, v } = frame(FrameType.ERROR, 0, id, 4 + c.length + m.length);
  v.setUint16(HEADER_SIZE, c.length, true);
  v.setUint16(HEADER_SIZE + 2, m.length, true);
  buf.set(c, HEADER_SIZE + 4);
  buf.set(m, HEADER_SIZE + 4 + c.length);
  return buf;
}

export const AUTH_MAC_SIZE = 32;

export function encodeAuth(mac: Uint8Array): Buffer {
  if (mac.length !== AUTH_MAC_SIZE) throw new ProtocolError(`an AUTH proof is ${AUTH_MAC_SIZE} bytes, not ${mac.length}`);
  const { buf } = frame(FrameType.AUTH, 0, 0, AUTH_MAC_SIZE);
  buf.set(mac, HEADER_SIZE);
  return buf;
}

export function encodeBye(reason: number): Buffer {
  const { buf, v } = frame(FrameType.BYE, 0, 0, 4);
  v.setUint32(HEADER_SIZE, reason, true);
  return buf;
}

/** Run descriptor of a PAGES/PUSH/ZERO body (or a GET body): region, count, firstPage. */
export function readRun(body: Uint8Array, offset = 0): { region: number; count: number; firstPage: number } {
  if (body.length - offset < RUN_BODY) throw new ProtocolError('truncated page run');
  const v = view(body);
  return { region: v.getUint32(offset, true), count: v.getUint32(offset + 4, true), firstPage: getU64(v, offset + 8) };
}

/** A GET whose validated header is at buf[offset]: decoded in place, for the serving thread. */
export function readGet(h: Header, buf: Uint8Array, offset: number): Get {
  if (h.length !== GET_BODY) throw new ProtocolError('GET body must be 16 bytes');
  const run = readRun(buf, offset + HEADER_SIZE);
  return { type: FrameType.GET, id: h.id, flags: h.flags, region: run.region, count: run.count, firstPage: run.firstPage };
}

export const RUN_HEADER_SIZE = HEADER_SIZE + RUN_BODY;
export const GET_FRAME_SIZE = HEADER_SIZE + GET_BODY;

/** Decodes a frame body given its validated header. The body may alias the input buffer. */
export function decodeBody(h: Header, body: Uint8Array): Frame {
  const v = view(body);
  switch (h.type) {
    case FrameType.HELLO: {
      if (body.length < HELLO_FIXED) throw new ProtocolError('truncated HELLO');
      const authLen = v.getUint16(18, true);
      if (body.length !== HELLO_FIXED + authLen) throw new ProtocolError('HELLO length does not match its auth field');
      return {
        type: FrameType.HELLO,
        version: v.getUint32(0, true),
        pageSize: v.getUint32(4, true),
        byteOrderMark: v.getUint32(8, true),
        features: v.getUint32(12, true),
        role: v.getUint16(16, true),
        auth: body.subarray(HELLO_FIXED),
      };
    }
    case FrameType.REGIONS: {
      if (body.length < 4) throw new ProtocolError('truncated REGIONS');
      const count = v.getUint32(0, true);
      if (count > MAX_REGIONS || body.length !== 4 + count * REGION_ENTRY) throw new ProtocolError('REGIONS length does not match its count');
      const regions: RegionInfo[] = [];
      for (let i = 0; i < count; i++) {
        const o = 4 + i * REGION_ENTRY;
        regions.push({ id: v.getUint32(o, true), flags: v.getUint32(o + 4, true), start: getU64(v, o + 8), length: getU64(v, o + 16) });
      }
      return { type: FrameType.REGIONS, regions } satisfies Regions;
    }
    case FrameType.GET: {
      if (body.length !== GET_BODY) throw new ProtocolError('GET body must be 16 bytes');
      const run = readRun(body);
      return { type: FrameType.GET, id: h.id, flags: h.flags, ...run } satisfies Get;
    }
    case FrameType.PAGES:
    case FrameType.PUSH:
    case FrameType.ZERO: {
      const run = readRun(body);
      const table = h.flags & Flag.CHECKSUMS ? run.count * CHECKSUM_SIZE : 0;
      if (h.type === FrameType.ZERO && body.length !== RUN_BODY) throw new ProtocolError('ZERO carries no data');
      if (body.length < RUN_BODY + table) throw new ProtocolError('truncated checksum table');
      const data = body.subarray(RUN_BODY + table);
      if (h.type !== FrameType.ZERO && (run.count === 0 || data.length % run.count !== 0))
        throw new ProtocolError('page data is not a whole number of pages');
      return { type: h.type, id: h.id, flags: h.flags, ...run, checksums: body.subarray(RUN_BODY, RUN_BODY + table), data } satisfies PageRun;
    }
    case FrameType.ERROR: {
      if (body.length < 4) throw new ProtocolError('truncated ERROR');
      const cl = v.getUint16(0, true);
      const ml = v.getUint16(2, true);
      if (body.length !== 4 + cl + ml) throw new ProtocolError('ERROR length does not match its fields');
      const code = Buffer.from(body.subarray(4, 4 + cl)).toString('ascii') as ErrorCode;
      const message = Buffer.from(body.subarray(4 + cl)).toString('utf8');
      return { type: FrameType.ERROR, id: h.id, code, message } satisfies ErrorFrame;
    }
    case FrameType.BYE: {
      if (body.length !== 4) throw new ProtocolError('BYE body must be 4 bytes');
      return { type: FrameType.BYE, reason: v.getUint32(0, true) } satisfies Bye;
    }
    case FrameType.AUTH: {
      if (body.length !== AUTH_MAC_SIZE) throw new ProtocolError(`AUTH body must be ${AUTH_MAC_SIZE} bytes`);
      return { type: FrameType.AUTH, mac: body.subarray(0) } satisfies Auth;
    }
    default:
      throw new ProtocolError(`unknown frame type ${h.type}`);
  }
}
