// Wire protocol v1: types and constants. See docs/protocol.md.
import type { ErrorCode } from '../errors.js';

export const MAGIC = 0x4350; // "PC" as little-endian bytes 0x50 0x43
export const PROTOCOL_VERSION = 1;
export const HEADER_SIZE = 12;
export const BYTE_ORDER_MARK = 0x01020304;
/** Hard cap on one frame's body; a peer announcing more is malformed. */
export const MAX_BODY = 16 * 1024 * 1024 + 64;
export const DEFAULT_PAGE_SIZE = 4096;
export const SUPPORTED_PAGE_SIZES: readonly number[] = [4096, 65536];

export const FrameType = {
  HELLO: 1,
  REGIONS: 2,
  GET: 3,
  PAGES: 4,
  ZERO: 5,
  PUSH: 6,
  ERROR: 7,
  BYE: 8,
  AUTH: 9,
} as const;
export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

/** Header flag bits. */
export const Flag = {
  /** last frame of a reply to one GET */
  END: 1,
  /** GET: a background (push) request, answered with PUSH frames */
  BACKGROUND: 2,
  /** PAGES/PUSH: a CRC32C of each page (u32 each) precedes the page data */
  CHECKSUMS: 4,
} as const;

/** HELLO feature bits. */
export const Feature = {
  ZERO: 1, // ZERO frames for never-touched pages
  PUSH: 2, // background requests
  CHECKSUM: 4, // a CRC32C per page in PAGES/PUSH (Flag.CHECKSUMS), verified before install
  AUTH: 8, // a pre-shared key: HELLO carries nonces and the source's proof, AUTH the target's
} as const;
export const CHECKSUM_SIZE = 4;

export const Role = { SOURCE: 1, TARGET: 2 } as const;

export const ByeReason = {
  /** every page is present on the target: the source may release the process */
  DONE: 0,
  /** the target gives up; the source keeps the process */
  ABORT: 1,
} as const;

export interface Header {
  type: number;
  flags: number;
  id: number;
  length: number;
}

export interface Hello {
  type: typeof FrameType.HELLO;
  version: number;
  pageSize: number;
  byteOrderMark: number;
  features: number;
  role: number;
  auth: Uint8Array;
}

export interface RegionInfo {
  id: number;
  flags: number;
  /** start address (or offset) on the source */
  start: number;
  /** length in bytes, a multiple of the page size */
  length: number;
}

export interface Regions {
  type: typeof FrameType.REGIONS;
  regions: RegionInfo[];
}

export interface Get {
  type: typeof FrameType.GET;
  id: number;
  flags: number;
  region: number;
  firstPage: number;
  count: number;
}

/** PAGES, PUSH: data pages. ZERO: a run of never-touched pages, no data. */
export interface PageRun {
  type: typeof FrameType.PAGES | typeof FrameType.PUSH | typeof FrameType.ZERO;
  id: number;
  flags: number;
  region: number;
  firstPage: number;
  count: number;
  /** count × u32 CRC32C when flags has CHECKSUMS, else empty */
  checksums: Uint8Array;
  data: Uint8Array;
}

export interface ErrorFrame {
  type: typeof FrameType.ERROR;
  id: number;
  code: ErrorCode;
  message: string;
}

export interface Bye {
  type: typeof FrameType.BYE;
  reason: number;
}

/** The target's proof that it holds the key (see protocol/auth.ts). */
export interface Auth {
  type: typeof FrameType.AUTH;
  mac: Uint8Array;
}

export type Frame = Hello | Regions | Get | PageRun | ErrorFrame | Bye | Auth;
