// Per-page checksums: computed by the source, verified by the target before UFFDIO_COPY.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { native } from '../src/native/index.js';
import { decodeBody, encodeRunHeader, readHeader } from '../src/protocol/codec.js';
import { Flag, FrameType, HEADER_SIZE, type Header } from '../src/protocol/frames.js';
import { ImageFileSource } from '../src/source/image-file.js';
import { PageServer } from '../src/source/server.js';
import { acknowledgeUffd, receiveUffd } from '../src/target/handoff.js';
import { FaultHandler, type FaultHandlerOptions, type HandlerReport } from '../src/target/handler.js';
import { TcpTransport } from '../src/transport/index.js';
import { caps, need } from './helpers/caps.js';
import { startProxy } from './helpers/proxy.js';
import { FAULTER, jsonLines, makeImage, spawnTs } from './helpers/util.js';

const PS = 4096;

/**
 * A faulter process whose `pages` are served by a handler, through a proxy whose hook sees every
 * frame from the source; `check` gets the handler's report and the pages' hashes (and the expected ones).
 */
async function throughProxy(
  pages: number,
  onSourceFrame: (buf: Buffer, off: number, h: Header) => void,
  options: Partial<FaultHandlerOptions>,
  check: (report: HandlerReport, hashes: number[], expected: number[]) => void,
): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'pc-crc-'));
  const expected = makeImage(join(dir, 'img'), pages * PS);
  const server = new PageServer(new ImageFileSource(join(dir, 'img')));
  const listener = await server.listen(new TcpTransport('127.0.0.1', 0));
  const proxy = await startProxy((listener.endpoint as { port: number }).port, onSourceFrame);
  const [ours, theirs] = native.socketpair();
  const faulter = spawnTs(FAULTER, ['--length', String(pages * PS)], { fd3: theirs });
  native.close(theirs);
  let handler: FaultHandler | null = null;
  try {
    const handoff = await receiveUffd(ours, 30_000);
    handler = await FaultHandler.start({ endpoint: { kind: 'tcp', host: '127.0.0.1', port: proxy.port }, uffd: handoff.uffd, mappings: handoff.mappings, targetPid: handoff.pid, ...options });
    let fatal: Error | null = null;
    handler.on('fatal', (e: Error) => (fatal = e));
    acknowledgeUffd(ours);
    const got = await jsonLines(faulter).next((e) => e.event === 'hashes', 60_000).catch((e: Error) => {
      throw new Error(`${e.message}; handler: ${fatal?.message}`);
    });
    check(await handler.done(), got.hashes as number[], expected);
  } finally {
    await handler?.stop();
    native.close(ours);
    faulter.kill('SIGKILL');
    await proxy.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const wrongPages = (hashes: number[], expected: number[]) => hashes.filter((h, i) => h !== expected[i]).length;

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
    // Flips a byte in the first page of every third page run, 40 times in all, never twice the
    // same page (a transient fault: a refetch gets through).
    let corrupted = 0;
    let runs = 0;
    const hit = new Set<number>();
    const corrupt = (buf: Buffer, off: number, h: Header) => {
      if ((h.type !== FrameType.PAGES && h.type !== FrameType.PUSH) || !(h.flags & Flag.CHECKSUMS)) return;
      const firstPage = buf.readUInt32LE(off + HEADER_SIZE + 8);
      if (++runs % 3 !== 0 || corrupted >= 40 || hit.has(firstPage)) return;
      const count = buf.readUInt32LE(off + HEADER_SIZE + 4);
      buf[off + HEADER_SIZE + 16 + count * 4 + 100] ^= 0x5a;
      hit.add(firstPage);
      corrupted++;
    };
    // small requests, so that many runs cross the proxy
    await throughProxy(4096, corrupt, { pushBatch: 8, pushWindow: 2 }, (report, hashes, expected) => {
      assert.equal(report.complete, true);
      assert.equal(corrupted, 40, 'the proxy corrupted pages');
      assert.equal(report.corrupt, 40, `every corrupted page was caught: ${JSON.stringify(report)}`);
      assert.equal(wrongPages(hashes, expected), 0, 'every page right');
      t.diagnostic(`corrupted ${corrupted}, caught ${report.corrupt}, pages ${report.pages}, wrong 0`);
    });
  });

  it('a handler that asks for no checksums gets runs without them, every page right', async (t) => {
    if (!need(t, caps.uffd.ok, caps.uffd.detail)) return;
    let runs = 0;
    let withTable = 0;
    const count = (_buf: Buffer, _off: number, h: Header) => {
      if (h.type !== FrameType.PAGES && h.type !== FrameType.PUSH) return;
      runs++;
      if (h.flags & Flag.CHECKSUMS) withTable++;
    };
    await throughProxy(1024, count, { pushBatch: 16, checksums: false }, (report, hashes, expected) => {
      assert.equal(report.complete, true);
      assert.ok(runs > 0, 'pages crossed the proxy');
      assert.equal(withTable, 0, `${withTable} of ${runs} runs carried checksums nobody asked for`);
      assert.equal(wrongPages(hashes, expected), 0, 'every page right');
    });
  });
});
