// CRIU image files, read-only: the framing (two magics, then records of u32 length + protobuf)
// and the few messages post-copy needs (pagemap, mm/vma, pstree). The protobuf wire format is
// decoded by hand for just these fields; every malformed input ends in ERR_IMAGE.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PostcopyError } from '../errors.js';
import { PE_PRESENT } from '../protocol/criu-page-server.js';

export const IMG_COMMON_MAGIC = 0x54564319;
export const ImageMagic = {
  PAGEMAP: 0x56084025,
  MM: 0x57492820,
  PSTREE: 0x50273030,
} as const;

/** pagemap_entry flags */
export const PE_PARENT = 1 << 0;
export const PE_LAZY = 1 << 1;
export { PE_PRESENT };

const MAX_RECORD = 64 << 20;

export function imageError(message: string): PostcopyError {
  return new PostcopyError('ERR_IMAGE', message);
}

/** Splits an image into its protobuf records after checking both magics. */
export function imageRecords(bytes: Uint8Array, magic: number, name: string): Uint8Array[] {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < 8) throw imageError(`${name}: shorter than its magics`);
  if (b.readUInt32LE(0) !== IMG_COMMON_MAGIC) throw imageError(`${name}: not a CRIU image (magic 0x${b.readUInt32LE(0).toString(16)})`);
  if (b.readUInt32LE(4) !== magic) throw imageError(`${name}: image magic 0x${b.readUInt32LE(4).toString(16)}, expected 0x${magic.toString(16)}`);
  const out: Uint8Array[] = [];
  let o = 8;
  while (o < b.length) {
    if (b.length - o < 4) throw imageError(`${name}: truncated record length at byte ${o}`);
    const len = b.readUInt32LE(o);
    o += 4;
    if (len > MAX_RECORD || len > b.length - o) throw imageError(`${name}: record of ${len} bytes at byte ${o - 4} runs past the end`);
    out.push(b.subarray(o, o + len));
    o += len;
  }
  return out;
}

export type FieldValue = number | bigint | Uint8Array;

/** Protobuf wire format: field number -> values in order. Varints beyond 2^53 come as bigint. */
export function decodeFields(buf: Uint8Array, name: string): Map<number, FieldValue[]> {
  const fields = new Map<number, FieldValue[]>();
  let o = 0;
  const varint = (): number | bigint => {
    // Up to 7 bytes (49 bits: every address and size here) in plain numbers; BigInt beyond, as a
    // BigInt per byte made a dump's images take milliseconds to read, during the downtime.
    const start = o;
    let result = 0;
    for (let i = 0, scale = 1; i < 7; i++, scale *= 128) {
      if (o >= buf.length) throw imageError(`${name}: truncated varint`);
      const byte = buf[o++];
      result += (byte & 0x7f) * scale;
      if (!(byte & 0x80)) return result;
    }
    o = start;
    let big = 0n;
    for (let i = 0; i < 10; i++) {
      if (o >= buf.length) throw imageError(`${name}: truncated varint`);
      const byte = buf[o++];
      big |= BigInt(byte & 0x7f) << BigInt(7 * i);
      if (!(byte & 0x80)) return big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big & 0xffffffffffffffffn;
    }
    throw imageError(`${name}: varint longer than 10 bytes`);
  };
  const length = (): number => {
    const n = varint();
    if (typeof n !== 'number') throw imageError(`${name}: length exceeds 2^53`);
    return n;
  };
  while (o < buf.length) {
    const key = length();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 0) throw imageError(`${name}: field number 0`);
    let value: FieldValue;
    if (wire === 0) value = varint();
    else if (wire === 2) {
      const len = length();
      if (len > buf.length - o) throw imageError(`${name}: field ${field} of ${len} bytes runs past the end`);
      value = buf.subarray(o, o + len);
      o += len;
    } else if (wire === 1 || wire === 5) {
      const size = wire === 1 ? 8 : 4;
      if (size > buf.length - o) throw imageError(`${name}: truncated fixed field ${field}`);
      value = buf.subarray(o, o + size);
      o += size;
    } else throw imageError(`${name}: unsupported wire type ${wire} for field ${field}`);
    const list = fields.get(field);
    if (list) list.push(value);
    else fields.set(field, [value]);
  }
  return fields;
}

function num(fields: Map<number, FieldValue[]>, field: number, name: string, required: boolean, fallback = 0): number {
  const v = fields.get(field)?.at(-1);
  if (v === undefined) {
    if (required) throw imageError(`${name}: required field ${field} is missing`);
    return fallback;
  }
  if (typeof v === 'bigint') throw imageError(`${name}: field ${field} exceeds 2^53`);
  if (typeof v !== 'number') throw imageError(`${name}: field ${field} is not a varint`);
  return v;
}

export interface PagemapEntry {
  vaddr: number;
  nrPages: number;
  flags: number;
  inParent: boolean;
}

