// One target connection served by its own thread with blocking calls: read a GET, read the
// pages straight from the source, one write for the reply. The event loop is not on this path.
import { parentPort } from 'node:worker_threads';
import { PostcopyError, ProtocolError, type ErrorCode } from '../errors.js';
import { C, native } from '../native/index.js';
import { threadData } from '../util/thread.js';
import { decodeBody, encodeBye, encodeError, readGet, readHeader, RUN_HEADER_SIZE } from '../protocol/codec.js';
import { ByeReason, Flag, FrameType, HEADER_SIZE, type Get } from '../protocol/frames.js';
import { lowerThisThread } from '../util/push-priority.js';
import { FdReader } from '../transport/fd-reader.js';
import type { MemorySource } from './memory-source.js';
import { checkGet, maxRunSize, runEnd, SourceHandshake, StatSlot, writeRun, type ConnectionMessage, type ConnectionThreadConfig } from './session.js';
import { openSource } from './spec.js';

const config = threadData<ConnectionThreadConfig>();
const post = (m: ConnectionMessage) => parentPort!.postMessage(m);

class Connection {
  #reader = new FdReader(config.fd, 1 << 16, 'target');
  #out = Buffer.alloc(RUN_HEADER_SIZE + (1 << 16));
  #source: MemorySource;
  #stats = config.stats;
  #handshake: SourceHandshake;
  #lowered = false;

  constructor(source: MemorySource) {
    this.#source = source;
    this.#handshake = new SourceHandshake(source, config.grants);
  }

  run(): void {
    for (;;) {
      const r = this.#reader;
      if (!r.needOrEof(HEADER_SIZE)) return this.#sayByeIfAsked();
      const h = readHeader(r.buf, r.start);
      r.need(HEADER_SIZE + h.length);
      const frame = h.type === FrameType.GET ? readGet(h, r.buf, r.start) : decodeBody(h, r.buf.subarray(r.start + HEADER_SIZE, r.start + HEADER_SIZE + h.length));
      r.consume(HEADER_SIZE + h.length);
      if (!this.#handshake.done) {
        const answer = this.#handshake.step(frame);
        if ('code' in answer) return this.#reject(0, answer.code, answer.message);
        this.#write(answer.send);
        if (this.#handshake.done) post({ type: 'served', keyId: this.#handshake.keyId });
        continue;
      }
      if (frame.type === FrameType.GET) this.#serve(frame);
      else if (frame.type === FrameType.BYE) {
        if (frame.reason === ByeReason.DONE) post({ type: 'done', keyId: this.#handshake.keyId });
        return;
      } else return this.#reject(0, 'ERR_PROTOCOL', `unexpected frame type ${frame.type} from a target`);
    }
  }

  #serve(get: Get): void {
    this.#stats[StatSlot.GETS]++;
    if (get.flags & Flag.BACKGROUND && !this.#lowered) {
      this.#lowered = true;
      lowerThisThread(config.backgroundPriority);
    }
    const rejected = checkGet(get, this.#source, config.maxGetPages) ?? this.#handshake.checkGrant(get);
    if (rejected) return this.#reject(get.id, rejected.code, rejected.message, false);
    const region = this.#source.regions[get.region];
    const worst = get.count * maxRunSize(this.#source.pageSize, 1); // every page a run of its own
    if (this.#out.length < worst) this.#out = Buffer.alloc(worst);
    const out = this.#out;
    let len = 0;
    try {
      for (let p = get.firstPage, end = get.firstPage + get.count; p < end; ) {
        const q = runEnd(this.#source, region, p, end);
        const zero = this.#source.untouched(region, p);
        len += writeRun(out, len, this.#source, get, p, q, this.#handshake.checksums);
        this.#stats[zero ? StatSlot.ZERO : StatSlot.PAGES] += q - p;
        this.#stats[StatSlot.BYTES] += zero ? 0 : (q - p) * this.#source.pageSize;
        p = q;
      }
    } catch (err) {
      const code: ErrorCode = err instanceof PostcopyError ? err.code : 'ERR_SOURCE_GONE';
      return this.#reject(get.id, code, (err as Error).message, false);
    }
    this.#write(out, len);
  }

  /** Sends an ERROR; a fatal one ends the connection (the caller returns). */
  #reject(id: number, code: ErrorCode, message: string, fatal = true): void {
    this.#stats[StatSlot.ERRORS]++;
    post({ type: 'error-frame', code, message });
    this.#write(encodeError(id, code, message));
    if (fatal) native.shutdown(config.fd, 1);
  }

  #sayByeIfAsked(): void {
    const asked = Atomics.load(config.control, 0);
    if (asked) this.#write(encodeBye(asked - 1));
  }

  #write(buf: Buffer, len = buf.length): void {
    const n = native.writeAll(config.fd, buf, 0, len);
    if (n !== len) throw new PostcopyError('ERR_PEER_CLOSED', n === -C.EPIPE || n === -C.ECONNRESET ? 'the target went away' : `write to the target failed: errno ${-n}`);
  }
}

function main(): void {
  const source = openSource(config.source);
  try {
    native.setBlocking(config.fd, true);
    new Connection(source).run();
  } catch (err) {
    const e = err as PostcopyError;
    if (e instanceof ProtocolError) {
      post({ type: 'error-frame', code: e.code, message: e.message });
      config.stats[StatSlot.ERRORS]++;
      const frame = encodeError(0, e.code, e.message);
      native.writeAll(config.fd, frame, 0, frame.length); // best effort: the stream is unusable now
    } else if (e.code !== 'ERR_PEER_CLOSED' && e.code !== 'ERR_CONNECTION_LOST') {
      post({ type: 'error-frame', code: e.code ?? 'ERR_SOURCE_GONE', message: e.message });
    }
  } finally {
    source.close();
    post({ type: 'closed' });
  }
}

main();
