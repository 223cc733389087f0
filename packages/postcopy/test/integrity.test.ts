// Per-page checksums: computed by the source, verified by the target before UFFDIO_COPY.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { native } from '../src/native/index.js';
import { decodeBody, encodeRunHeader, readHeader } from '../src/protocol/codec.js';
import { Flag, FrameType, HEADER_SIZE } from '../src/protocol/frames.js';
import { ImageFileSource } from '../src/source/image-file.js';
import { PageServer } from '../src/source/server.js';
import { acknowledgeUffd, receiveUffd } from '../src/target/handoff.js';
import { FaultHandler } from '../src/target/handler.js';
import { TcpTransport } from '../src/transport/index.js';
import { caps, need } from './helpers/caps.js';
import { startProxy } from './helpers/proxy.js';
import { FAULTER, jsonLines, makeImage, spawnTs } from './helpers/util.js';

const PS = 4096;

/**
 * A proxy that flips a byte in the first page of every `every`-th page run it relays to the
 * target, `limit` times in all, never twice the same page (a transient fault: a refetch gets through).
 */
async function corruptingProxy(upstreamPort: number, every: number, limit: number) {
  let corrupted = 0;
  let runs = 0;
  const hit = new Set<number>();
  const proxy = await startProxy(upstreamPort, (buf, off, h) => {
    if ((h.type !== FrameType.PAGES && h.type !== FrameType.PUSH) || !(h.flags & Flag.CHECKSUMS)) return;
    const firstPage = buf.readUInt32LE(off + HEADER_SIZE + 8);
    if (++runs % every !== 0 || corrupted >= limit || hit.has(firstPage)) return;
    const count = buf.readUInt32LE(off + HEADER_SIZE + 4);
    buf[off + HEADER_SIZE + 16 + count * 4 + 100] ^= 0x5a;
    hit.add(firstPage);
    corrupted++;
  });
  return { proxy, corrupted: () => corrupted };
}

describe('page checksums', () => {
  it('the native CRC32C is the Castagnoli CRC', () => {
    const out = Buffer.alloc(8);
    native.crc32cPages(Buffer.from('123456789123456789'), 0, 9, 2, out, 0);
    assert.equal(out.readUInt32LE(0), 0xe3069283); // the standard check value
    assert.equal(out.readUInt32LE(4), 0xe3069283);
    native.crc32cPages(Buffer.alloc(4096), 0, 4096, 1, out, 0);
    assert.equal(out.readUInt32LE(0), 0x98f94189);
    assert.throws(() => native.crc32cPages(Buffer.alloc(4096), 0, 4096, 2, out, 0), /out of bounds/);
  });

  it('decodes a checksummed run, and rejects one whose table is cut short', () => {
    const data = Buffer.alloc(2 * PS, 7);
    const table = Buffer.alloc(8);
    native.crc32cPages(data, 0, PS, 2, table, 0);
    const frame = Buffer.concat([encodeRunHeader(FrameType.PAGES, 9, Flag.END | Flag.CHECKSUMS, 0, 4, 2, table.length + data.length), table, data]);
    const run = decodeBody(readHeader(frame), frame.subarray(HEADER_SIZE));
    assert.ok(run.type === FrameType.PAGES);
    assert.deepEqual(Buffer.from(run.checksums), table);
    assert.equal(run.data.length, data.length);
    const short = Buffer.concat([encodeRunHeader(FrameType.PAGES, 9, Flag.CHECKSUMS, 0, 4, 2, 4), table.subarray(0, 4)]);
    assert.throws(() => decodeBody(readHeader(short), short.subarray(HEADER_SIZE)), (e: { code?: string }) => e.code === 'ERR_PROTOCOL');
  });

  it('a page corrupted on the wire is refetched and counted, never installed', async (t) => {
    if (!need(t, caps.uffd.ok, caps.uffd.detail)) return;
    const dir = mkdtempSync(join(tmpdir(), 'pc-crc-'));
    const pages = 4096;
    const expected = makeImage(join(dir, 'img'), pages * PS);
    const server = new PageServer(new ImageFileSource(join(dir, 'img')));
    const listener = await server.listen(new TcpTransport('127.0.0.1', 0));
    const upstreamPort = (listener.endpoint as { port: number }).port;
    const { proxy, corrupted } = await corruptingProxy(upstreamPort, 3, 40);
    const [ours, theirs] = native.socketpair();
    const faulter = spawnTs(FAULTER, ['--length', String(pages * PS)], { fd3: theirs });
    native.close(theirs);
    let handler: FaultHandler | null = null;
    try {
      const handoff = await receiveUffd(ours, 30_000);
      // small requests, so that many runs cross the proxy
      handler = await FaultHandler.start({ endpoint: { kind: 'tcp', host: '127.0.0.1', port: proxy.port }, uffd: handoff.uffd, mappings: handoff.mappings, pushBatch: 8, pushWindow: 2, targetPid: handoff.pid });
      let fatal: Error | null = null;
      handler.on('fatal', (e: Error) => (fatal = e));
      acknowledgeUffd(ours);
      const got = await jsonLines(faulter).next((e) => e.event === 'hashes', 60_000).catch((e: Error) => {
        throw new Error(`${e.message}; handler: ${fatal?.message}`);
      });
      const report = await handler.done();
      assert.equal(report.complete, true);
      assert.equal(corrupted(), 40, 'the proxy corrupted pages');
      assert.equal(report.corrupt, 40, `every corrupted page was caught: ${JSON.stringify(report)}`);
      const wrong = (got.hashes as number[]).filter((h, i) => h !== expected[i]).length;
      assert.equal(wrong, 0, `${wrong} pages arrived wrong`);
      t.diagnostic(`corrupted ${corrupted()}, caught ${report.corrupt}, pages ${report.pages}, wrong 0`);
    } finally {
      await handler?.stop();
      native.close(ours);
      faulter.kill('SIGKILL');
      await proxy.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
