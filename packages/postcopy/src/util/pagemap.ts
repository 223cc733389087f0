// Which pages of another process are in memory, from /proc/PID/pagemap (root reads it whole).
import { closeSync, openSync, readSync } from 'node:fs';
import { PostcopyError, type ErrorCode } from '../errors.js';
import { C } from '../native/index.js';

/**
 * One byte per page of [start, start + length): 1 when any of its kernel pages is present or
 * swapped (pagemap bits 63 and 62), in a SharedArrayBuffer so threads can share it. A short read
 * (the process is gone) throws `goneCode`.
 */
export function residentPages(pid: number, start: number, length: number, pageSize: number, goneCode: ErrorCode): Uint8Array {
  const kernelPage = C.PAGE_SIZE;
  const kernelPages = length / kernelPage;
  const perPage = pageSize / kernelPage;
  const resident = new Uint8Array(new SharedArrayBuffer(length / pageSize));
  const fd = openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    const chunkPages = 65536;
    const buf = Buffer.allocUnsafe(chunkPages * 8);
    for (let k = 0; k < kernelPages; k += chunkPages) {
      const n = Math.min(chunkPages, kernelPages - k);
      const got = readSync(fd, buf, 0, n * 8, (start / kernelPage + k) * 8);
      if (got !== n * 8) throw new PostcopyError(goneCode, `short pagemap read for process ${pid}`);
      for (let i = 0; i < n; i++) {
        // bit 63 present, bit 62 swapped: the high byte is at offset 7
        if (buf[i * 8 + 7] & 0xc0) resident[Math.floor((k + i) / perPage)] = 1;
      }
    }
  } finally {
    closeSync(fd);
  }
  return resident;
}
