// The wire between a fault handler and its keeper (native/pckeeper.c), both ways: one tag byte,
// then the message's fields, little-endian. The C side names the same bytes; keep the two together.
//   UFFD         'U' with the uffd (SCM_RIGHTS)
//   PID          'P' u32 pid (as the keeper's pid namespace sees it)
//   MAPPINGS     'M' u32 n, n bytes of JSON: what a successor needs
//   RECOVER_AT   'R' u16 n, a socket path of n bytes, u32 ms: where to wait for a successor
//   DONE         'D': the uffd is needed no more
// A successor that connects gets UFFD, then PID and MAPPINGS. Pure.
import { ProtocolError } from '../errors.js';

export const KeeperTag = {
  UFFD: 0x55,
  PID: 0x50,
  MAPPINGS: 0x4d,
  RECOVER_AT: 0x52,
  DONE: 0x44,
} as const;

export function encodeKeeperPid(pid: number): Buffer {
  const b = Buffer.alloc(5);
  b[0] = KeeperTag.PID;
  b.writeUInt32LE(pid, 1);
  return b;
}

export function encodeKeeperMappings(describe: Buffer): Buffer {
  const b = Buffer.alloc(5 + describe.length);
  b[0] = KeeperTag.MAPPINGS;
  b.writeUInt32LE(describe.length, 1);
  describe.copy(b, 5);
  return b;
}

export function encodeKeeperRecoverAt(path: string, graceMs: number): Buffer {
  const p = Buffer.from(path);
  const b = Buffer.alloc(7 + p.length);
  b[0] = KeeperTag.RECOVER_AT;
  b.writeUInt16LE(p.length, 1);
  p.copy(b, 3);
  b.writeUInt32LE(graceMs, 3 + p.length);
  return b;
}

export const KEEPER_DONE = Buffer.of(KeeperTag.DONE);
/** What a keeper sends a successor after the uffd: PID (5 bytes), then the head of MAPPINGS (5 bytes). */
export const KEEPER_HANDOVER_HEAD = 10;

/** The pid and the length of the MAPPINGS that follow, from a keeper's handover head. */
export function decodeKeeperHandover(head: Buffer): { pid: number; mappingsLength: number } {
  if (head.length < KEEPER_HANDOVER_HEAD || head[0] !== KeeperTag.PID || head[5] !== KeeperTag.MAPPINGS) throw new ProtocolError('the keeper did not say which process, and what');
  return { pid: head.readUInt32LE(1), mappingsLength: head.readUInt32LE(6) };
}
