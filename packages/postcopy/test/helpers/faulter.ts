// A separate process whose memory lives on a source: it maps a range, registers a userfaultfd,
// hands it to a fault handler (over fd 3 or a Unix socket path), then reads every page and prints hashes.
// --drop 1: before reading, it drops its second quarter (MADV_DONTNEED: reads as zero) and unmaps
// its last quarter (not read; its hashes stay 0), while most pages are still missing.
// --remap 1: a sixteenth of the way through it moves the range (mremap), and at an eighth it moves its
// first half again, so that missing pages are fetched for places other than where they started.
// --wait-file PATH: it reads nothing until PATH exists (at most 60 s), so a handler can finish first.
import { existsSync } from 'node:fs';
import { C, native } from '../../src/native/index.js';
import { encodeHandoff } from '../../src/target/handoff.js';
import { hashPages } from '../../src/util/pagehash.js';

const args = new Map<string, string>();
for (let i = 2; i + 1 < process.argv.length; i += 2) args.set(process.argv[i].replace(/^--/, ''), process.argv[i + 1]);
const length = Number(args.get('length'));
const pageSize = Number(args.get('page-size') ?? 4096);
const sock = args.has('socket') ? native.unixConnect(args.get('socket')!) : 3;
const addr = native.mmapAnon(length);
const uffd = native.uffdOpen(true);
const remap = args.get('remap') === '1';
const drop = args.get('drop') === '1';
const features = (remap ? C.UFFD_FEATURE_EVENT_REMAP | C.UFFD_FEATURE_EVENT_UNMAP : 0) | (drop ? C.UFFD_FEATURE_EVENT_REMOVE | C.UFFD_FEATURE_EVENT_UNMAP : 0);
native.uffdApi(uffd, BigInt(features));
native.uffdRegister(uffd, addr, length, C.UFFDIO_REGISTER_MODE_MISSING);
native.sendFd(sock, uffd, encodeHandoff(process.pid, [{ regionId: Number(args.get('region') ?? 0), localStart: addr, length }]));
native.close(uffd);
const ack = Buffer.alloc(1);
if (native.readFull(sock, ack, 0, 1) !== 1) {
  process.stderr.write('no ack from the handler\n');
  process.exit(3);
}
process.stdout.write(`${JSON.stringify({ event: 'attached' })}\n`);
if (args.has('wait-file')) {
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (let i = 0; i < 12_000 && !existsSync(args.get('wait-file')!); i++) Atomics.wait(nap, 0, 0, 5);
}
// --slow: pause 1 ms every 16 pages, so a test can break things mid-migration.
const slow = args.get('slow') === '1';
const pause = new Int32Array(new SharedArrayBuffer(4));
const pages = length / pageSize;
const half = Math.floor(pages / 2) * pageSize;
// where the first and the second half of the range are now
let low = new Uint8Array(native.viewMemory(addr, half));
let high = new Uint8Array(native.viewMemory(addr + half, length - half));
const moveTo = (from: number, len: number) => {
  const to = native.mmapAnon(len, 0, false);
  const moved = native.mremap(from, len, len, C.MREMAP_MAYMOVE | C.MREMAP_FIXED, to);
  process.stdout.write(`${JSON.stringify({ event: 'moved', from, to: moved, length: len })}\n`);
  return moved;
};
let lowAddr = addr;
const hashes = new Uint32Array(pages);
const quarter = Math.floor(pages / 4) * pageSize;
if (drop) {
  native.madvise(addr + quarter, quarter, C.MADV_DONTNEED);
  native.munmap(addr + 3 * quarter, length - 3 * quarter);
}
// Touch in a scattered order so faults (not only the push) bring pages in.
const stride = 7;
for (let k = 0; k < pages; k++) {
  if (remap && k === Math.floor(pages / 16)) {
    lowAddr = moveTo(addr, length);
    low = new Uint8Array(native.viewMemory(lowAddr, half));
    high = new Uint8Array(native.viewMemory(lowAddr + half, length - half));
  }
  if (remap && k === Math.floor(pages / 8)) low = new Uint8Array(native.viewMemory(moveTo(lowAddr, half), half));
  const p = (k * stride) % pages;
  const off = p * pageSize;
  if (drop && off >= 3 * quarter) continue;
  const page = off < half ? low.subarray(off, off + pageSize) : high.subarray(off - half, off - half + pageSize);
  hashPages(page, pageSize, hashes, p);
  if (slow && k % 16 === 0) Atomics.wait(pause, 0, 0, 1);
}
process.stdout.write(`${JSON.stringify({ event: 'hashes', hashes: Array.from(hashes) })}\n`);
