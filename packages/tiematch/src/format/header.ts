// MICMAC's VersionedFileHeader: a byte 0xBA, then the C struct {char isMSBF; u32 magic; u32 version}
// as it lies in memory (3 padding bytes after isMSBF). The magic says the type and the byte order.
import { TiematchError } from '../errors.js';

export enum VersionedType {
  Digeo = 'Digeo',
  PointMatch = 'PointMatch',
}

const MAGIC: Record<VersionedType, { msbf: number; lsbf: number }> = {
  [VersionedType.Digeo]: { msbf: 3440636730, lsbf: 989008845 },
  [VersionedType.PointMatch]: { msbf: 3156841558, lsbf: 1452550588 },
};

export const VERSIONED_HEADER_SIZE = 13;
const MARK = 0xba;

/**
 * Reads a versioned header of the given type at the start of buf. Returns null where there is none
 * (MICMAC then reads version 0), and throws ERR_MAGIC where a header is there but is not this type's.
 */
export function readVersionedHeader(
  buf: Uint8Array,
  type: VersionedType,
  what: string,
): { version: number; bigEndian: boolean; size: number } | null {
  if (buf.length < VERSIONED_HEADER_SIZE || buf[0] !== MARK) return null;
  const isMsbf = buf[1];
  if (isMsbf !== 0 && isMsbf !== 1) return null;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  // isMSBF is the data's byte order; the magic is that order's constant, in the writer's order.
  const magicLe = view.getUint32(5, true);
  const magicBe = view.getUint32(5, false);
  const fileBig = isMsbf === 1;
  const expected = fileBig ? MAGIC[type].msbf : MAGIC[type].lsbf;
  if (magicLe !== expected && magicBe !== expected) {
    const known = Object.values(VersionedType).find((t) => [MAGIC[t].msbf, MAGIC[t].lsbf].some((m) => m === magicLe || m === magicBe));
    const why = known === type ? 'a magic that contradicts its byte-order flag' : known ? `the magic of a ${known} file` : `magic 0x${magicLe.toString(16)}`;
    throw new TiematchError('ERR_MAGIC', `${what}: versioned header with ${why}, expected a ${type} file`);
  }
  // MICMAC stores the version in the file's byte order.
  const version = view.getUint32(9, !fileBig);
  return { version, bigEndian: fileBig, size: VERSIONED_HEADER_SIZE };
}

/** The header MICMAC writes on a little-endian machine for a file of the given byte order. */
export function writeVersionedHeader(type: VersionedType, version: number, bigEndian: boolean): Uint8Array {
  const out = new Uint8Array(VERSIONED_HEADER_SIZE);
  const view = new DataView(out.buffer);
  out[0] = MARK;
  out[1] = bigEndian ? 1 : 0;
  view.setUint32(5, bigEndian ? MAGIC[type].msbf : MAGIC[type].lsbf, true);
  view.setUint32(9, version, !bigEndian);
  return out;
}
