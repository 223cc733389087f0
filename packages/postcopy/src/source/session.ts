// What a page server decides, apart from how it does I/O: shared by the event-loop engine and
// the per-connection threads, so both answer alike.
import type { ErrorCode } from '../errors.js';
import { encodeHello, encodeRegions } from '../protocol/codec.js';
import { native } from '../native/index.js';
import { BYTE_ORDER_MARK, CHECKSUM_SIZE, Feature, FrameType, PROTOCOL_VERSION, Role, type Frame, type Get, type RegionInfo } from '../protocol/frames.js';
import type { MemorySource } from './memory-source.js';
import type { SourceSpec } from './spec.js';

export interface Rejection {
  code: ErrorCode;
  message: string;
}

/** null when the target's first frame is an acceptable HELLO. */
export function checkHello(frame: Frame, pageSize: number): Rejection | null {
  if (frame.type !== FrameType.HELLO) return { code: 'ERR_PROTOCOL', message: 'the first frame must be HELLO' };
  if (frame.byteOrderMark !== BYTE_ORDER_MARK)
    return { code: 'ERR_PROTOCOL', message: `byte-order mark 0x${frame.byteOrderMark.toString(16)} is not 0x${BYTE_ORDER_MARK.toString(16)}` };
  if (frame.version !== PROTOCOL_VERSION)
    return { code: 'ERR_VERSION', message: `protocol version ${frame.version} is not supported (this source speaks ${PROTOCOL_VERSION})` };
  if (frame.pageSize !== pageSize) return { code: 'ERR_PAGE_SIZE', message: `target page size ${frame.pageSize} does not match the source's ${pageSize}` };
  return null;
}

/** Whether an accepted HELLO asks for a checksum with every page. */
export const wantsChecksums = (hello: Frame) => hello.type === FrameType.HELLO && (hello.features & Feature.CHECKSUM) !== 0;

/**
 * Fills a data run's checksum table (count × u32 CRC32C at `table`) from its pages, which follow the
 * table in `buf`.
 */
export function writeChecksums(buf: Uint8Array, table: number, pageSize: number, count: number): void {
  native.crc32cPages(buf, table + count * CHECKSUM_SIZE, pageSize, count, buf, table);
}

/** HELLO and REGIONS, the source's answer to an accepted HELLO. */
export function greeting(source: MemorySource): Buffer {
  const hello = encodeHello({ version: PROTOCOL_VERSION, pageSize: source.pageSize, features: Feature.ZERO | Feature.PUSH | Feature.CHECKSUM, role: Role.SOURCE, auth: new Uint8Array(0) });
  return Buffer.concat([hello, encodeRegions(source.regions)]);
}

/** null when the GET names pages the source has and may send at once. */
export function checkGet(get: Get, source: MemorySource, maxGetPages: number): Rejection | null {
  const region: RegionInfo | undefined = source.regions[get.region];
  if (!region) return { code: 'ERR_OUT_OF_RANGE', message: `no region ${get.region}` };
  if (get.count === 0 || get.count > maxGetPages) return { code: 'ERR_OUT_OF_RANGE', message: `GET of ${get.count} pages (allowed 1..${maxGetPages})` };
  const pages = region.length / source.pageSize;
  if (get.firstPage + get.count > pages) return { code: 'ERR_OUT_OF_RANGE', message: `pages ${get.firstPage}+${get.count} outside region ${get.region} of ${pages} pages` };
  return null;
}

/** The end of the run starting at page p: pages alike in being untouched (ZERO) or not (data). */
export function runEnd(source: MemorySource, region: RegionInfo, p: number, end: number): number {
  const zero = source.untouched(region, p);
  let q = p + 1;
  while (q < end && source.untouched(region, q) === zero) q++;
  return q;
}

export function maxGetPagesFor(pageSize: number, maxGetBytes = 4 << 20): number {
  return Math.max(1, Math.floor(maxGetBytes / pageSize));
}

// The contract between the server and a connection thread (connection-thread.ts).
export interface ConnectionThreadConfig {
  /** a connected stream socket; the thread uses it, the main thread closes it after the thread exits */
  fd: number;
  source: SourceSpec;
  maxGetPages: number;
  /** Stat slots this thread adds to (see StatSlot) */
  stats: Float64Array;
  /** [0]: 0, or 1 + a BYE reason to send when the read side is shut down */
  control: Int32Array;
}

export const StatSlot = { GETS: 0, PAGES: 1, ZERO: 2, BYTES: 3, ERRORS: 4 } as const;
export const STAT_SLOTS = 5;

export type ConnectionMessage = { type: 'done' } | { type: 'error-frame'; code: ErrorCode; message: string } | { type: 'closed' };
