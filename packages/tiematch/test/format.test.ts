import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { formatG, parseKeypoints, parseResult, serializeKeypoints, serializeResult, syntheticPair, TiematchError, type Keypoints } from '../src/index.js';
import { tempDir } from './helpers/data.js';
import { pointsText, textResultOf } from '../src/format/result.js';

function assertSamePoints(got: Keypoints, want: Keypoints, f32: boolean): void {
  assert.equal(got.count, want.count);
  const round = (v: number): number => (f32 ? Math.fround(v) : v);
  for (let i = 0; i < want.count; i++) {
    assert.equal(got.x[i], round(want.x[i]));
    assert.equal(got.y[i], round(want.y[i]));
    assert.equal(got.angle[i], round(want.angle[i]));
  }
  assert.deepEqual(got.descriptors, want.descriptors);
}

function expectCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (e: unknown) => e instanceof TiematchError && e.code === code);
}

describe('keypoint files', () => {
  const { a } = syntheticPair(50, 10, 3);
  for (const version of [0, 1] as const) {
    for (const bigEndian of [false, true]) {
      it(`v${version} ${bigEndian ? 'big' : 'little'}-endian round-trips`, () => {
        const { points, info } = parseKeypoints(serializeKeypoints(a, version, bigEndian));
        assert.deepEqual(info, { version, bigEndian });
        assertSamePoints(points, a, version === 0);
      });
    }
  }

  it('v0 is the siftpp_tgi layout: u32 N, u32 128, f32 x y scale angle, u8[128]', () => {
    const buf = serializeKeypoints(a, 0);
    const view = new DataView(buf.buffer);
    assert.equal(buf.length, 8 + 50 * 144);
    assert.equal(view.getUint32(0, true), 50);
    assert.equal(view.getUint32(4, true), 128);
    assert.equal(view.getFloat32(8 + 144, true), Math.fround(a.x[1]));
    assert.equal(buf[8 + 144 + 16 + 5], a.descriptors[128 + 5]);
  });

  it('v1 points with several angles become one point per angle, as MICMAC reads them', () => {
    const one = syntheticPair(2, 1, 9).a;
    const buf = serializeKeypoints(one, 1);
    // Rewrite point 0 to carry two angles: duplicate its angle+descriptor block.
    const header = 13 + 8;
    const perAngle = 8 * 129;
    const p0 = buf.subarray(header, header + 28 + perAngle);
    const second = Uint8Array.from(p0.subarray(28));
    new DataView(second.buffer).setFloat64(0, 1.5, true);
    second[8] = 0;
    second.fill(0, 8, 16); // first descriptor value 0
    const out = new Uint8Array(buf.length + perAngle);
    out.set(buf.subarray(0, header + 28 + perAngle));
    out.set(second, header + 28 + perAngle);
    out.set(buf.subarray(header + 28 + perAngle), header + 28 + 2 * perAngle);
    new DataView(out.buffer).setInt16(header + 26, 2, true);
    const { points } = parseKeypoints(out);
    assert.equal(points.count, 3);
    assert.equal(points.x[0], points.x[1]);
    assert.equal(points.angle[1], 1.5);
    assert.equal(points.descriptors[128], 0);
    assert.equal(points.x[2], one.x[1]);
  });

  it('bad input gets a clear error with a stable code', () => {
    const v0 = serializeKeypoints(a, 0);
    expectCode(() => parseKeypoints(v0.subarray(0, v0.length - 1)), 'ERR_TRUNCATED');
    expectCode(() => parseKeypoints(v0.subarray(0, 5)), 'ERR_TRUNCATED');
    const v1 = serializeKeypoints(a, 1);
    expectCode(() => parseKeypoints(v1.subarray(0, 100)), 'ERR_TRUNCATED');
    const wrongMagic = Uint8Array.from(v1);
    new DataView(wrongMagic.buffer).setUint32(5, 1452550588, true); // a match file's magic
    expectCode(() => parseKeypoints(wrongMagic), 'ERR_MAGIC');
    const wrongVersion = Uint8Array.from(v1);
    new DataView(wrongVersion.buffer).setUint32(9, 7, true);
    expectCode(() => parseKeypoints(wrongVersion), 'ERR_MAGIC');
    const dim64 = Uint8Array.from(v0);
    new DataView(dim64.buffer).setUint32(4, 64, true);
    expectCode(() => parseKeypoints(dim64), 'ERR_DIMENSION');
    const none = new Uint8Array(8);
    new DataView(none.buffer).setUint32(4, 128, true);
    expectCode(() => parseKeypoints(none), 'ERR_EMPTY');
    const notU8 = Uint8Array.from(v1);
    new DataView(notU8.buffer).setFloat64(13 + 8 + 36, 0.3, true);
    expectCode(() => parseKeypoints(notU8), 'ERR_DESCRIPTOR');
  });

  it('arbitrary bytes never crash the parser: a result or a TiematchError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, headed) => {
        const buf = headed && bytes.length > 0 ? Uint8Array.from([0xba, ...bytes]) : bytes;
        try {
          parseKeypoints(buf);
        } catch (e) {
          assert.ok(e instanceof TiematchError, String(e));
        }
      }),
      { numRuns: 3000 },
    );
  });
});

