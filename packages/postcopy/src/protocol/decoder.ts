// Streaming frame parser: feed it chunks as they arrive, get whole frames out.
// After the first malformed frame it stays failed: a byte stream cannot be resynchronised safely.
import { ProtocolError } from '../errors.js';
import { decodeBody, readHeader } from './codec.js';
import { HEADER_SIZE, type Frame, type Header } from './frames.js';

export class FrameDecoder {
  #chunks: Buffer[] = [];
  #buffered = 0;
  #header: Header | null = null;
  #error: ProtocolError | null = null;

  get failed(): ProtocolError | null {
    return this.#error;
  }

  /** bytes held waiting for the rest of a frame */
  get buffered(): number {
    return this.#buffered + (this.#header ? HEADER_SIZE : 0);
  }

  /** Returns every frame completed by this chunk. Throws ProtocolError on malformed input, and again on any later push. */
  push(chunk: Uint8Array): Frame[] {
    if (this.#error) throw this.#error;
    if (chunk.length > 0) {
      this.#chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.#buffered += chunk.length;
    }
    const out: Frame[] = [];
    try {
      for (;;) {
        if (!this.#header) {
          if (this.#buffered < HEADER_SIZE) break;
          this.#header = readHeader(this.#peek(HEADER_SIZE));
          this.#consume(HEADER_SIZE);
        }
        const h = this.#header;
        if (this.#buffered < h.length) break;
        const body = this.#take(h.length);
        this.#header = null;
        out.push(decodeBody(h, body));
      }
    } catch (err) {
      this.#error = err instanceof ProtocolError ? err : new ProtocolError(String(err));
      this.#chunks = [];
      this.#buffered = 0;
      throw this.#error;
    }
    return out;
  }

  #peek(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    if (this.#chunks[0].length >= n) return this.#chunks[0].subarray(0, n);
    const merged = Buffer.concat(this.#chunks);
    this.#chunks = [merged];
    return merged.subarray(0, n);
  }

  #consume(n: number): void {
    this.#buffered -= n;
    while (n > 0) {
      const first = this.#chunks[0];
      if (first.length <= n) {
        n -= first.length;
        this.#chunks.shift();
      } else {
        this.#chunks[0] = first.subarray(n);
        n = 0;
      }
    }
  }

  #take(n: number): Buffer {
    const body = this.#peek(n);
    this.#consume(n);
    return body;
  }
}
