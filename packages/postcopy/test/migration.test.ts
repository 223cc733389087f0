// End to end with real processes, real userfaultfd faults and real sockets.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { native } from '../src/native/index.js';
import { LiveProcessSource } from '../src/source/live-process.js';
import { PageServer } from '../src/source/server.js';
import { acknowledgeUffd, receiveUffd } from '../src/target/handoff.js';
import { FaultHandler, type FaultHandlerOptions } from '../src/target/handler.js';
import { UnixTransport } from '../src/transport/index.js';
import { hashPages } from '../src/util/pagehash.js';
import { caps, need } from './helpers/caps.js';
import { makeCerts } from './helpers/certs.js';
import { CLI, FAULTER, jsonLines, makeImage, sh, shQuiet, spawnTs } from './helpers/util.js';

const PS = 4096;
const WORKLOAD = fileURLToPath(new URL('../src/demo/workload.ts', import.meta.url));

describe('migration between two network namespaces over veth', () => {
  const tag = `${process.pid % 100000}`;
  const nsA = `pc-src-${tag}`;
  const nsB = `pc-dst-${tag}`;
  let dir: string;
  let ready = false;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'pc-mig-'));
    if (!caps.netns.ok) return;
    sh('ip', ['netns', 'add', nsA]);
    sh('ip', ['netns', 'add', nsB]);
    sh('ip', ['link', 'add', `pcva${tag}`, 'netns', nsA, 'type', 'veth', 'peer', 'name', `pcvb${tag}`, 'netns', nsB]);
    sh('ip', ['-n', nsA, 'addr', 'add', '10.231.0.1/24', 'dev', `pcva${tag}`]);
    sh('ip', ['-n', nsB, 'addr', 'add', '10.231.0.2/24', 'dev', `pcvb${tag}`]);
    for (const [ns, dev] of [[nsA, `pcva${tag}`], [nsB, `pcvb${tag}`]]) {
      sh('ip', ['-n', ns, 'link', 'set', dev, 'up']);
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    ready = true;
  });

  after(() => {
    shQuiet('ip', ['netns', 'del', nsA]); // deleting a namespace removes its veth end and the peer
    shQuiet('ip', ['netns', 'del', nsB]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('serves an image from one namespace to a process faulting in the other over TLS, every page intact', async (t) => {
    if (!need(t, caps.netns.ok && caps.uffd.ok, `${caps.netns.detail}; ${caps.uffd.detail}`)) return;
    assert.ok(ready);
    const pages = 2048;
    const expected = makeImage(join(dir, 'img'), pages * PS, 128);
    // Both ends hold the migration's key (hex in a file), as `postcopy migrate --netns` runs them.
    const keyFile = join(dir, 'key');
    writeFileSync(keyFile, randomBytes(32).toString('hex'));
    const keyArgs = ['--key-file', keyFile, '--key-id', 'veth-test'];
    // and TLS with mutual certificates
    const certs = makeCerts();
    const tlsArgs = (who: 'source' | 'target') => ['--tls-cert', certs.files(who).cert, '--tls-key', certs.files(who).key, '--tls-ca', certs.files(who).ca];
    const serve = spawnTs(CLI, ['serve', '--image', join(dir, 'img'), '--listen', 'tls://10.231.0.1:7411', ...keyArgs, ...tlsArgs('source'), '--json'], { prefix: ['ip', 'netns', 'exec', nsA] });
    const serveOut = jsonLines(serve);
    try {
      await serveOut.next((e) => e.event === 'listening');
      const sock = join(dir, 'uffd.sock');
      const attach = spawnTs(CLI, ['attach', '--connect', 'tls://10.231.0.1:7411', '--uffd-socket', sock, ...keyArgs, ...tlsArgs('target'), '--json', '--timeout', '60'], { prefix: ['ip', 'netns', 'exec', nsB] });
      const attachOut = jsonLines(attach);
      const deadline = Date.now() + 20_000;
      while (!(await import('node:fs')).existsSync(sock) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const faulter = spawnTs(FAULTER, ['--length', String(pages * PS), '--socket', sock]);
      const faulterOut = jsonLines(faulter);
      const got = await faulterOut.next((e) => e.event === 'hashes', 60_000).catch((err: Error) => {
        throw new Error(`${err.message}; attach said: ${attachOut.stderr()}; serve said: ${serveOut.stderr()}`);
      });
      const report = await attachOut.next((e) => 'complete' in e, 60_000);
      assert.equal(report.complete, true);
      assert.equal(report.pages, pages);
      assert.equal((report.faulted as number) + (report.pushed as number) + (report.zero as number) + (report.raced as number), pages);
      assert.ok((report.zero as number) === 0, 'an image has no untouched pages');
      const mismatched = (got.hashes as number[]).filter((h, i) => h !== expected[i]).length;
      assert.equal(mismatched, 0);
      await serveOut.next((e) => e.event === 'done', 10_000);
      assert.equal(await attachOut.exit, 0);
    } finally {
      serve.kill('SIGKILL');
      rmSync(certs.dir, { recursive: true, force: true });
    }
  });
  it('survives the veth going down 20 times and the source being killed and restarted, every page intact', async (t) => {
    if (!need(t, caps.netns.ok && caps.uffd.ok, `${caps.netns.detail}; ${caps.uffd.detail}`)) return;
    assert.ok(ready);
    const pages = 8192;
    const expected = makeImage(join(dir, 'img-cuts'), pages * PS);
    const keyFile = join(dir, 'key-cuts');
    writeFileSync(keyFile, randomBytes(32).toString('hex'));
    const serveArgs = ['serve', '--image', join(dir, 'img-cuts'), '--listen', 'tcp://10.231.0.1:7412', '--key-file', keyFile, '--json'];
    const startServe = async () => {
      const child = spawnTs(CLI, serveArgs, { prefix: ['ip', 'netns', 'exec', nsA] });
      await jsonLines(child).next((e) => e.event === 'listening');
      return child;
    };
    let serve = await startServe();
    const sock = join(dir, 'uffd-cuts.sock');
    // Faults only, and a slow reader: the migration lasts through every cut. A stalled reply counts
    // as a lost connection after 1 s.
    const attach = spawnTs(CLI, ['attach', '--connect', 'tcp://10.231.0.1:7412', '--uffd-socket', sock, '--key-file', keyFile, '--no-push', '--reply-timeout', '1000', '--resume-timeout', '30', '--json', '--timeout', '60'], { prefix: ['ip', 'netns', 'exec', nsB] });
    const attachOut = jsonLines(attach);
    try {
      for (let i = 0; i < 400 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
      const faulter = spawnTs(FAULTER, ['--length', String(pages * PS), '--socket', sock, '--slow', '1']);
      const faulterOut = jsonLines(faulter);
      await faulterOut.next((e) => e.event === 'attached', 30_000);
      const link = (state: 'up' | 'down') => sh('ip', ['-n', nsA, 'link', 'set', `pcva${tag}`, state]);
      let cuts = 0;
      for (; cuts < 20; cuts++) {
        if (cuts === 10) {
          serve.kill('SIGKILL'); // the source's daemon dies; the frozen memory is still there
          await new Promise((r) => setTimeout(r, 200));
          serve = await startServe();
        }
        link('down');
        await new Promise((r) => setTimeout(r, 150));
        link('up');
        await new Promise((r) => setTimeout(r, 100));
      }
      const got = await faulterOut.next((e) => e.event === 'hashes', 120_000).catch((err: Error) => {
        throw new Error(`${err.message}; attach said: ${attachOut.stderr()}`);
      });
      const report = await attachOut.next((e) => 'complete' in e, 60_000);
      assert.equal(report.complete, true);
      assert.ok((report.resumes as number) >= 1, `the target resumed after the source restarted (${report.resumes} resumes)`);
      const wrong = (got.hashes as number[]).filter((h, i) => h !== expected[i]).length;
      assert.equal(wrong, 0, `${wrong} pages arrived wrong`);
      t.diagnostic(`veth down ${cuts} times, source restarted once, resumes ${report.resumes}, pages ${report.pages}, wrong 0`);
    } finally {
      sh('ip', ['-n', nsA, 'link', 'set', `pcva${tag}`, 'up']);
      serve.kill('SIGKILL');
      attach.kill('SIGKILL');
    }
  });
});

describe('a live source process', () => {
  /** Starts a workload, freezes it, serves it; a faulter process maps its state through our handler. */
  async function setup(mib: number, push: boolean, faulterArgs: string[] = ['--slow', push ? '0' : '1'], handlerOptions: Partial<FaultHandlerOptions> = {}) {
    const work = spawnTs(WORKLOAD, ['source', '--mib', String(mib)]);
    const workOut = jsonLines(work);
    const ready = await workOut.next((e) => e.event === 'ready', 60_000);
    work.kill('SIGUSR2');
    await workOut.next((e) => e.event === 'frozen');
    const source = await LiveProcessSource.attach(work.pid!, { ranges: [{ start: ready.addr as number, length: ready.length as number }] });
    const dir = mkdtempSync(join(tmpdir(), 'pc-live-'));
    const server = new PageServer(source);
    const listener = await server.listen(new UnixTransport(join(dir, 'src.sock')));
    const [ours, theirs] = native.socketpair();
    const faulter = spawnTs(FAULTER, ['--length', String(ready.length), ...faulterArgs], { fd3: theirs });
    native.close(theirs);
    const handoff = await receiveUffd(ours, 30_000);
    const handler = await FaultHandler.start({ endpoint: listener.endpoint, uffd: handoff.uffd, mappings: handoff.mappings, push, targetPid: handoff.pid, ...handlerOptions });
    acknowledgeUffd(ours);
    native.close(ours);
    const cleanup = async () => {
      await handler.stop();
      faulter.kill('SIGKILL');
      work.kill('SIGKILL');
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    };
    return { work, source, server, faulter, faulterOut: jsonLines(faulter), handler, cleanup, length: ready.length as number };
  }

  it('moves a frozen process state intact, zero pages included', async (t) => {
    if (!need(t, caps.uffd.ok && caps.processVmReadv.ok, caps.uffd.detail)) return;
    const s = await setup(16, true);
    try {
      const got = await s.faulterOut.next((e) => e.event === 'hashes', 60_000);
      const report = await s.handler.done();
      assert.equal(report.complete, true);
      assert.ok(report.zero > 0, 'the untouched tail arrives as zero pages');
      const region = s.source.regions[0];
      const buf = Buffer.alloc(region.length);
      s.source.read(region, 0, region.length / PS, buf, 0);
      const expected = new Uint32Array(region.length / PS);
      hashPages(buf, PS, expected);
      assert.deepEqual(got.hashes, Array.from(expected));
    } finally {
      await s.cleanup();
    }
  });

  it('follows the process as it moves missing pages (mremap), the push racing the moves', async (t) => {
    if (!need(t, caps.uffd.ok && caps.processVmReadv.ok, caps.uffd.detail)) return;
    // A push of a page at a time: most pages are still missing at each move.
    const s = await setup(64, true, ['--slow', '1', '--remap', '1'], { pushBatch: 1, pushWindow: 1 });
    try {
      await s.faulterOut.next((e) => e.event === 'moved', 60_000);
      const missingAtMove = s.handler.progress.pages - s.handler.progress.present;
      const got = await s.faulterOut.next((e) => e.event === 'hashes', 60_000);
      const report = await s.handler.done();
      assert.equal(report.complete, true);
      assert.ok(missingAtMove > report.pages / 4, `most pages were still missing when the range moved (${missingAtMove} of ${report.pages})`);
      const region = s.source.regions[0];
      const buf = Buffer.alloc(region.length);
      s.source.read(region, 0, region.length / PS, buf, 0);
      const expected = new Uint32Array(region.length / PS);
      hashPages(buf, PS, expected);
      const wrong = (got.hashes as number[]).filter((h, i) => h !== expected[i]).length;
      assert.equal(wrong, 0, `${wrong} pages read wrong after the moves`);
    } finally {
      await s.cleanup();
    }
  });

  it('drops pages the process discards or unmaps while they are missing, and completes', async (t) => {
    if (!need(t, caps.uffd.ok && caps.processVmReadv.ok, caps.uffd.detail)) return;
    const s = await setup(16, true, ['--slow', '0', '--drop', '1'], { pushBatch: 1, pushWindow: 1 });
    try {
      const got = await s.faulterOut.next((e) => e.event === 'hashes', 60_000);
      const report = await s.handler.done();
      assert.equal(report.complete, true, JSON.stringify(report));
      const region = s.source.regions[0];
      const pages = region.length / PS;
      const quarter = Math.floor(pages / 4);
      const buf = Buffer.alloc(region.length);
      s.source.read(region, 0, pages, buf, 0);
      buf.fill(0, quarter * PS, 2 * quarter * PS); // MADV_DONTNEED: reads as zero
      const expected = new Uint32Array(pages);
      hashPages(buf, PS, expected);
      expected.fill(0, 3 * quarter); // unmapped: not read
      const wrong = (got.hashes as number[]).filter((h, i) => h !== expected[i]).length;
      assert.equal(wrong, 0, `${wrong} pages read wrong`);
      assert.ok(report.faulted + report.pushed + report.zero + report.raced < pages, 'the dropped pages were never fetched');
    } finally {
      await s.cleanup();
    }
  });

  type Setup = Awaited<ReturnType<typeof setup>>;
  const breakages: { what: string; breakIt: (s: Setup) => Promise<void> | void; check: (e: { code?: string; remoteCode?: string }) => void }[] = [
    {
      what: 'the source process dies',
      breakIt: (s) => void s.work.kill('SIGKILL'),
      check: (e) => {
        assert.equal(e.code, 'ERR_REMOTE');
        assert.equal(e.remoteCode, 'ERR_SOURCE_GONE');
      },
    },
    { what: 'the peer disconnects', breakIt: (s) => s.server.close(), check: (e) => assert.equal(e.code, 'ERR_PEER_CLOSED') },
  ];

  for (const { what, breakIt, check } of breakages) {
    it(`fails clearly when ${what} mid-migration, and kills the target`, async (t) => {
      if (!need(t, caps.uffd.ok && caps.processVmReadv.ok, caps.uffd.detail)) return;
      const s = await setup(64, false);
      try {
        await s.faulterOut.next((e) => e.event === 'attached');
        await new Promise((r) => setTimeout(r, 100));
        await breakIt(s);
        await assert.rejects(s.handler.done(), (e: { code?: string; remoteCode?: string }) => {
          check(e);
          return true;
        });
        assert.equal(await s.faulterOut.exit, 'SIGKILL');
        assert.ok(s.handler.progress.present < s.handler.progress.pages);
      } finally {
        await s.cleanup();
      }
    });
  }
});
