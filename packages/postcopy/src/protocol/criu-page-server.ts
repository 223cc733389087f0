// CRIU's page-server wire, as `criu dump --lazy-pages` serves it: a 24-byte little-endian header
// {u32 cmd; u32 nr_pages; u64 vaddr; u64 dst_id}. PS_IOV_GET asks for pages of task dst_id (its pid
// in the images); the answer is PS_IOV_ADD_F | PE_PRESENT << 16 with possibly fewer pages, then
// the pages. PS_IOV_CLOSE ends the session (answered with an int32 0) and lets the dump finish.
// Pure: the I/O is in target/criu-channel.ts (the fault thread's side) and criu/run.ts (the release).

export const PS_IOV_ADD_F = 6;
export const PS_IOV_GET = 7;
export const PS_IOV_CLOSE = 0x1023;
export const PS_HEADER_SIZE = 24;
/** the page flags ride in the command's upper 16 bits */
export const PS_CMD_BITS = 16;
/** a pagemap entry's flag: its pages are in the images (CRIU's images/pagemap.proto) */
export const PE_PRESENT = 1 << 2;
/** the answer to a PS_IOV_GET that carries pages */
export const PS_IOV_ADD_PRESENT = PS_IOV_ADD_F | (PE_PRESENT << PS_CMD_BITS);

export interface PageServerIov {
  cmd: number;
  nrPages: number;
  vaddr: number;
  dstId: number;
}

export function writeIov(buf: Buffer, offset: number, iov: PageServerIov): void {
  buf.writeUInt32LE(iov.cmd >>> 0, offset);
  buf.writeUInt32LE(iov.nrPages >>> 0, offset + 4);
  buf.writeUInt32LE(iov.vaddr % 0x100000000, offset + 8);
  buf.writeUInt32LE(Math.floor(iov.vaddr / 0x100000000), offset + 12);
  buf.writeUInt32LE(iov.dstId % 0x100000000, offset + 16);
  buf.writeUInt32LE(Math.floor(iov.dstId / 0x100000000), offset + 20);
}

export function readIov(buf: Buffer, offset: number): PageServerIov {
  return {
    cmd: buf.readUInt32LE(offset),
    nrPages: buf.readUInt32LE(offset + 4),
    vaddr: buf.readUInt32LE(offset + 12) * 0x100000000 + buf.readUInt32LE(offset + 8),
    dstId: buf.readUInt32LE(offset + 20) * 0x100000000 + buf.readUInt32LE(offset + 16),
  };
}
