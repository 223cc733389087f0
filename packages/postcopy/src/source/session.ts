// What a page server decides, apart from how it does I/O: shared by the event-loop engine and
// the per-connection threads, so both answer alike.
import type { ErrorCode } from '../errors.js';
import { encodeHello, encodeRegions, RUN_HEADER_SIZE, writeRunHeader } from '../protocol/codec.js';
import { native } from '../native/index.js';
import { newNonce, parseTargetHelloAuth, proof, proofMatches, type PresharedKey } from '../protocol/auth.js';
import { BYTE_ORDER_MARK, CHECKSUM_SIZE, Feature, Flag, FrameType, PROTOCOL_VERSION, Role, type Frame, type Get, type RegionInfo } from '../protocol/frames.js';
import type { MemorySource } from './memory-source.js';
import type { SourceSpec } from './spec.js';
import type { PushPriority } from '../util/push-priority.js';

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
const wantsChecksums = (hello: Frame) => hello.type === FrameType.HELLO && (hello.features & Feature.CHECKSUM) !== 0;

/**
 * Fills a data run's checksum table (count × u32 CRC32C at `table`) from its pages, which follow the
 * table in `buf`.
 */
function writeChecksums(buf: Uint8Array, table: number, pageSize: number, count: number): void {
  native.crc32cPages(buf, table + count * CHECKSUM_SIZE, pageSize, count, buf, table);
}

const sourceHello = (source: MemorySource, auth: Uint8Array) =>
  encodeHello({ version: PROTOCOL_VERSION, pageSize: source.pageSize, features: Feature.ZERO | Feature.PUSH | Feature.CHECKSUM | (auth.length ? Feature.AUTH : 0), role: Role.SOURCE, auth });

/** What one key may read: every region, or the listed regions (and page ranges within them). */
export interface Grant extends PresharedKey {
  regions?: { region: number; firstPage?: number; count?: number }[];
}

/**
 * The source's side of the handshake, for both engines. Without grants: HELLO, then HELLO and
 * REGIONS back. With grants: the target names its key and sends a nonce; the source answers with
 * its nonce and proof, and sends REGIONS (the granted ones) only once the target's AUTH checks out.
 */
export class SourceHandshake {
  #source: MemorySource;
  #grants: readonly Grant[] | undefined;
  #grant: Grant | null = null;
  #nonceTarget: Uint8Array = new Uint8Array(0);
  #nonceSource: Uint8Array = new Uint8Array(0);
  #state: 'hello' | 'auth' | 'done' = 'hello';
  /** the target asked for page checksums */
  checksums = false;

  constructor(source: MemorySource, grants?: readonly Grant[]) {
    this.#source = source;
    this.#grants = grants?.length ? grants : undefined;
  }

  get done(): boolean {
    return this.#state === 'done';
  }

  /** the key this connection proved it holds (null when the source asks for none) */
  get keyId(): string | null {
    return this.#grant?.keyId ?? null;
  }

