// A TCP proxy between a target and a source on loopback, for fault injection: it relays whole
// frames from the source (a hook may change them on the way) and can cut live connections.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { readHeader } from '../../src/protocol/codec.js';
import { FrameType, HEADER_SIZE, type Header } from '../../src/protocol/frames.js';

export interface Proxy {
  port: number;
  /** live target connections past their handshake (the source has sent REGIONS) */
  readonly connections: number;
  /** Resets one of those (RST on both sides), the newest first; false when there is none. */
  cut(which?: number): boolean;
  close(): Promise<void>;
}

/** `onSourceFrame` sees each whole frame from the source at buf[off] before it is relayed. */
export async function startProxy(upstreamPort: number, onSourceFrame?: (buf: Buffer, off: number, h: Header) => void): Promise<Proxy> {
  const pairs: { client: Socket; upstream: Socket; established: boolean }[] = [];
  const established = () => pairs.filter((p) => p.established);
  const server: Server = createServer((client) => {
    const upstream = connect(upstreamPort, '127.0.0.1');
    const pair = { client, upstream, established: false };
    pairs.push(pair);
    client.pipe(upstream);
    let pending = Buffer.alloc(0);
    upstream.on('data', (chunk: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      let off = 0;
      while (pending.length - off >= HEADER_SIZE) {
        const h = readHeader(pending, off);
        if (pending.length - off < HEADER_SIZE + h.length) break;
        if (h.type === FrameType.REGIONS) pair.established = true;
        onSourceFrame?.(pending, off, h);
        off += HEADER_SIZE + h.length;
      }
      if (off > 0) {
        client.write(Buffer.from(pending.subarray(0, off)));
        pending = pending.subarray(off);
      }
    });
    const end = () => {
      const i = pairs.indexOf(pair);
      if (i >= 0) pairs.splice(i, 1);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    get connections() {
      return established().length;
    },
    cut(which?: number) {
      const live = established();
      const pair = live[which ?? live.length - 1];
      if (!pair) return false;
      pairs.splice(pairs.indexOf(pair), 1);
      pair.client.resetAndDestroy();
      pair.upstream.resetAndDestroy();
      return true;
    },
    close() {
      for (const { client, upstream } of pairs.splice(0)) {
        client.destroy();
        upstream.destroy();
      }
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
