// The page server against real sockets: good input served, bad input answered with stable codes.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeGet, encodeHello } from '../src/protocol/codec.js';
import { FrameDecoder } from '../src/protocol/decoder.js';
import { ByeReason, Flag, FrameType, PROTOCOL_VERSION, Role, type Frame } from '../src/protocol/frames.js';
import { hashPages } from '../src/util/pagehash.js';
import { ImageFileSource } from '../src/source/image-file.js';
import { isPrivateAnonymous, parseMaps } from '../src/source/live-process.js';
import { PageServer } from '../src/source/server.js';
import { probeSource } from '../src/target/probe.js';
import { TcpTransport, parseEndpoint, type Listener } from '../src/transport/index.js';
import { makeImage } from './helpers/util.js';

const PS = 4096;

/** A raw client: send bytes, collect frames until the server has said enough or closed. */
class RawClient {
  frames: Frame[] = [];
  error: Error | null = null;
  closed = false;
  #decoder = new FrameDecoder();
  constructor(readonly socket: Socket) {
    socket.on('data', (d) => {
      try {
        this.frames.push(...this.#decoder.push(d));
      } catch (err) {
        this.error = err as Error;
      }
    });
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => {});
  }
  static open(port: number): Promise<RawClient> {
    return new Promise((resolve) => {
      const s = connect(port, '127.0.0.1', () => resolve(new RawClient(s)));
    });
  }
  async until(pred: () => boolean, ms = 5000): Promise<void> {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) throw new Error(`timed out; frames: ${JSON.stringify(this.frames.map((f) => f.type))}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  hello(pageSize = PS, version = PROTOCOL_VERSION): void {
    this.socket.write(encodeHello({ version, pageSize, features: 0, role: Role.TARGET, auth: new Uint8Array(0) }));
  }
  errors() {
    return this.frames.filter((f) => f.type === FrameType.ERROR) as Extract<Frame, { type: 7 }>[];
  }
}

for (const engine of ['thread', 'loop'] as const)
describe(`page server (${engine} engine)`, () => {
  let dir: string;
  let hashes: Uint32Array;
  let server: PageServer;
  let listener: Listener;
  let source: ImageFileSource;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'pc-src-'));
    hashes = makeImage(join(dir, 'img'), 64 * PS, 8);
    source = new ImageFileSource(join(dir, 'img'));
    server = new PageServer(source, { maxGetBytes: 16 * PS, engine });
    listener = await server.listen(new TcpTransport('127.0.0.1', 0));
  });
  after(async () => {
    await server.close();
    source.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const port = () => (listener.endpoint.kind === 'tcp' ? listener.endpoint.port : 0);

  it('answers HELLO with its regions', async () => {
    const regions = await probeSource(listener.endpoint, PS);
    assert.deepEqual(regions, [{ id: 0, flags: 0, start: 0, length: 64 * PS }]);
  });

  it('serves pages and background pushes', async () => {
    const c = await RawClient.open(port());
    c.hello();
    c.socket.write(encodeGet(1, 0, 3, 2));
    c.socket.write(encodeGet(2, 0, 10, 1, Flag.BACKGROUND));
    await c.until(() => c.frames.filter((f) => 'flags' in f && f.flags & Flag.END).length === 2);
    const runs = c.frames.filter((f) => f.type === FrameType.PAGES || f.type === FrameType.PUSH);
    assert.deepEqual(runs.map((f) => [f.type, 'id' in f && f.id]), [[FrameType.PAGES, 1], [FrameType.PUSH, 2]]);
    const got = new Uint32Array(3);
    hashPages(runs[0].data, PS, got, 0);
    hashPages(runs[1].data, PS, got, 2);
    assert.deepEqual(Array.from(got), [hashes[3], hashes[4], hashes[10]]);
    c.socket.destroy();
    await c.until(() => c.closed);
    const stats = server.stats;
    assert.ok(stats.pagesSent >= 3 && stats.bytesSent >= 3 * PS, JSON.stringify(stats));
  });

  it('says BYE to connected targets when asked', async () => {
    const c = await RawClient.open(port());
    c.hello();
    await c.until(() => c.frames.some((f) => f.type === FrameType.REGIONS));
    server.sayBye();
    await c.until(() => c.closed);
    assert.deepEqual(c.frames.filter((f) => f.type === FrameType.BYE).map((f) => 'reason' in f && f.reason), [ByeReason.ABORT]);
  });

  it('rejects a GET outside any region or too large, and keeps serving', async () => {
    const c = await RawClient.open(port());
    c.hello();
    c.socket.write(encodeGet(1, 5, 0, 1)); // no region 5
    c.socket.write(encodeGet(2, 0, 63, 2)); // runs past the end
    c.socket.write(encodeGet(3, 0, 0, 1_000_000)); // huge count
    c.socket.write(encodeGet(4, 0, 0, 0)); // empty
    c.socket.write(encodeGet(5, 0, 0, 1)); // fine
    await c.until(() => c.frames.some((f) => f.type === FrameType.PAGES));
    assert.deepEqual(c.errors().map((e) => [e.id, e.code]), [[1, 'ERR_OUT_OF_RANGE'], [2, 'ERR_OUT_OF_RANGE'], [3, 'ERR_OUT_OF_RANGE'], [4, 'ERR_OUT_OF_RANGE']]);
    assert.equal(c.closed, false);
    c.socket.destroy();
  });

  it('refuses a wrong version and a page size mismatch', async () => {
    for (const [args, code] of [[[PS, 99], 'ERR_VERSION'], [[65536, PROTOCOL_VERSION], 'ERR_PAGE_SIZE']] as const) {
      const c = await RawClient.open(port());
      c.hello(...args);
      await c.until(() => c.closed);
      assert.deepEqual(c.errors().map((e) => e.code), [code]);
    }
  });

  it('closes on garbage and on a GET before HELLO, with ERR_PROTOCOL', async () => {
    for (const bytes of [Buffer.from('GET / HTTP/1.1\r\n\r\n'), encodeGet(1, 0, 0, 1)]) {
      const c = await RawClient.open(port());
      c.socket.write(bytes);
      await c.until(() => c.closed);
      assert.deepEqual(c.errors().map((e) => e.code), ['ERR_PROTOCOL']);
    }
  });

  it('survives a peer that disconnects mid-frame', async () => {
    const c = await RawClient.open(port());
    c.hello();
    c.socket.end(encodeGet(1, 0, 0, 1).subarray(0, 10));
    await c.until(() => c.closed);
    const regions = await probeSource(listener.endpoint, PS);
    assert.equal(regions.length, 1);
  });

  it('serves several targets at once', async () => {
    const clients = await Promise.all([1, 2, 3, 4].map(() => RawClient.open(port())));
    clients.forEach((c, i) => {
      c.hello();
      c.socket.write(encodeGet(1, 0, i * 8, 8));
    });
    await Promise.all(clients.map((c) => c.until(() => c.frames.some((f) => 'flags' in f && f.flags & Flag.END))));
    for (const c of clients) c.socket.destroy();
    assert.ok(hashes.length === 64);
  });
});

describe('maps and endpoints', () => {
  it('keeps only private anonymous ranges', () => {
    const maps = parseMaps(
      [
        '55d0c0000000-55d0c0021000 rw-p 00000000 00:00 0                          [heap]',
        '7f0000000000-7f0000100000 rw-p 00000000 00:00 0 ',
        '7f0000100000-7f0000200000 r--p 00000000 fd:01 1234                       /usr/lib/libc.so.6',
        '7f0000200000-7f0000300000 rw-s 00000000 00:01 99                         /dev/zero (deleted)',
        '7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]',
        '7ffd00100000-7ffd00102000 r--p 00000000 00:00 0                          [vvar]',
      ].join('\n'),
    );
    assert.deepEqual(maps.filter(isPrivateAnonymous).map((m) => m.path), ['[heap]', '', '[stack]']);
  });

  it('parses endpoints and rejects bad ones with ERR_INVALID_ARG', () => {
    assert.deepEqual(parseEndpoint('tcp://10.0.0.1:7000'), { kind: 'tcp', host: '10.0.0.1', port: 7000 });
    assert.deepEqual(parseEndpoint('tcp://[::1]:80'), { kind: 'tcp', host: '::1', port: 80 });
    assert.deepEqual(parseEndpoint('unix:/tmp/x.sock'), { kind: 'unix', path: '/tmp/x.sock' });
    for (const bad of ['http://x', 'tcp://host:1', 'tcp://1.2.3.4:99999', 'unix:'])
      assert.throws(() => parseEndpoint(bad), (e: { code?: string }) => e.code === 'ERR_INVALID_ARG');
  });
});
