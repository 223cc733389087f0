import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ProtocolError } from '../src/errors.js';
import {
  decodeBody,
  encodeBye,
  encodeError,
  encodeGet,
  encodeHello,
  encodeRegions,
  encodeRunHeader,
  readHeader,
} from '../src/protocol/codec.js';
import { FrameDecoder } from '../src/protocol/decoder.js';
import { BYTE_ORDER_MARK, Flag, FrameType, HEADER_SIZE, MAX_BODY, type Frame } from '../src/protocol/frames.js';

const u32 = fc.integer({ min: 0, max: 0xffffffff });
const page = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });

/** Encoded frames paired with what decoding must give back. */
const frameArb: fc.Arbitrary<{ bytes: Buffer; check: (f: Frame) => void }> = fc.oneof(
  fc.record({ version: u32, pageSize: u32, features: u32, role: fc.integer({ min: 0, max: 0xffff }), auth: fc.uint8Array({ maxLength: 64 }) }).map((h) => ({
    bytes: encodeHello(h),
    check: (f: Frame) => {
      assert.equal(f.type, FrameType.HELLO);
      if (f.type !== FrameType.HELLO) return;
      assert.deepEqual([f.version, f.pageSize, f.features, f.role, f.byteOrderMark], [h.version, h.pageSize, h.features, h.role, BYTE_ORDER_MARK]);
      assert.deepEqual(Buffer.from(f.auth), Buffer.from(h.auth));
    },
  })),
  fc.array(fc.tuple(u32, u32, page, page).map(([id, flags, start, length]) => ({ id, flags, start, length })), { maxLength: 8 }).map((regions) => ({
    bytes: encodeRegions(regions),
    check: (f: Frame) => assert.deepEqual(f, { type: FrameType.REGIONS, regions }),
  })),
  fc.tuple(u32, u32, page, u32, fc.integer({ min: 0, max: 255 })).map(([id, region, first, count, flags]) => ({
    bytes: encodeGet(id, region, first, count, flags),
    check: (f: Frame) => assert.deepEqual(f, { type: FrameType.GET, id, flags, region, firstPage: first, count }),
  })),
  fc.tuple(u32, u32, page, fc.integer({ min: 1, max: 4 }), fc.constantFrom(FrameType.PAGES, FrameType.PUSH), fc.integer({ min: 0, max: 3 })).map(([id, region, first, count, type, flags]) => {
    const data = Buffer.alloc(count * 64, id & 0xff);
    return {
      bytes: Buffer.concat([encodeRunHeader(type, id, flags, region, first, count, data.length), data]),
      check: (f: Frame) => {
        assert.equal(f.type, type);
        if (f.type !== FrameType.PAGES && f.type !== FrameType.PUSH) return;
        assert.deepEqual([f.id, f.flags, f.region, f.firstPage, f.count], [id, flags, region, first, count]);
        assert.deepEqual(Buffer.from(f.data), data);
      },
    };
  }),
  fc.tuple(u32, fc.constantFrom('ERR_OUT_OF_RANGE', 'ERR_SOURCE_GONE', 'ERR_VERSION'), fc.string({ maxLength: 40 })).map(([id, code, message]) => ({
    bytes: encodeError(id, code as 'ERR_VERSION', message),
    check: (f: Frame) => assert.deepEqual(f, { type: FrameType.ERROR, id, code, message }),
  })),
  u32.map((reason) => ({ bytes: encodeBye(reason), check: (f: Frame) => assert.deepEqual(f, { type: FrameType.BYE, reason }) })),
);

/** Splits a buffer at the given cut points. */
function split(buf: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of points) {
    out.push(buf.subarray(prev, p));
    prev = p;
  }
  out.push(buf.subarray(prev));
  return out;
}

describe('protocol codec', () => {
  it('writes a little-endian header with magic "PC"', () => {
    const get = encodeGet(0x01020304, 7, 9, 3, Flag.BACKGROUND);
    assert.deepEqual([...get.subarray(0, HEADER_SIZE)], [0x50, 0x43, FrameType.GET, Flag.BACKGROUND, 4, 3, 2, 1, 16, 0, 0, 0]);
  });

  it('round-trips every frame type through arbitrary chunking', () => {
    fc.assert(
      fc.property(fc.array(frameArb, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 12 }), (frames, cuts) => {
        const stream = Buffer.concat(frames.map((f) => f.bytes));
        const decoder = new FrameDecoder();
        const out = split(stream, cuts).flatMap((c) => decoder.push(c));
        assert.equal(out.length, frames.length);
        frames.forEach((f, i) => f.check(out[i]));
        assert.equal(decoder.buffered, 0);
      }),
      { numRuns: 300 },
    );
  });

  it('fails garbage with ERR_PROTOCOL and never anything else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: 256 }), (bytes) => {
        const decoder = new FrameDecoder();
        try {
          decoder.push(bytes);
        } catch (err) {
          assert.ok(err instanceof ProtocolError, String(err));
          assert.equal(err.code, 'ERR_PROTOCOL');
          assert.throws(() => decoder.push(Buffer.alloc(1)), ProtocolError); // stays failed
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('rejects a corrupted byte in a valid frame cleanly', () => {
    fc.assert(
      fc.property(frameArb, fc.nat(), fc.integer({ min: 1, max: 255 }), (f, at, xor) => {
        const bytes = Buffer.from(f.bytes);
        bytes[at % bytes.length] ^= xor;
        try {
          new FrameDecoder().push(bytes);
        } catch (err) {
          assert.ok(err instanceof ProtocolError, String(err));
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('holds a truncated frame until the rest arrives', () => {
    const frame = encodeGet(1, 0, 5, 1);
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(frame.subarray(0, 20)), []);
    assert.equal(decoder.buffered, 20);
    assert.equal(decoder.push(frame.subarray(20)).length, 1);
  });

  it('refuses oversized bodies before buffering them', () => {
    const h = Buffer.alloc(HEADER_SIZE);
    h.writeUInt16LE(0x4350, 0);
    h[2] = FrameType.PAGES;
    h.writeUInt32LE(MAX_BODY + 1, 8);
    assert.throws(() => readHeader(h), /exceeds/);
  });

  it('rejects inconsistent bodies', () => {
    const hdr = (type: number, length: number) => ({ type, flags: 0, id: 0, length });
    assert.throws(() => decodeBody(hdr(FrameType.GET, 4), Buffer.alloc(4)), ProtocolError);
    assert.throws(() => decodeBody(hdr(FrameType.REGIONS, 4), Buffer.from([5, 0, 0, 0])), /count/);
    const run = encodeRunHeader(FrameType.PAGES, 1, 0, 0, 0, 2, 100).subarray(HEADER_SIZE);
    assert.throws(() => decodeBody(hdr(FrameType.PAGES, 116), Buffer.concat([run, Buffer.alloc(99)])), /whole number/);
    const zero = encodeRunHeader(FrameType.ZERO, 1, 0, 0, 0, 2, 0).subarray(HEADER_SIZE);
    assert.throws(() => decodeBody(hdr(FrameType.ZERO, 20), Buffer.concat([zero, Buffer.alloc(4)])), /no data/);
  });
});
