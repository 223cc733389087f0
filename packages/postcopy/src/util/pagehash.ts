/** FNV-1a over 32-bit words: a per-page fingerprint both ends compute the same way. */
export function hashWords(words: Uint32Array, start: number, count: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < start + count; i++) h = Math.imul(h ^ words[i], 16777619);
  return h >>> 0;
}

/** One hash per page of a byte buffer whose length is a multiple of pageSize (and 4-byte aligned). */
export function hashPages(bytes: Uint8Array, pageSize: number, out: Uint32Array, outOffset = 0): void {
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  const per = pageSize >>> 2;
  for (let p = 0; p < words.length / per; p++) out[outOffset + p] = hashWords(words, p * per, per);
}
