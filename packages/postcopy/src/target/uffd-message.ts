// struct uffd_msg (linux/userfaultfd.h), as the fault thread reads it: 32 bytes, the event in the
// first byte, its arguments in a union from byte 8. Decoded into one reused object, so that the
// hot path allocates nothing; the fault loop then switches on `kind`, as CRIU's uffd.c does.
import { C } from '../native/index.js';

/** sizeof(struct uffd_msg), as the addon was built with (32) */
export const UFFD_MSG_SIZE = C.UFFD_MSG_SIZE;

/** Offsets in a uffd_msg, one table for every event. */
const At = {
  EVENT: 0,
  /** pagefault.flags (u64), fork.ufd (u32), remap.from, remove.start */
  ARG0: 8,
  /** pagefault.address, remap.to, remove.end */
  ARG1: 16,
  /** remap.len */
  ARG2: 24,
} as const;

export const UffdEvent = {
  PAGEFAULT: C.UFFD_EVENT_PAGEFAULT,
  FORK: C.UFFD_EVENT_FORK,
  REMAP: C.UFFD_EVENT_REMAP,
  REMOVE: C.UFFD_EVENT_REMOVE,
  UNMAP: C.UFFD_EVENT_UNMAP,
} as const;

const u64At = (buf: Buffer, off: number) => buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * 0x100000000;

/** One message. Fields other than those of its kind hold whatever the last message left. */
export class UffdMessage {
  kind = 0;
  /** PAGEFAULT: the faulting address */
  address = 0;
  /** FORK: the child's userfaultfd, now open in this process */
  childUffd = -1;
  /** REMAP: the range moved from `from` to `to`, `length` bytes */
  from = 0;
  to = 0;
  length = 0;
  /** REMOVE (MADV_DONTNEED) and UNMAP: [start, end) */
  start = 0;
  end = 0;

  read(buf: Buffer, off: number): this {
    const kind = buf[off + At.EVENT];
    this.kind = kind;
    if (kind === UffdEvent.PAGEFAULT) this.address = u64At(buf, off + At.ARG1);
    else if (kind === UffdEvent.FORK) this.childUffd = buf.readUInt32LE(off + At.ARG0);
    else if (kind === UffdEvent.REMAP) {
      this.from = u64At(buf, off + At.ARG0);
      this.to = u64At(buf, off + At.ARG1);
      this.length = u64At(buf, off + At.ARG2);
    } else if (kind === UffdEvent.REMOVE || kind === UffdEvent.UNMAP) {
      this.start = u64At(buf, off + At.ARG0);
      this.end = u64At(buf, off + At.ARG1);
    }
    return this;
  }
}
