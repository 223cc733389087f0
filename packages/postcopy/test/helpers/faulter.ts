// A separate process whose memory lives on a source: it maps a range, registers a userfaultfd,
// hands it to a fault handler (over fd 3 or a Unix socket path), then reads every page and prints hashes.
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
native.uffdApi(uffd, 0n);
native.uffdRegister(uffd, addr, length, C.UFFDIO_REGISTER_MODE_MISSING);
native.sendFd(sock, uffd, encodeHandoff(process.pid, [{ regionId: Number(args.get('region') ?? 0), localStart: addr, length }]));
native.close(uffd);
const ack = Buffer.alloc(1);
if (native.readFull(sock, ack, 0, 1) !== 1) {
  process.stderr.write('no ack from the handler\n');
  process.exit(3);
}
process.stdout.write(`${JSON.stringify({ event: 'attached' })}\n`);
// --slow: pause 1 ms every 16 pages, so a test can break things mid-migration.
const slow = args.get('slow') === '1';
const pause = new Int32Array(new SharedArrayBuffer(4));
const view = new Uint8Array(native.viewMemory(addr, length));
const hashes = new Uint32Array(length / pageSize);
// Touch in a scattered order so faults (not only the push) bring pages in.
const stride = 7;
const pages = length / pageSize;
for (let k = 0; k < pages; k++) {
  const p = (k * stride) % pages;
  hashPages(view.subarray(p * pageSize, (p + 1) * pageSize), pageSize, hashes, p);
  if (slow && k % 16 === 0) Atomics.wait(pause, 0, 0, 1);
}
process.stdout.write(`${JSON.stringify({ event: 'hashes', hashes: Array.from(hashes) })}\n`);
