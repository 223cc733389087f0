// Buffered reads from a blocking stream fd, for threads that may block. One recv usually brings
// a whole reply (header and pages together), where exact-length reads would take three.
// A read takes at most READ_PAST bytes beyond the frame being gathered: what it brings of the next
// frame is moved to the front of the buffer before that frame is gathered, and a large frame's
// worth would cost a second copy of its pages.
const READ_PAST = 64 << 10;
import { ConnectionLost, type PostcopyError } from '../errors.js';
import { C, native } from '../native/index.js';

export class FdReader {
  /** bytes buf[start, end) are buffered and not yet consumed */
  buf: Buffer;
  start = 0;
  end = 0;
  readonly #fd: number;
  readonly #peer: string;

  constructor(fd: number, capacity: number, peer: string) {
    this.#fd = fd;
    this.buf = Buffer.alloc(capacity);
    this.#peer = peer;
  }

  get buffered(): number {
    return this.end - this.start;
  }

  /** Blocks until at least n bytes are buffered from this.start. Throws ConnectionLost (ERR_CONNECTION_LOST) at EOF. */
  need(n: number): void {
    if (this.end - this.start >= n) return;
    if (this.buf.length - this.start < n) this.#makeRoom(n);
    const limit = Math.min(this.buf.length, this.start + n + READ_PAST);
    while (this.end - this.start < n) {
      const got = native.readInto(this.#fd, this.buf, this.end, limit - this.end);
      if (got > 0) this.end += got;
      else if (got === -C.EINTR) continue;
      else if (got === 0 || got === -C.ECONNRESET) throw new ConnectionLost(`the ${this.#peer} closed the connection`);
      else if (got === -C.EAGAIN) throw new ConnectionLost(`no data from the ${this.#peer} within the receive timeout`);
      else throw new ConnectionLost(`read from the ${this.#peer} failed: errno ${-got}`);
    }
  }

  /** Like need(), but returns false instead of throwing when the peer closed before any byte. */
  needOrEof(n: number): boolean {
    if (this.end > this.start) {
      this.need(n);
      return true;
    }
    try {
      this.need(n);
      return true;
    } catch (err) {
      if (this.end === this.start && (err as PostcopyError).code === 'ERR_CONNECTION_LOST') return false;
      throw err;
    }
  }

  consume(n: number): void {
    this.start += n;
    if (this.start === this.end) this.start = this.end = 0;
  }

  #makeRoom(n: number): void {
    const held = this.end - this.start;
    if (n > this.buf.length) {
      const bigger = Buffer.alloc(Math.max(n, this.buf.length * 2));
      this.buf.copy(bigger, 0, this.start, this.end);
      this.buf = bigger;
    } else {
      this.buf.copy(this.buf, 0, this.start, this.end);
    }
    this.start = 0;
    this.end = held;
  }
}
