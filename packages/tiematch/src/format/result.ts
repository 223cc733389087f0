// MICMAC's match files (.result), as PointMatch.cpp writes them:
// - v0: text, one line per match "x1 y1 x2 y2\n", numbers as a C++ ostream prints a double by
//   default (six significant digits, %g);
// - v1 (-newFormat): versioned header (magic 1452550588), u32 count, count x 4 f64.
import { TiematchError } from '../errors.js';
import { readVersionedHeader, VersionedType, writeVersionedHeader } from './header.js';

/** Matched coordinates: 4 numbers per match, x1 y1 x2 y2 (image 1 = file1, image 2 = file2). */
export type MatchCoordinates = Float64Array;

/** Formats a double as `%g` with six significant digits (glibc: exact value, ties to even). */
export function formatG(value: number, precision = 6): string {
  if (Number.isNaN(value)) return value < 0 ? '-nan' : 'nan';
  if (!Number.isFinite(value)) return value < 0 ? '-inf' : 'inf';
  if (value === 0) return Object.is(value, -0) ? '-0' : '0';
  const negative = value < 0;
  const { digits, exponent } = roundSignificant(Math.abs(value), precision);
  let body: string;
  if (exponent < -4 || exponent >= precision) {
    const mantissa = stripZeros(digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits);
    const e = Math.abs(exponent);
    body = `${mantissa}e${exponent < 0 ? '-' : '+'}${e < 10 ? '0' : ''}${e}`;
  } else if (exponent >= 0) {
    const int = digits.slice(0, exponent + 1);
    body = stripZeros(`${int}.${digits.slice(exponent + 1)}`);
  } else {
    body = stripZeros(`0.${'0'.repeat(-exponent - 1)}${digits}`);
  }
  return negative ? `-${body}` : body;
}

function stripZeros(s: string): string {
  if (!s.includes('.')) return s;
  return s.replace(/0+$/, '').replace(/\.$/, '');
}

/**
 * The `precision` leading digits of x > 0, rounded half to even on its exact binary value.
 * toExponential rounds the exact value too but breaks ties upwards; a tie is only possible where x
 * has exactly precision + 1 significant digits, the last a 5: those take the exact path.
 */
function roundSignificant(x: number, precision: number): { digits: string; exponent: number } {
  const longer = x.toExponential(precision);
  if (!(longer[precision + 1] === '5' && Number(longer) === x)) {
    const s = x.toExponential(precision - 1);
    const e = s.indexOf('e');
    return { digits: s.slice(0, e).replace('.', ''), exponent: Number(s.slice(e + 1)) };
  }
  return roundExactly(x, precision);
}

function roundExactly(x: number, precision: number): { digits: string; exponent: number } {
  const exact = exactDecimal(x);
  // exact = "<int>.<frac>", both possibly long; find the first significant digit.
  const [intPart, fracPart = ''] = exact.split('.');
  const all = intPart.replace(/^0+/, '') + fracPart;
  let exponent: number;
  let sig: string;
  if (/[1-9]/.test(intPart)) {
    const trimmedInt = intPart.replace(/^0+/, '');
    exponent = trimmedInt.length - 1;
    sig = all;
  } else {
    const lead = fracPart.search(/[1-9]/);
    exponent = -(lead + 1);
    sig = fracPart.slice(lead);
  }
  let head = sig.slice(0, precision).padEnd(precision, '0');
  const rest = sig.slice(precision);
  const roundUp = rest.length > 0 && (rest[0] > '5' || (rest[0] === '5' && (/[1-9]/.test(rest.slice(1)) || Number(head[head.length - 1]) % 2 === 1)));
  if (roundUp) {
    const bumped = (BigInt(head) + 1n).toString();
    if (bumped.length > precision) {
      head = bumped.slice(0, precision);
      exponent += 1;
    } else head = bumped;
  }
  return { digits: head, exponent };
}

/** The exact decimal expansion of a finite double (every binary fraction ends in decimal). */
function exactDecimal(x: number): string {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const hi = view.getUint32(0);
  const lo = view.getUint32(4);
  const biased = (hi >>> 20) & 0x7ff;
  let mantissa = (BigInt(hi & 0xfffff) << 32n) | BigInt(lo);
  let e2: number;
  if (biased === 0) e2 = -1074;
  else {
    mantissa |= 1n << 52n;
    e2 = biased - 1075;
  }
  if (e2 >= 0) return (mantissa << BigInt(e2)).toString();
  // mantissa / 2^-e2 = mantissa * 5^-e2 / 10^-e2
  const scaled = (mantissa * 5n ** BigInt(-e2)).toString().padStart(-e2 + 1, '0');
  const cut = scaled.length + e2;
  return `${scaled.slice(0, cut)}.${scaled.slice(cut)}`;
}

