// How a process hands its userfaultfd to a fault handler: one sendmsg with SCM_RIGHTS carrying
// the uffd, and a payload describing the registered ranges. CRIU's lazy-pages socket works alike.
import { PostcopyError } from '../errors.js';
import { native } from '../native/index.js';
import { waitReadable } from '../util/wait-readable.js';
import type { Mapping } from './shared-state.js';

export const HANDOFF_MAGIC = 0x4f484655; // "UFHO"
const ENTRY = 24;

export function encodeHandoff(pid: number, mappings: Mapping[]): Buffer {
  const buf = Buffer.alloc(16 + mappings.length * ENTRY);
  buf.writeUInt32LE(HANDOFF_MAGIC, 0);
  buf.writeUInt32LE(1, 4);
  buf.writeUInt32LE(pid, 8);
  buf.writeUInt32LE(mappings.length, 12);
  mappings.forEach((m, i) => {
    const o = 16 + i * ENTRY;
    buf.writeBigUInt64LE(BigInt(m.localStart), o);
    buf.writeBigUInt64LE(BigInt(m.length), o + 8);
    buf.writeUInt32LE(m.regionId, o + 16);
  });
  return buf;
}

export function decodeHandoff(buf: Uint8Array): { pid: number; mappings: Mapping[] } {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 16 || b.readUInt32LE(0) !== HANDOFF_MAGIC || b.readUInt32LE(4) !== 1)
    throw new PostcopyError('ERR_PROTOCOL', 'not a userfaultfd handoff message');
  const count = b.readUInt32LE(12);
  if (b.length !== 16 + count * ENTRY) throw new PostcopyError('ERR_PROTOCOL', 'handoff length does not match its count');
  const mappings: Mapping[] = [];
  for (let i = 0; i < count; i++) {
    const o = 16 + i * ENTRY;
    mappings.push({ localStart: Number(b.readBigUInt64LE(o)), length: Number(b.readBigUInt64LE(o + 8)), regionId: b.readUInt32LE(o + 16) });
  }
  return { pid: b.readUInt32LE(8), mappings };
}

export interface ReceivedUffd {
  uffd: number;
  pid: number;
  mappings: Mapping[];
}

/** Receives one handoff (uffd + ranges) on a connected Unix socket, without blocking the event loop. */
export async function receiveUffd(sock: number, timeoutMs: number): Promise<ReceivedUffd> {
  await waitReadable(sock, timeoutMs, 'the userfaultfd handoff');
  const payload = Buffer.alloc(64 * 1024);
  const { bytes, fd } = native.recvFd(sock, payload);
  if (fd < 0) throw new PostcopyError('ERR_PROTOCOL', bytes === 0 ? 'the process closed the socket before its handoff' : 'the handoff message carried no file descriptor');
  try {
    return { uffd: fd, ...decodeHandoff(payload.subarray(0, bytes)) };
  } catch (err) {
    native.close(fd);
    throw err;
  }
}

/** Accepts one connection on a listening Unix socket fd. */
export async function acceptOne(listenFd: number, timeoutMs: number): Promise<number> {
  await waitReadable(listenFd, timeoutMs, 'a connection with a userfaultfd');
  const fd = native.accept(listenFd);
  if (fd < 0) throw new PostcopyError('ERR_PEER_CLOSED', `accept failed: errno ${-fd}`);
  return fd;
}

/** Tells the process its uffd is being served and it may run. */
export function acknowledgeUffd(sock: number): void {
  native.writeAll(sock, Buffer.from([1]), 0, 1);
}
