// MICMAC keypoint files (.dat), as Digeo's DigeoPoint::readDigeoFile reads them:
// - v0 "siftpp_tgi": u32 N, u32 128, then N x {f32 x, y, scale, angle; u8[128]} (descriptor = 512 d);
// - v1 "Digeo": versioned header, u32 N, u32 128, then per point f64 x, y, scale, i16 type,
//   i16 nAngles, and per angle f64 angle, f64[128] descriptor.
// A point with several angles becomes one point per angle, as MICMAC's Ann reads them.
import { TiematchError } from '../errors.js';
import { readVersionedHeader, writeVersionedHeader, VersionedType } from './header.js';

export const DESCRIPTOR_SIZE = 128;

export enum DetectType {
  UNKNOWN = 0,
  LOCAL_MIN = 1,
  LOCAL_MAX = 2,
}

export interface Keypoints {
  count: number;
  x: Float64Array;
  y: Float64Array;
  scale: Float64Array;
  angle: Float64Array;
  type: Int16Array;
  /** Descriptors as u8 (512·d), count × 128; the exact integer search runs on these. */
  descriptors: Uint8Array;
}

export interface KeypointFileInfo {
  version: 0 | 1;
  bigEndian: boolean;
}

class Reader {
  private offset = 0;
  private readonly view: DataView;
  constructor(private readonly buf: Uint8Array, private readonly little: boolean, private readonly what: string) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  need(bytes: number, item: string): void {
    if (this.offset + bytes > this.buf.length) {
      throw new TiematchError('ERR_TRUNCATED', `${this.what}: truncated at byte ${this.offset} (${item} needs ${bytes} bytes, ${this.buf.length - this.offset} left)`);
    }
  }
  seek(offset: number): void {
    this.offset = offset;
  }
  get position(): number {
    return this.offset;
  }
  u32(): number {
    const v = this.view.getUint32(this.offset, this.little);
    this.offset += 4;
    return v;
  }
  i16(): number {
    const v = this.view.getInt16(this.offset, this.little);
    this.offset += 2;
    return v;
  }
  f32(): number {
    const v = this.view.getFloat32(this.offset, this.little);
    this.offset += 4;
    return v;
  }
  f64(): number {
    const v = this.view.getFloat64(this.offset, this.little);
    this.offset += 8;
    return v;
  }
  bytes(n: number): Uint8Array {
    const v = this.buf.subarray(this.offset, this.offset + n);
    this.offset += n;
    return v;
  }
}

function checkCounts(n: number, dim: number, what: string): void {
  if (dim !== DESCRIPTOR_SIZE) {
    throw new TiematchError('ERR_DIMENSION', `${what}: descriptor size ${dim}, only ${DESCRIPTOR_SIZE} is supported`);
  }
  if (n === 0) throw new TiematchError('ERR_EMPTY', `${what}: no points (N = 0)`);
}

function allocate(count: number): Keypoints {
  return {
    count,
    x: new Float64Array(count),
    y: new Float64Array(count),
    scale: new Float64Array(count),
    angle: new Float64Array(count),
    type: new Int16Array(count),
    descriptors: new Uint8Array(count * DESCRIPTOR_SIZE),
  };
}

/** Parses a keypoint file (v0 or v1, either byte order); `what` names it in errors. */
export function parseKeypoints(buf: Uint8Array, what = 'keypoint file'): { points: Keypoints; info: KeypointFileInfo } {
  const header = readVersionedHeader(buf, VersionedType.Digeo, what);
  if (header) {
    if (header.version !== 1) throw new TiematchError('ERR_MAGIC', `${what}: Digeo format version ${header.version}, only 0 and 1 are known`);
    return { points: parseV1(buf, header.size, !header.bigEndian, what), info: { version: 1, bigEndian: header.bigEndian } };
  }
  if (buf.length < 8) throw new TiematchError('ERR_TRUNCATED', `${what}: ${buf.length} bytes, too short for a header`);
  // v0 has no byte-order mark: MICMAC reads it in the machine's order; we take the order in which
  // the descriptor size reads 128.
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const little = view.getUint32(4, true) === DESCRIPTOR_SIZE || view.getUint32(4, false) !== DESCRIPTOR_SIZE;
  return { points: parseV0(buf, little, what), info: { version: 0, bigEndian: !little } };
}

function parseV0(buf: Uint8Array, little: boolean, what: string): Keypoints {
  const r = new Reader(buf, little, what);
  r.need(8, 'the header');
  const n = r.u32();
  const dim = r.u32();
  checkCounts(n, dim, what);
  const record = 16 + DESCRIPTOR_SIZE;
  r.need(n * record, `${n} points`);
  const k = allocate(n);
  for (let i = 0; i < n; i++) {
    k.x[i] = r.f32();
    k.y[i] = r.f32();
    k.scale[i] = r.f32();
    k.angle[i] = r.f32();
    k.descriptors.set(r.bytes(DESCRIPTOR_SIZE), i * DESCRIPTOR_SIZE);
  }
  return k;
}