  /** Takes a frame that arrived before the handshake was done: what to answer, or a (fatal) rejection. */
  step(frame: Frame): { send: Buffer } | Rejection {
    if (this.#state === 'hello') {
      const rejected = checkHello(frame, this.#source.pageSize);
      if (rejected || frame.type !== FrameType.HELLO) return rejected!;
      this.checksums = wantsChecksums(frame);
      if (!this.#grants) {
        this.#state = 'done';
        return { send: Buffer.concat([sourceHello(this.#source, new Uint8Array(0)), encodeRegions(this.#source.regions)]) };
      }
      const asked = parseTargetHelloAuth(frame.auth);
      if (!asked) return { code: 'ERR_AUTH', message: 'this source serves only targets that hold a key' };
      const grant = this.#grants.find((g) => g.keyId === asked.keyId);
      if (!grant) return { code: 'ERR_AUTH', message: `no key ${JSON.stringify(asked.keyId)} here` };
      this.#grant = grant;
      this.#nonceTarget = Uint8Array.from(asked.nonce);
      this.#nonceSource = newNonce();
      this.#state = 'auth';
      return { send: sourceHello(this.#source, Buffer.concat([this.#nonceSource, proof('source', grant, this.#nonceTarget, this.#nonceSource)])) };
    }
    if (this.#state === 'auth') {
      if (frame.type !== FrameType.AUTH) return { code: 'ERR_AUTH', message: `expected AUTH, got frame type ${frame.type}` };
      if (!proofMatches(proof('target', this.#grant!, this.#nonceTarget, this.#nonceSource), frame.mac))
        return { code: 'ERR_AUTH', message: `wrong key for key id ${JSON.stringify(this.#grant!.keyId)}` };
      this.#state = 'done';
      return { send: encodeRegions(this.#grantedRegions()) };
    }
    return { code: 'ERR_PROTOCOL', message: 'the handshake is over' };
  }

  /** null when this connection may read the GET's pages. */
  checkGrant(get: Get): Rejection | null {
    const allowed = this.#grant?.regions;
    if (!allowed) return null;
    const ok = allowed.some(
      (g) => g.region === get.region && get.firstPage >= (g.firstPage ?? 0) && (g.count === undefined || get.firstPage + get.count <= (g.firstPage ?? 0) + g.count),
    );
    return ok ? null : { code: 'ERR_NOT_GRANTED', message: `key ${JSON.stringify(this.#grant!.keyId)} may not read pages ${get.firstPage}+${get.count} of region ${get.region}` };
  }

  #grantedRegions(): readonly RegionInfo[] {
    const allowed = this.#grant?.regions;
    return allowed ? this.#source.regions.filter((r) => allowed.some((g) => g.region === r.id)) : this.#source.regions;
  }
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

/** The most bytes writeRun() may write for `count` pages. */
export const maxRunSize = (pageSize: number, count: number) => RUN_HEADER_SIZE + count * (pageSize + CHECKSUM_SIZE);

/**
 * Writes one run of a GET's reply at buf[offset]: pages [p, q), all alike (see runEnd), as ZERO or
 * as PAGES/PUSH read straight from the source, with their checksums when the target asked.
 * Returns the bytes written.
 */
export function writeRun(buf: Buffer, offset: number, source: MemorySource, get: Get, p: number, q: number, checksums: boolean): number {
  const region = source.regions[get.region];
  const count = q - p;
  const zero = source.untouched(region, p);
  const dataLength = zero ? 0 : count * source.pageSize;
  const table = checksums && !zero ? count * CHECKSUM_SIZE : 0;
  const type = zero ? FrameType.ZERO : get.flags & Flag.BACKGROUND ? FrameType.PUSH : FrameType.PAGES;
  const flags = (q === get.firstPage + get.count ? Flag.END : 0) | (table ? Flag.CHECKSUMS : 0);
  writeRunHeader(buf, offset, type, get.id, flags, get.region, p, count, table + dataLength);
  const data = offset + RUN_HEADER_SIZE + table;
  if (!zero) source.read(region, p, count, buf, data);
  if (table) writeChecksums(buf, offset + RUN_HEADER_SIZE, source.pageSize, count);
  return RUN_HEADER_SIZE + table + dataLength;
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
  /** keys a target must prove it holds, and what each may read (none: no authentication) */
  grants?: Grant[];
  /** the thread lowers itself so at its first BACKGROUND GET (a push connection) */
  backgroundPriority?: PushPriority;
}

export const StatSlot = { GETS: 0, PAGES: 1, ZERO: 2, BYTES: 3, ERRORS: 4 } as const;
export const STAT_SLOTS = 5;

export type ConnectionMessage = { type: 'served'; keyId: string | null } | { type: 'done'; keyId: string | null } | { type: 'error-frame'; code: ErrorCode; message: string } | { type: 'closed' };
