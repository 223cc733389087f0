// A frozen live process as a memory source: private anonymous ranges from /proc/PID/maps,
// read in place with process_vm_readv (no pipes, no copies through another process).
import { readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { PostcopyError } from '../errors.js';
import { C, native } from '../native/index.js';
import type { RegionInfo } from '../protocol/frames.js';
import type { MemorySource } from './memory-source.js';
import type { SourceSpec } from './spec.js';
import { residentPages } from '../util/pagemap.js';

export interface MapsEntry {
  start: number;
  end: number;
  perms: string;
  inode: number;
  path: string;
}

const KERNEL_PAGE = C.PAGE_SIZE;

export function parseMaps(text: string): MapsEntry[] {
  const out: MapsEntry[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+)\s+(\S{4})\s+\S+\s+\S+\s+(\d+)\s*(.*)$/.exec(line);
    if (!m) continue;
    out.push({ start: parseInt(m[1], 16), end: parseInt(m[2], 16), perms: m[3], inode: Number(m[4]), path: m[5].trim() });
  }
  return out;
}

/** Private, readable, anonymous: what post-copy has to move (heap, stack, anonymous mmaps). */
export function isPrivateAnonymous(e: MapsEntry): boolean {
  return e.perms[0] === 'r' && isPrivateAnonymousAnyAccess(e);
}

/**
 * The private anonymous mappings of a process (whatever their protection), in address order: what
 * `criu dump` will find lazy if the map does not change before it freezes the process.
 */
export function privateAnonymousRanges(pid: number): { start: number; length: number }[] {
  return readMaps(pid).filter(isPrivateAnonymousAnyAccess).map((e) => ({ start: e.start, length: e.end - e.start }));
}

/** The mappings of a process now; ERR_SOURCE_GONE when it does not exist. */
function readMaps(pid: number): MapsEntry[] {
  try {
    return parseMaps(readFileSync(`/proc/${pid}/maps`, 'utf8'));
  } catch {
    throw new PostcopyError('ERR_SOURCE_GONE', `process ${pid} does not exist`);
  }
}

/** Private anonymous, whatever its protection (a PROT_NONE guard area is one too). */
function isPrivateAnonymousAnyAccess(e: MapsEntry): boolean {
  if (e.perms[3] !== 'p' || e.inode !== 0) return false;
  return e.path === '' || e.path === '[heap]' || e.path === '[stack]' || e.path.startsWith('[anon:');
}

export type FreezeMethod = 'sigstop' | 'cgroup' | 'none';

export interface LiveProcessOptions {
  pageSize?: number;
  freeze?: FreezeMethod;
  /** Serve only these ranges; each must lie inside one private anonymous mapping. Default: all of them. */
  ranges?: { start: number; length: number }[];
  /**
   * Which pages of each range hold data (one byte per page), when the caller knows already, as from
   * a CRIU dump's pagemap: /proc/PID/pagemap is then not read. Pages not marked go as ZERO.
   */
  touched?: Uint8Array[];
}