function parseV1(buf: Uint8Array, start: number, little: boolean, what: string): Keypoints {
  const r = new Reader(buf, little, what);
  r.seek(start);
  r.need(8, 'the point count');
  const n = r.u32();
  const dim = r.u32();
  checkCounts(n, dim, what);
  // First pass: count angles (each becomes a point), checking the file holds them.
  const angleStart = new Array<number>();
  let total = 0;
  const perAngle = 8 * (DESCRIPTOR_SIZE + 1);
  for (let i = 0; i < n; i++) {
    r.need(28, `point ${i}`);
    const at = r.position;
    r.seek(at + 24);
    r.i16();
    const angles = r.i16();
    if (angles < 0) throw new TiematchError('ERR_DESCRIPTOR', `${what}: point ${i} has ${angles} angles`);
    r.need(angles * perAngle, `point ${i}'s ${angles} descriptors`);
    angleStart.push(at);
    total += angles;
    r.seek(r.position + angles * perAngle);
  }
  if (total === 0) throw new TiematchError('ERR_EMPTY', `${what}: ${n} points, none with a descriptor`);
  const k = allocate(total);
  let out = 0;
  for (let i = 0; i < n; i++) {
    r.seek(angleStart[i]);
    const x = r.f64();
    const y = r.f64();
    const scale = r.f64();
    const type = r.i16();
    const angles = r.i16();
    for (let a = 0; a < angles; a++, out++) {
      k.x[out] = x;
      k.y[out] = y;
      k.scale[out] = scale;
      k.type[out] = type;
      k.angle[out] = r.f64();
      for (let d = 0; d < DESCRIPTOR_SIZE; d++) {
        const v = r.f64() * 512;
        // The exact search runs on integers: Digeo's own v0 writer stores (uchar)(512 d).
        if (!(v >= 0 && v <= 255 && Number.isInteger(v))) {
          throw new TiematchError('ERR_DESCRIPTOR', `${what}: point ${i}, angle ${a}, dimension ${d}: ${v / 512} is not a multiple of 1/512 in [0, 255/512]`);
        }
        k.descriptors[out * DESCRIPTOR_SIZE + d] = v;
      }
    }
  }
  return k;
}

/** Serializes keypoints as v0 (f32 fields, u8 descriptors) or v1 (one angle per point). */
export function serializeKeypoints(k: Keypoints, version: 0 | 1, bigEndian = false): Uint8Array {
  const little = !bigEndian;
  if (version === 0) {
    const out = new Uint8Array(8 + k.count * (16 + DESCRIPTOR_SIZE));
    const v = new DataView(out.buffer);
    v.setUint32(0, k.count, little);
    v.setUint32(4, DESCRIPTOR_SIZE, little);
    let o = 8;
    for (let i = 0; i < k.count; i++) {
      v.setFloat32(o, k.x[i], little);
      v.setFloat32(o + 4, k.y[i], little);
      v.setFloat32(o + 8, k.scale[i], little);
      v.setFloat32(o + 12, k.angle[i], little);
      out.set(k.descriptors.subarray(i * DESCRIPTOR_SIZE, (i + 1) * DESCRIPTOR_SIZE), o + 16);
      o += 16 + DESCRIPTOR_SIZE;
    }
    return out;
  }
  const header = writeVersionedHeader(VersionedType.Digeo, 1, bigEndian);
  const out = new Uint8Array(header.length + 8 + k.count * (28 + 8 * (DESCRIPTOR_SIZE + 1)));
  out.set(header);
  const v = new DataView(out.buffer);
  let o = header.length;
  v.setUint32(o, k.count, little);
  v.setUint32(o + 4, DESCRIPTOR_SIZE, little);
  o += 8;
  for (let i = 0; i < k.count; i++) {
    v.setFloat64(o, k.x[i], little);
    v.setFloat64(o + 8, k.y[i], little);
    v.setFloat64(o + 16, k.scale[i], little);
    v.setInt16(o + 24, k.type[i], little);
    v.setInt16(o + 26, 1, little);
    v.setFloat64(o + 28, k.angle[i], little);
    o += 36;
    for (let d = 0; d < DESCRIPTOR_SIZE; d++, o += 8) v.setFloat64(o, k.descriptors[i * DESCRIPTOR_SIZE + d] / 512, little);
  }
  return out;
}
