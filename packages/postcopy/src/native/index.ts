// Typed facade over the C addon. Only syscalls live in C; everything here is a thin, typed pass-through.
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export type Bytes = Buffer | Uint8Array | ArrayBuffer | Float64Array | Int32Array;

export interface NativeConstants {
  UFFD_API: number;
  UFFD_EVENT_PAGEFAULT: number;
  UFFD_EVENT_FORK: number;
  UFFD_EVENT_REMAP: number;
  UFFD_EVENT_REMOVE: number;
  UFFD_EVENT_UNMAP: number;
  UFFD_PAGEFAULT_FLAG_WRITE: number;
  UFFDIO_REGISTER_MODE_MISSING: number;
  UFFD_FEATURE_EVENT_FORK: number;
  UFFD_FEATURE_EVENT_REMAP: number;
  UFFD_FEATURE_EVENT_REMOVE: number;
  UFFD_FEATURE_EVENT_UNMAP: number;
  MREMAP_MAYMOVE: number;
  MREMAP_FIXED: number;
  UFFD_FEATURE_MISSING_SHMEM: number;
  UFFD_FEATURE_THREAD_ID: number;
  UFFD_MSG_SIZE: number;
  MADV_DONTNEED: number;
  EEXIST: number;
  EAGAIN: number;
  ENOENT: number;
  ESRCH: number;
  EFAULT: number;
  EINTR: number;
  ECONNRESET: number;
  EPIPE: number;
  PAGE_SIZE: number;
}

/** Calls documented as "-errno" return a negative errno instead of throwing: they sit on the fault path. */
export interface NativeBinding {
  uffdOpen(nonBlocking: boolean): number;
  uffdApi(fd: number, features: bigint): { features: bigint; ioctls: bigint };
  uffdRegister(fd: number, addr: number, len: number, mode: number): bigint;
  uffdUnregister(fd: number, addr: number, len: number): void;
  /** bytes copied (possibly partial) or -errno */
  uffdCopy(fd: number, dst: number, src: Bytes, offset: number, len: number, dontWake: boolean): number;
  /** bytes zeroed (possibly partial) or -errno */
  uffdZeropage(fd: number, dst: number, len: number, dontWake: boolean): number;
  /** 0 or -errno */
  uffdWake(fd: number, addr: number, len: number): number;
  /** one read(2): bytes, 0 at EOF, or -errno */
  readInto(fd: number, buf: Bytes, offset: number, len: number): number;
  /** reads until len or EOF: bytes, or -errno */
  readFull(fd: number, buf: Bytes, offset: number, len: number): number;
  /** len or -errno */
  writeAll(fd: number, buf: Bytes, offset: number, len: number): number;
  /** bitmask of readable entries, 0 on timeout, or -errno */
  pollIn(fds: Int32Array, timeoutMs: number): number;
  mmapAnon(len: number, hint?: number, fixedNoReplace?: boolean): number;
  munmap(addr: number, len: number): void;
  madvise(addr: number, len: number, advice: number): void;
  mremap(addr: number, oldLen: number, newLen: number, flags: number, newAddr: number): number;
  /** the CRC32C of each of `count` pages of buf from offset, written as u32 LE to out at outOffset */
  crc32cPages(buf: Uint8Array, offset: number, pageSize: number, count: number, out: Uint8Array, outOffset: number): void;
  viewMemory(addr: number, len: number): ArrayBuffer;
  /** touches count pages (stride bytes apart); per-touch ns into latencies if given; returns total ns */
  touchPages(addr: number, count: number, stride: number, write: boolean, latencies?: Float64Array): number;
  /** bytes or -errno */
  processVmReadv(pid: number, remoteAddr: number, buf: Bytes, offset: number, len: number): number;
  tcpConnect(host: string, port: number): number;
  unixConnect(path: string): number;
  setBlocking(fd: number, blocking: boolean): void;
  /** a blocking recv fails with EAGAIN after ms without data (0: never) */
  setRecvTimeout(fd: number, ms: number): void;
  close(fd: number): number;
  /** 0 or -errno; how: 0 SHUT_RD, 1 SHUT_WR, 2 SHUT_RDWR (default) */
  shutdown(fd: number, how?: number): number;
  /** a new close-on-exec fd for the same open file, or -errno */
  dup(fd: number): number;
  unixListen(path: string, backlog?: number): number;
  /** connected fd or -errno */
  accept(fd: number): number;
  /** cloexec: neither end leaks into a child unless its stdio names it */
  socketpair(cloexec?: boolean): [number, number];
  sendFd(sock: number, fd: number, payload: Bytes): number;
  recvFd(sock: number, buf: Bytes): { bytes: number; fd: number };
  eventfd(): number;
  eventfdSignal(fd: number): number;
  setAffinity(cpuMask: number): void;
  /** the calling thread to SCHED_IDLE (true) or SCHED_OTHER: 0 or -errno */
  setIdlePolicy(idle: boolean): number;
  gettid(): number;
  /** pid of the process that connected to this Unix socket (SO_PEERCRED), or -errno */
  peerPid(fd: number): number;
  /** a pidfd, readable once the process has exited (close-on-exec), or -errno */
  pidfdOpen(pid: number): number;
  /** 1 if two processes share one address space (kcmp KCMP_VM: a thread, a vfork child), 0 if not, or -errno */
  sameMemory(pid1: number, pid2: number): number;
  nowNs(): number;
  constants: NativeConstants;
}

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

function load(): NativeBinding {
  const require = createRequire(import.meta.url);
  const nodeGypBuild = require('node-gyp-build') as (dir: string) => NativeBinding;
  return nodeGypBuild(packageRoot);
}

export const native: NativeBinding = load();
export const C = native.constants;