function processState(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return null;
  }
}

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new PostcopyError('ERR_TIMEOUT', `timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
}

function cgroupDir(pid: number): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
  if (!line || line === '0::/') throw new PostcopyError('ERR_INVALID_ARG', `process ${pid} is in the root cgroup, which cannot be frozen`);
  return `/sys/fs/cgroup${line.slice(3)}`;
}

/** Throws ERR_PAGE_SIZE for a range that is empty or does not start and end on a page boundary. */
export function checkAligned(r: { start: number; length: number }, pageSize: number): void {
  if (r.start % pageSize !== 0 || r.length % pageSize !== 0 || r.length <= 0)
    throw new PostcopyError('ERR_PAGE_SIZE', `range 0x${r.start.toString(16)}+${r.length} is not aligned to ${pageSize}`);
}

/** Lets a process frozen by `freeze` run again; one that is gone needs nothing. */
function unfreeze(pid: number, freeze: FreezeMethod): void {
  try {
    if (freeze === 'sigstop') process.kill(pid, 'SIGCONT');
    else if (freeze === 'cgroup') writeFileSync(`${cgroupDir(pid)}/cgroup.freeze`, '0');
  } catch (err) {
    if (processState(pid) !== null) throw err;
  }
}

/**
 * Throws ERR_OUT_OF_RANGE unless each range lies inside one private anonymous mapping of the
 * process now (checked again once it is frozen): for callers that check before they freeze.
 */
export function checkRanges(pid: number, ranges: readonly { start: number; length: number }[]): void {
  if (!ranges.length) return;
  const maps = readMaps(pid).filter(isPrivateAnonymousAnyAccess);
  for (const r of ranges)
    if (!maps.some((e) => r.start >= e.start && r.start + r.length <= e.end))
      throw new PostcopyError('ERR_OUT_OF_RANGE', `range 0x${r.start.toString(16)}+${r.length} is not inside one private anonymous mapping of ${pid}`);
}

export class LiveProcessSource implements MemorySource {
  readonly pageSize: number;
  readonly regions: RegionInfo[];
  #touched: Uint8Array[];
  #pid: number;
  #freeze: FreezeMethod;
  #gone = false;

  private constructor(pid: number, pageSize: number, freeze: FreezeMethod, regions: RegionInfo[], touched: Uint8Array[]) {
    this.#pid = pid;
    this.pageSize = pageSize;
    this.#freeze = freeze;
    this.regions = regions;
    this.#touched = touched;
  }

  get pid(): number {
    return this.#pid;
  }

  /** Freezes the process (unless freeze is 'none'), then maps its memory. */
  static async attach(pid: number, options: LiveProcessOptions = {}): Promise<LiveProcessSource> {
    const pageSize = options.pageSize ?? 4096;
    if (pageSize % KERNEL_PAGE !== 0) throw new PostcopyError('ERR_PAGE_SIZE', `page size ${pageSize} is not a multiple of ${KERNEL_PAGE}`);
    for (const r of options.ranges ?? []) checkAligned(r, pageSize);
    const state = processState(pid);
    if (state === null) throw new PostcopyError('ERR_SOURCE_GONE', `process ${pid} does not exist`);
    const freeze = options.freeze ?? 'sigstop';
    // Whatever fails once the process is frozen lets it go again: a task is never left stopped by
    // us (one that was stopped already stays so).
    try {
      return await LiveProcessSource.#freezeAndMap(pid, pageSize, freeze, options);
    } catch (err) {
      try {
        if (!(freeze === 'sigstop' && (state === 'T' || state === 't'))) unfreeze(pid, freeze);
      } catch {
        // the error that stopped the attach says more; a gone process needs nothing
      }
      throw err;
    }
  }

  static async #freezeAndMap(pid: number, pageSize: number, freeze: FreezeMethod, options: LiveProcessOptions): Promise<LiveProcessSource> {
    if (freeze === 'sigstop') {
      process.kill(pid, 'SIGSTOP');
      await waitFor(() => {
        const s = processState(pid);
        if (s === null) throw new PostcopyError('ERR_SOURCE_GONE', `process ${pid} exited while being frozen`);
        return s === 'T' || s === 't';
      }, 5000, `process ${pid} to stop`);
    } else if (freeze === 'cgroup') {
      const dir = cgroupDir(pid);
      writeFileSync(`${dir}/cgroup.freeze`, '1');
      await waitFor(() => /frozen 1/.test(readFileSync(`${dir}/cgroup.events`, 'utf8')), 5000, `cgroup ${dir} to freeze`);
    }
    const all = parseMaps(readFileSync(`/proc/${pid}/maps`, 'utf8'));
    // Asked-for ranges may lie in unreadable areas (guard pages): never touched, they go as ZERO.
    const maps = all.filter(options.ranges ? isPrivateAnonymousAnyAccess : isPrivateAnonymous);
    const wanted = options.ranges ?? maps.map((e) => ({ start: e.start, length: e.end - e.start }));
    const regions: RegionInfo[] = wanted.map((r, id) => {
      checkAligned(r, pageSize);
      const inside = maps.some((e) => r.start >= e.start && r.start + r.length <= e.end);
      if (!inside)
        throw new PostcopyError('ERR_OUT_OF_RANGE', `range 0x${r.start.toString(16)}+${r.length} is not inside one private anonymous mapping of ${pid}`);
      return { id, flags: 0, start: r.start, length: r.length };
    });
    const given = options.touched;
    if (given && (given.length !== regions.length || given.some((t, i) => t.length !== regions[i].length / pageSize)))
      throw new PostcopyError('ERR_INVALID_ARG', 'touched must give one byte per page of each range');
    // Shared with the connection threads.
    const touched = given
      ? given.map((t) => {
          const shared = new Uint8Array(new SharedArrayBuffer(t.length));
          shared.set(t);
          return shared;
        })
      : regions.map((r) => residentPages(pid, r.start, r.length, pageSize, 'ERR_SOURCE_GONE'));
    return new LiveProcessSource(pid, pageSize, freeze, regions, touched);
  }

  /** A source over a process another thread has frozen and mapped: reads only. */
  static adopt(spec: Extract<SourceSpec, { kind: 'process' }>): LiveProcessSource {
    return new LiveProcessSource(spec.pid, spec.pageSize, 'none', spec.regions, spec.touched);
  }

  describe(): SourceSpec {
    return { kind: 'process', pid: this.#pid, pageSize: this.pageSize, regions: this.regions, touched: this.#touched };
  }

  read(region: RegionInfo, firstPage: number, count: number, buf: Uint8Array, offset: number): void {
    const len = count * this.pageSize;
    const n = native.processVmReadv(this.#pid, region.start + firstPage * this.pageSize, buf, offset, len);
    if (n === len) return;
    if (n === -C.ESRCH || processState(this.#pid) === null) {
      this.#gone = true;
      throw new PostcopyError('ERR_SOURCE_GONE', `source process ${this.#pid} is gone`);
    }
    throw new PostcopyError('ERR_SOURCE_GONE', `process_vm_readv of ${len} bytes at 0x${(region.start + firstPage * this.pageSize).toString(16)} returned ${n}`);
  }

  /**
   * Says which pages hold data (1) and which were never touched (0, served as ZERO), one array per
   * region, for a source attached before the dump that tells it (the connection threads share them).
   */
  setTouched(touched: Uint8Array[]): void {
    if (touched.length !== this.#touched.length || touched.some((t, i) => t.length !== this.#touched[i].length))
      throw new PostcopyError('ERR_INVALID_ARG', 'touched must give one byte per page of each range');
    touched.forEach((t, i) => this.#touched[i].set(t));
  }

  untouched(region: RegionInfo, page: number): boolean {
    return this.#touched[region.id][page] === 0;
  }

  /** Lets the process run again (the migration was aborted). */
  thaw(): void {
    if (this.#gone) return;
    unfreeze(this.#pid, this.#freeze);
  }

  /** Ends the source process: the target has every page. */
  release(): void {
    if (this.#gone) return;
    try {
      process.kill(this.#pid, 'SIGKILL');
    } catch {
      // already gone
    }
    this.#gone = true;
  }

  close(): void {}
}