describe('result files', () => {
  it('numbers print as a C++ ostream prints a double (precision 6), ties to even', () => {
    const values = [0, -0.5, 100.0625, 1234.125, 1234.375, 0.0001234567, 1e-5, 123456.5, 1234567, 999999.5, 9.999995, 1e300, 1923.4375];
    let seed = 7;
    const next = (): number => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    for (let i = 0; i < 3000; i++) values.push(Math.fround(next() * 2000), Math.round(next() * 32000) / 16, next() * 10 ** Math.floor(next() * 16 - 8));
    const { dir, cleanup } = tempDir();
    try {
      const src = join(dir, 'g.cpp');
      writeFileSync(src, '#include <iostream>\n#include <cstdlib>\nint main(int c,char**v){for(int i=1;i<c;i++)std::cout<<strtod(v[i],0)<<"\\n";}\n');
      execFileSync('g++', ['-O1', '-o', join(dir, 'g'), src]);
      const want = execFileSync(join(dir, 'g'), values.map((v) => v.toPrecision(17)), { maxBuffer: 1 << 24 }).toString().trim().split('\n');
      values.forEach((v, i) => assert.equal(formatG(v), want[i], `value ${v.toPrecision(17)}`));
    } finally {
      cleanup();
    }
  });

  it('a v0 result from texts made once per point (tiematch batch) is the bytes of the per-value one', () => {
    const coordinate = fc.oneof(fc.double({ noNaN: true, noDefaultInfinity: true }), fc.double({ min: -1, max: 8000, noNaN: true }), fc.integer({ min: -5, max: 5000 }).map((v) => v / 4));
    fc.assert(
      fc.property(fc.array(fc.tuple(coordinate, coordinate), { minLength: 1, maxLength: 40 }), fc.array(fc.tuple(coordinate, coordinate), { minLength: 1, maxLength: 40 }), fc.array(fc.tuple(fc.nat(), fc.nat()), { maxLength: 60 }), (p1, p2, links) => {
        const index1 = Int32Array.from(links, (l) => l[0] % p1.length);
        const index2 = Int32Array.from(links, (l) => l[1] % p2.length);
        const coordinates = new Float64Array(links.length * 4);
        links.forEach((_, m) => coordinates.set([...p1[index1[m]], ...p2[index2[m]]], m * 4));
        const text = (p: [number, number][]) => pointsText(Float64Array.from(p, (v) => v[0]), Float64Array.from(p, (v) => v[1]), (n) => new SharedArrayBuffer(n));
        assert.deepEqual(Buffer.from(textResultOf(index1, index2, text(p1), text(p2))), Buffer.from(serializeResult(coordinates, false)));
      }),
      { numRuns: 300 },
    );
  });

  it('v0 is text "x1 y1 x2 y2" lines; v1 is the versioned header, u32 count, f64s', () => {
    const m = Float64Array.from([1.5, 2, 1234.5678, 0.25, 10, 20, 30, 40]);
    assert.equal(new TextDecoder().decode(serializeResult(m, false)), '1.5 2 1234.57 0.25\n10 20 30 40\n');
    const v1 = serializeResult(m, true);
    assert.deepEqual(Array.from(v1.subarray(0, 13)), [0xba, 0, 0, 0, 0, 0xbc, 0x29, 0x94, 0x56, 1, 0, 0, 0]);
    assert.equal(new DataView(v1.buffer).getUint32(13, true), 2);
    assert.equal(v1.length, 17 + 64);
    assert.deepEqual(parseResult(v1), m);
    assert.deepEqual(parseResult(serializeResult(Float64Array.from([1, 2, 3, 4]), false)), Float64Array.from([1, 2, 3, 4]));
    expectCode(() => parseResult(v1.subarray(0, 40)), 'ERR_TRUNCATED');
  });
});
