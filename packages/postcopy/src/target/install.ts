// Installing fetched pages into the target with UFFDIO_COPY / UFFDIO_ZEROPAGE, at wherever each
// page lives now (address-map.ts).
import { C, native } from '../native/index.js';
import { PostcopyError } from '../errors.js';
import { mapChangedSince, mapSeq, spanAt, type Span } from './address-map.js';
import { Counter, markPresent, type SharedState } from './shared-state.js';

/**
 * `fault`: the thread that reads the uffd, whose extent table is current up to the events it has
 * read; a map change it has not read yet (EAGAIN) ends the install, and the caller retries later.
 * `push`: any other thread; it waits for the fault thread to apply map changes, and checks that a
 * change applied meanwhile did not make its address stale.
 * Either way, no VMA at an address (ENOENT) may mean the page moved and its event is not read yet,
 * or that it is gone for good: see unmappedForGood.
 */
export type Installer = 'fault' | 'push';

const span: Span = { addr: 0, count: 0 };
const check: Span = { addr: 0, count: 0 };
const MAX_RETRIES = 5000;

function place(uffd: number, addr: number, data: Uint8Array | null, offset: number, length: number): number {
  return data ? native.uffdCopy(uffd, addr, data, offset, length, false) : native.uffdZeropage(uffd, addr, length, false);
}

/**
 * Installs pages [first, first + count) of `mapping`, skipping those already there (RACED) and those
 * known to be unmapped. Returns how many pages, at the end of the run, it left missing because the
 * map is changing or the address has no VMA (0: all done). Throws ERR_TARGET_GONE once the process
 * has exited, ERR_UFFD otherwise.
 */
export function installPages(
  state: SharedState,
  uffd: number,
  mapping: number,
  first: number,
  count: number,
  data: Uint8Array | null,
  dataOffset: number,
  counter: number,
  installer: Installer,
): number {
  const ps = state.pageSize;
  const end = first + count;
  let p = first;
  let retries = 0;
  /** page p alone: a run that met ENOENT may only cross a VMA boundary (below) */
  let alone = -1;
  while (p < end) {
    const seq = installer === 'push' ? mapSeq(state) : 0;
    spanAt(state, mapping, p, end, span);
    if (span.addr < 0) {
      p += span.count; // unmapped: dropRange marked these already
      continue;
    }
    if (alone === p) span.count = 1;
    const r = place(uffd, span.addr, data, dataOffset + (p - first) * ps, span.count * ps);
    if (installer === 'push' && mapChangedSince(state, seq)) {
      // The process moved memory during this call: `span.addr` may have been stale.
      if (r > 0) {
        const n = Math.floor(r / ps);
        verifyPlaced(state, uffd, mapping, p, n, span.addr, data, dataOffset + (p - first) * ps);
        markPresent(state, mapping, p, n, data ? counter : Counter.ZERO);
        p += n;
      } else if (r === -C.ESRCH) throw gone();
      else if (retries++ >= MAX_RETRIES) throw stuck(r, data, span.addr);
      continue; // anything else: try again where the page is now
    }
    if (r > 0) {
      const n = Math.floor(r / ps);
      markPresent(state, mapping, p, n, data ? counter : Counter.ZERO);
      p += n;
      retries = 0;
    } else if (r === -C.EEXIST) {
      markPresent(state, mapping, p, 1, Counter.RACED);
      p++;
    } else if (r === -C.EAGAIN) {
      // The map is changing (fork, mremap, munmap) until the fault thread reads that event.
      if (installer === 'fault') return end - p;
      if (retries++ >= MAX_RETRIES) throw stuck(r, data, span.addr);
      if (retries > 10) Atomics.wait(state.counters, Counter.STOP, 0, 1);
    } else if (r === -C.ENOENT && installer === 'push' && !Atomics.load(state.counters, Counter.REGISTERED)) {
      // Not registered yet (the restore is still setting the process up): hold the pages, try again.
      if (!waitRegistered(state, 1)) return end - p;
    } else if (r === -C.ENOENT && span.count > 1) {
      // A copy must lie within one VMA: the task may have split ours since (mprotect, which
      // sends no event), and a run across the split fails whole. Only page p alone tells.
      alone = p;
    } else if (r === -C.ENOENT) {
      if (unmappedForGood(state, uffd, mapping, p, span.addr, installer)) {
        markPresent(state, mapping, p, 1, Counter.DROPPED);
        p++;
      } else if (installer === 'fault') return end - p;
      else if (retries++ >= MAX_RETRIES) throw stuck(r, data, span.addr);
    } else {
      if (r === -C.ESRCH) throw gone();
      throw stuck(r, data, span.addr);
    }
  }
  return 0;
}

