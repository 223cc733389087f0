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
import { Flag, FrameType, HEADER_SIZE, MAX_BODY } from '../src/protocol/frames.js';
import { frameArb } from './helpers/fuzz.js';

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
