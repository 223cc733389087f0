// The WebAssembly kernel (wasm/kernel.c): the compiled module, its exports, and an instance over
// its own memory with a bump allocator.
import { readFileSync } from 'node:fs';
import { TiematchError } from '../errors.js';

let cached: WebAssembly.Module | undefined;

export function kernelModule(): WebAssembly.Module {
  if (cached) return cached;
  const url = new URL('../../build/kernel.wasm', import.meta.url);
  let bytes: Buffer;
  try {
    bytes = readFileSync(url);
  } catch (e) {
    throw new TiematchError('ERR_KERNEL', `the WebAssembly kernel ${url.pathname} is missing: run npm run build`, { cause: e });
  }
  cached = new WebAssembly.Module(new Uint8Array(bytes));
  return cached;
}

export interface KernelExports {
  column_sums(src: number, n: number, sums: number): void;
  moments(src: number, n: number, step: number, meanQ: number, S: number, sums: number): number;
  widen(src: number, dst: number, norms: number, n: number): void;
  times_rows(C: number, Q: number, n: number, k: number, out: number): void;
  project(src: number, n: number, Q: number, qMean: number, K: number, E: number, factor: number, out: number, norms: number, extNorms: number): void;
  interleave(proj: number, n: number, K: number, E: number, nPadded: number, out: number, ext: number): void;
  sq_norms(src: number, n: number, norms: number): void;
  gather_rows(src: number, width: number, index: number, count: number, dst: number): void;
  assign(proj: number, n: number, stride: number, K: number, centres: number, centreN: number, c: number, out: number): void;
  [name: `search_k${number}`]: (job: number) => number;
  __heap_base: WebAssembly.Global;
}

/** A kernel instance with a bump allocator over its own memory. */
let scratch: Arena | undefined;

/**
 * An arena for work whose results are copied out before the next call (an index's or a query
 * set's preparation): one per thread, kept and emptied, so that each pair does not pay for fresh
 * memory. It grows to the largest request.
 */
export function scratchArena(bytes: number): Arena {
  if (scratch && scratch.capacity >= bytes) {
    scratch.reset();
    return scratch;
  }
  scratch = undefined; // the old one can go before the new one is made
  scratch = new Arena(bytes);
  return scratch;
}

export class Arena {
  readonly exports: KernelExports;
  private readonly memory: WebAssembly.Memory;
  private at: number;
  private readonly heapBase = 4 << 20; // above the kernel's data (its static scratch arrays) and 64 KiB stack
  constructor(bytes: number) {
    const heapBase = this.heapBase;
    const pages = Math.ceil((heapBase + bytes) / 65536) + 1;
    if (pages > 65536) throw new TiematchError('ERR_KERNEL', `${Math.round(bytes / 2 ** 20)} MiB of kernel memory: WebAssembly allows 4 GiB`);
    this.memory = new WebAssembly.Memory({ initial: pages });
    const instance = new WebAssembly.Instance(kernelModule(), { env: { memory: this.memory } });
    this.exports = instance.exports as unknown as KernelExports;
    if ((this.exports.__heap_base.value as number) > heapBase) throw new TiematchError('ERR_KERNEL', 'kernel data overlaps the heap');
    this.at = heapBase;
  }
  /** Bytes alloc can give from an empty arena. */
  get capacity(): number {
    return this.memory.buffer.byteLength - this.heapBase;
  }
  /** Frees everything. */
  reset(): void {
    this.at = this.heapBase;
  }
  alloc(bytes: number): number {
    const p = this.at;
    this.at += Math.ceil(bytes / 16) * 16;
    if (this.at > this.memory.buffer.byteLength) throw new TiematchError('ERR_KERNEL', 'kernel arena exhausted');
    return p;
  }
  /** The next address alloc gives: release(mark()) frees what was allocated since. */
  mark(): number {
    return this.at;
  }
  /** Frees p and everything allocated after it. */
  release(p: number): void {
    this.at = p;
  }
  get buffer(): ArrayBuffer {
    return this.memory.buffer;
  }
  get size(): number {
    return this.memory.buffer.byteLength;
  }
  i16(p: number, n: number): Int16Array {
    return new Int16Array(this.memory.buffer, p, n);
  }
  i32(p: number, n: number): Int32Array {
    return new Int32Array(this.memory.buffer, p, n);
  }
  u8(p: number, n: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, p, n);
  }
  f64(p: number, n: number): Float64Array {
    return new Float64Array(this.memory.buffer, p, n);
  }
  /** Copies src into freshly allocated memory; returns its address. */
  put(src: Uint8Array | Int16Array | Int32Array | Float64Array): number {
    const p = this.alloc(src.byteLength);
    new Uint8Array(this.memory.buffer, p, src.byteLength).set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength));
    return p;
  }
}