/**
 * A push installed pages while the fault thread applied a map change. If a page moved before the
 * copy, the copy landed where the page used to be: a copy at its current address then succeeds,
 * and some other memory of the process may hold the wrong data. That is fatal. If it moved after,
 * the page moved with it and the copy finds it there (EEXIST).
 */
function verifyPlaced(state: SharedState, uffd: number, mapping: number, first: number, count: number, usedAddr: number, data: Uint8Array | null, dataOffset: number): void {
  const ps = state.pageSize;
  mapSeq(state);
  for (let i = 0; i < count; i++) {
    spanAt(state, mapping, first + i, first + i + 1, check);
    if (check.addr < 0 || check.addr === usedAddr + i * ps) continue;
    let r = place(uffd, check.addr, data, dataOffset + i * ps, ps);
    for (let tries = 0; r === -C.EAGAIN && tries < MAX_RETRIES; tries++) {
      Atomics.wait(state.counters, Counter.STOP, 0, 1);
      r = place(uffd, check.addr, data, dataOffset + i * ps, ps);
    }
    if (r === -C.EEXIST || r === -C.ENOENT) continue;
    if (r === -C.ESRCH) throw gone();
    throw new PostcopyError('ERR_UFFD', `page ${first + i} of mapping ${mapping} was pushed to 0x${(usedAddr + i * ps).toString(16)} just as the process moved it to 0x${check.addr.toString(16)}`);
  }
}

const gone = () => new PostcopyError('ERR_TARGET_GONE', 'the target process has exited');

/** Waits up to ms for every range to be registered; false if the handler is stopping. */
function waitRegistered(state: SharedState, ms: number): boolean {
  const c = state.counters;
  if (Atomics.load(c, Counter.STOP)) return false;
  Atomics.wait(c, Counter.REGISTERED, 0, ms);
  return true;
}

const quietFds = new Int32Array(1);

/**
 * Nothing is mapped at `addr`, where the table puts the page. An mremap takes the old range away
 * before it queues its event, so wait until the uffd has nothing queued and every event read is
 * applied: if the table still says `addr`, the page is gone. False: it moved (install it where it
 * is now), or, for the fault thread, events wait to be read first.
 */
function unmappedForGood(state: SharedState, uffd: number, mapping: number, page: number, addr: number, installer: Installer): boolean {
  quietFds[0] = uffd;
  for (let tries = 0; tries < 100; tries++) {
    Atomics.wait(state.counters, Counter.STOP, 0, 1);
    const seq = installer === 'push' ? mapSeq(state) : 0;
    const queued = (native.pollIn(quietFds, 0) & 1) !== 0;
    if (queued && installer === 'fault') return false;
    if (queued) continue;
    spanAt(state, mapping, page, page + 1, check);
    if (installer === 'push' && mapChangedSince(state, seq)) continue;
    return check.addr === addr;
  }
  return false;
}

function stuck(r: number, data: Uint8Array | null, addr: number): PostcopyError {
  return new PostcopyError('ERR_UFFD', `${data ? 'UFFDIO_COPY' : 'UFFDIO_ZEROPAGE'} at 0x${addr.toString(16)} failed: errno ${-r}`);
}