/** Each point's "x y" as a v0 .result writes it (formatG), ASCII, point p at bytes at[p] .. at[p + 1]. */
export interface PointsText {
  bytes: Uint8Array;
  at: Int32Array;
}

/** The points' "x y" text, in buffers from `buffer` (shared memory, to post to a thread uncopied). */
export function pointsText(x: Float64Array, y: Float64Array, buffer: (bytes: number) => ArrayBufferLike = (n) => new ArrayBuffer(n)): PointsText {
  const n = x.length;
  const text = new Array<string>(n);
  const at = new Int32Array(buffer(4 * (n + 1)));
  for (let p = 0; p < n; p++) {
    text[p] = `${formatG(x[p])} ${formatG(y[p])}`;
    at[p + 1] = at[p] + text[p].length;
  }
  const bytes = new Uint8Array(buffer(at[n]));
  for (let p = 0; p < n; p++) for (let i = 0, s = text[p]; i < s.length; i++) bytes[at[p] + i] = s.charCodeAt(i);
  return { bytes, at };
}

/** A v0 .result: line m is point index1[m]'s text in image 1, then index2[m]'s in image 2. */
export function textResultOf(index1: Int32Array, index2: Int32Array, text1: PointsText, text2: PointsText): Uint8Array {
  let length = 0;
  for (let m = 0; m < index1.length; m++) length += text1.at[index1[m] + 1] - text1.at[index1[m]] + text2.at[index2[m] + 1] - text2.at[index2[m]] + 2;
  const out = new Uint8Array(length);
  let o = 0;
  for (let m = 0; m < index1.length; m++) {
    for (let i = text1.at[index1[m]], end = text1.at[index1[m] + 1]; i < end; i++) out[o++] = text1.bytes[i];
    out[o++] = 0x20;
    for (let i = text2.at[index2[m]], end = text2.at[index2[m] + 1]; i < end; i++) out[o++] = text2.bytes[i];
    out[o++] = 0x0a;
  }
  return out;
}

/** A v0 (text) .result from each match's four numbers already in formatG's text. */
export function textResult(count: number, text: (match: number, column: number) => string): Uint8Array {
  const lines = new Array<string>(count);
  for (let i = 0; i < count; i++) lines[i] = `${text(i, 0)} ${text(i, 1)} ${text(i, 2)} ${text(i, 3)}\n`;
  return new TextEncoder().encode(lines.join(''));
}

export function serializeResult(matches: MatchCoordinates, newFormat: boolean): Uint8Array {
  const count = matches.length / 4;
  if (!newFormat) return textResult(count, (i, c) => formatG(matches[i * 4 + c]));
  const header = writeVersionedHeader(VersionedType.PointMatch, 1, false);
  const out = new Uint8Array(header.length + 4 + count * 32);
  out.set(header);
  const view = new DataView(out.buffer);
  view.setUint32(header.length, count, true);
  for (let i = 0; i < matches.length; i++) view.setFloat64(header.length + 4 + i * 8, matches[i], true);
  return out;
}

/** Reads a .result file of either version. */
export function parseResult(buf: Uint8Array, what = 'result file'): MatchCoordinates {
  const header = readVersionedHeader(buf, VersionedType.PointMatch, what);
  if (header) {
    if (header.version !== 1) throw new TiematchError('ERR_MAGIC', `${what}: match format version ${header.version}, only 0 and 1 are known`);
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    const little = !header.bigEndian;
    if (buf.length < header.size + 4) throw new TiematchError('ERR_TRUNCATED', `${what}: no match count`);
    const count = view.getUint32(header.size, little);
    if (buf.length < header.size + 4 + count * 32) throw new TiematchError('ERR_TRUNCATED', `${what}: ${count} matches announced, ${Math.floor((buf.length - header.size - 4) / 32)} present`);
    const out = new Float64Array(count * 4);
    for (let i = 0; i < out.length; i++) out[i] = view.getFloat64(header.size + 4 + i * 8, little);
    return out;
  }
  const text = new TextDecoder().decode(buf);
  const numbers = text.split(/\s+/).filter((s) => s.length > 0).map(Number);
  if (numbers.length % 4 !== 0 || numbers.some((n) => Number.isNaN(n))) {
    throw new TiematchError('ERR_TRUNCATED', `${what}: not a list of "x1 y1 x2 y2" lines`);
  }
  return Float64Array.from(numbers);
}