export interface Pagemap {
  pagesId: number;
  entries: PagemapEntry[];
}

export function parsePagemap(bytes: Uint8Array, name = 'pagemap'): Pagemap {
  const [head, ...rest] = imageRecords(bytes, ImageMagic.PAGEMAP, name);
  if (!head) throw imageError(`${name}: no pagemap head`);
  const pagesId = num(decodeFields(head, name), 1, `${name} head`, true);
  const entries = rest.map((rec, i) => {
    const where = `${name} entry ${i}`;
    const f = decodeFields(rec, where);
    const vaddr = num(f, 1, where, true);
    const compat = num(f, 2, where, true);
    const nrPages = f.has(5) ? num(f, 5, where, true) : compat;
    if (vaddr % 4096 !== 0) throw imageError(`${where}: vaddr 0x${vaddr.toString(16)} is not page aligned`);
    return { vaddr, nrPages, flags: num(f, 4, where, false, PE_PRESENT), inParent: num(f, 3, where, false) !== 0 };
  });
  return { pagesId, entries };
}

export interface Vma {
  start: number;
  end: number;
  prot: number;
  flags: number;
  status: number;
}

export interface Mm {
  vmas: Vma[];
  /**
   * Where the task's command line and environment lie (mm_arg_start..end, mm_env_start..end):
   * what /proc/PID/cmdline and environ read. The kernel reads them without a fault to userfaultfd.
   */
  argEnv: { start: number; end: number }[];
}

export function parseMm(bytes: Uint8Array, name = 'mm'): Mm {
  const [rec] = imageRecords(bytes, ImageMagic.MM, name);
  if (!rec) throw imageError(`${name}: empty`);
  const f = decodeFields(rec, name);
  const vmas: Vma[] = [];
  (f.get(14) ?? []).forEach((v, i) => {
    const where = `${name} vma ${i}`;
    if (!(v instanceof Uint8Array)) throw imageError(`${where}: not a message`);
    const g = decodeFields(v, where);
    if (typeof g.get(1)?.at(-1) === 'bigint') return; // [vsyscall], above 2^53: the kernel's, never migrated
    const start = num(g, 1, where, true);
    const end = num(g, 2, where, true);
    if (end <= start) throw imageError(`${where}: end 0x${end.toString(16)} is not above start 0x${start.toString(16)}`);
    vmas.push({ start, end, prot: num(g, 5, where, true), flags: num(g, 6, where, true), status: num(g, 7, where, true) });
  });
  // mm_entry: mm_arg_start 8, mm_arg_end 9, mm_env_start 10, mm_env_end 11 (CRIU's images/mm.proto)
  const argEnv = [[8, 9], [10, 11]]
    .map(([a, b]) => ({ start: num(f, a, name, false), end: num(f, b, name, false) }))
    .filter((r) => r.end > r.start);
  return { vmas, argEnv };
}

export interface PstreeEntry {
  pid: number;
  ppid: number;
}

export function parsePstree(bytes: Uint8Array, name = 'pstree'): PstreeEntry[] {
  return imageRecords(bytes, ImageMagic.PSTREE, name).map((rec, i) => {
    const where = `${name} entry ${i}`;
    const f = decodeFields(rec, where);
    return { pid: num(f, 1, where, true), ppid: num(f, 2, where, true) };
  });
}

/** Lazy ranges of one task: what post-copy must bring in, page-aligned, merged when adjacent. */
export function lazyRanges(pagemap: Pagemap, pageSize = 4096): { start: number; length: number }[] {
  const out: { start: number; length: number }[] = [];
  for (const e of pagemap.entries) {
    if (!(e.flags & PE_LAZY)) continue;
    const last = out.at(-1);
    const length = e.nrPages * pageSize;
    if (last && last.start + last.length === e.vaddr) last.length += length;
    else out.push({ start: e.vaddr, length });
  }
  return out;
}

const MAP_PRIVATE = 0x02;
const MAP_ANONYMOUS = 0x20;
const MAP_LOCKED = 0x2000;
const MAP_HUGETLB = 0x40000;
const VMA_AREA_VSYSCALL = 1 << 2;
const VMA_AREA_VDSO = 1 << 3;
const VMA_AREA_VVAR = 1 << 12;

/** What `criu restore --lazy-pages` registers with userfaultfd: private anonymous VMAs, bar a few. */
export function vmaCanBeLazy(v: Vma): boolean {
  return (
    (v.flags & MAP_ANONYMOUS) !== 0 &&
    (v.flags & MAP_PRIVATE) !== 0 &&
    (v.flags & (MAP_LOCKED | MAP_HUGETLB)) === 0 &&
    (v.status & (VMA_AREA_VSYSCALL | VMA_AREA_VDSO | VMA_AREA_VVAR)) === 0
  );
}

/**
 * The regions a post-copy target serves for one task: every VMA restore registers, whole, and in
 * each the pages CRIU holds (PE_LAZY). The other pages of those VMAs were never touched: zero.
 */
export function lazyLayout(mm: { vmas: Vma[] }, pagemap: Pagemap, pageSize = 4096): LazyLayout {
  // A migration asks twice per task (its source and its handler): the answer is kept, not redone.
  const known = layouts.get(mm)?.get(pagemap);
  if (known && known.pageSize === pageSize) return known.layout;
  const layout = computeLazyLayout(mm, pagemap, pageSize);
  if (!layouts.has(mm)) layouts.set(mm, new WeakMap());
  layouts.get(mm)!.set(pagemap, { pageSize, layout });
  return layout;
}

/** Shared by every caller of lazyLayout() with the same images: not to be modified. */
export interface LazyLayout {
  regions: { id: number; flags: number; start: number; length: number }[];
  lazy: Uint8Array[];
}

const layouts = new WeakMap<object, WeakMap<Pagemap, { pageSize: number; layout: LazyLayout }>>();

function computeLazyLayout(mm: { vmas: Vma[] }, pagemap: Pagemap, pageSize: number): LazyLayout {
  const vmas = mm.vmas.filter(vmaCanBeLazy);
  const regions = vmas.map((v, id) => ({ id, flags: 0, start: v.start, length: v.end - v.start }));
  const lazy = vmas.map((v) => new Uint8Array((v.end - v.start) / pageSize));
  for (const e of pagemap.entries) {
    if (!(e.flags & PE_LAZY)) continue;
    // An entry may run across VMAs: mark its part in each, and refuse any part outside them.
    let addr = e.vaddr;
    const end = e.vaddr + e.nrPages * pageSize;
    while (addr < end) {
      const r = vmas.findIndex((v) => addr >= v.start && addr < v.end);
      if (r < 0) throw imageError(`lazy page 0x${addr.toString(16)} lies in no lazy VMA of the mm image`);
      const upTo = Math.min(end, vmas[r].end);
      lazy[r].fill(1, (addr - vmas[r].start) / pageSize, (upTo - vmas[r].start) / pageSize);
      addr = upTo;
    }
  }
  return { regions, lazy };
}

function readImage(dir: string, file: string): Buffer {
  try {
    return readFileSync(join(dir, file));
  } catch (err) {
    throw imageError(`cannot read ${join(dir, file)}: ${(err as Error).message}`);
  }
}

/** The images a post-copy target needs from a CRIU dump directory. */
export interface DumpImages {
  /** the live tasks, each with its memory */
  tasks: PstreeEntry[];
  /** pids of the zombies the dump lists: no memory to serve (criu restore hands them over as -pid) */
  zombies?: number[];
  pagemaps: Map<number, Pagemap>;
  mms: Map<number, Mm>;
}

export function readDump(dir: string): DumpImages {
  const listed = parsePstree(readImage(dir, 'pstree.img'), 'pstree.img');
  if (listed.length === 0) throw imageError(`${dir}/pstree.img lists no task`);
  // A zombie has no memory: CRIU writes neither its pagemap nor its mm image (and restores it
  // without a uffd). A task that lacks only one of them is a broken dump.
  const has = (t: PstreeEntry, kind: string) => existsSync(join(dir, `${kind}-${t.pid}.img`));
  const zombies = listed.filter((t) => !has(t, 'pagemap') && !has(t, 'mm')).map((t) => t.pid);
  const tasks = listed.filter((t) => !zombies.includes(t.pid));
  if (tasks.length === 0) throw imageError(`${dir}/pstree.img lists only zombies (${zombies.join(', ')})`);
  const pagemaps = new Map<number, Pagemap>();
  const mms = new Map<number, Mm>();
  for (const t of tasks) {
    pagemaps.set(t.pid, parsePagemap(readImage(dir, `pagemap-${t.pid}.img`), `pagemap-${t.pid}.img`));
    mms.set(t.pid, parseMm(readImage(dir, `mm-${t.pid}.img`), `mm-${t.pid}.img`));
  }
  return { tasks, zombies, pagemaps, mms };
}

/**
 * The lazy layout of one task of a dump: the only one, or the one whose pid (in the tree's own
 * namespace, as the dump names tasks) is `pid`. `tasks`: how many the dump holds.
 */
export function taskLayout(images: DumpImages, pid: number | null): LazyLayout & { pid: number; tasks: number } {
  const task = images.tasks.length === 1 ? images.tasks[0] : images.tasks.find((t) => t.pid === pid);
  if (!task) throw new PostcopyError('ERR_CRIU', `the dump holds tasks ${images.tasks.map((t) => t.pid).join(', ')}, none of them ${pid}`);
  return { pid: task.pid, tasks: images.tasks.length, ...lazyLayout(images.mms.get(task.pid)!, images.pagemaps.get(task.pid)!) };
}
