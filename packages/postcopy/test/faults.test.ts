// Fault injection: real sockets, real faults, a real process on the target. The connection is cut
// mid-migration and the target resumes; a source gone for good fails within the deadline.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { native } from '../src/native/index.js';
import { ImageFileSource } from '../src/source/image-file.js';
import { PageServer } from '../src/source/server.js';
import { acknowledgeUffd, receiveUffd } from '../src/target/handoff.js';
import { FaultHandler, type FaultHandlerOptions } from '../src/target/handler.js';
import { TcpTransport } from '../src/transport/index.js';
import { caps, need } from './helpers/caps.js';
import { startProxy, type Proxy } from './helpers/proxy.js';
import { CLI, FAULTER, jsonLines, makeImage, spawnTs } from './helpers/util.js';

const PS = 4096;

/** An image served over TCP through a proxy, and a faulter process whose memory it is. */
async function setup(pages: number, faulterArgs: string[], options: Partial<FaultHandlerOptions>) {
  const dir = mkdtempSync(join(tmpdir(), 'pc-faults-'));
  const expected = makeImage(join(dir, 'img'), pages * PS);
  const server = new PageServer(new ImageFileSource(join(dir, 'img')));
  const listener = await server.listen(new TcpTransport('127.0.0.1', 0));
  const proxy = await startProxy((listener.endpoint as { port: number }).port);
  const [ours, theirs] = native.socketpair();
  const faulter = spawnTs(FAULTER, ['--length', String(pages * PS), ...faulterArgs], { fd3: theirs });
  native.close(theirs);
  const handoff = await receiveUffd(ours, 30_000);
  const handler = await FaultHandler.start({ endpoint: { kind: 'tcp', host: '127.0.0.1', port: proxy.port }, uffd: handoff.uffd, mappings: handoff.mappings, targetPid: handoff.pid, ...options });
  let fatal: Error | null = null;
  handler.on('fatal', (e: Error) => (fatal = e));
  acknowledgeUffd(ours);
  native.close(ours);
  const lines = jsonLines(faulter);
  // a faulter killed by the handler: say why
  const out = { ...lines, next: (...a: Parameters<typeof lines.next>) => lines.next(...a).catch((e: Error) => Promise.reject(new Error(`${e.message}; handler: ${fatal?.message}`))) };
  const cleanup = async () => {
    await handler.stop();
    faulter.kill('SIGKILL');
    await proxy.close().catch(() => {});
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  };
  return { expected, server, proxy, faulter, out, handler, cleanup };
}

/** Cuts a random live connection every `everyMs`, `times` times, or until `until` resolves. */
async function cutRepeatedly(proxy: Proxy, times: number, everyMs: number, until: Promise<unknown>): Promise<number> {
  let done = false;
  void until.finally(() => (done = true)).catch(() => {});
  let cuts = 0;
  for (let tries = 0; cuts < times && !done && tries < times * 50; tries++) {
    await new Promise((r) => setTimeout(r, everyMs));
    if (proxy.connections > 0 && proxy.cut(Math.floor(Math.random() * proxy.connections))) cuts++;
  }
  return cuts;
}

describe('faults injected mid-migration', () => {
  it('resumes after the connection is cut 20 times, and every page arrives intact', async (t) => {
    if (!need(t, caps.uffd.ok, caps.uffd.detail)) return;
    // A page at a time, and a slow reader: the migration lasts long enough for 20 cuts.
    const s = await setup(8192, ['--slow', '1'], { pushBatch: 1, pushWindow: 1, resumeTimeoutMs: 10_000 });
    try {
      const hashes = s.out.next((e) => e.event === 'hashes', 120_000);
      const cuts = await cutRepeatedly(s.proxy, 20, 20, hashes);
      const got = await hashes;
      const report = await s.handler.done();
      assert.equal(cuts, 20, 'the migration outlasted 20 cuts');
      assert.equal(report.complete, true);
      assert.ok(report.resumes >= 10, `the threads resumed (${report.resumes} times for ${cuts} cuts)`);
      const wrong = (got.hashes as number[]).filter((h, i) => h !== s.expected[i]).length;
      assert.equal(wrong, 0, `${wrong} pages arrived wrong`);
      t.diagnostic(`cuts ${cuts}, resumes ${report.resumes}, pages ${report.pages}, wrong 0`);
    } finally {
      await s.cleanup();
    }
  });

  /**
   * An image served in this process, a `postcopy attach` daemon (faults only: most pages stay
   * missing for a while) with these extra arguments, and a slow faulter process attached to it.
   */
  async function daemonMigration(tag: string, attachArgs: string[]) {
    const dir = mkdtempSync(join(tmpdir(), `pc-${tag}-`));
    const pages = 8192;
    const expected = makeImage(join(dir, 'img'), pages * PS);
    const server = new PageServer(new ImageFileSource(join(dir, 'img')));
    const listener = await server.listen(new TcpTransport('127.0.0.1', 0));
    const connect = `tcp://127.0.0.1:${(listener.endpoint as { port: number }).port}`;
    const sock = join(dir, 'uffd.sock');
    const daemon = spawnTs(CLI, ['attach', '--connect', connect, '--uffd-socket', sock, '--no-push', ...attachArgs, '--json']);
    const children = [daemon];
    const cleanup = async () => {
      for (const c of children) c.kill('SIGKILL');
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    };
    try {
      for (let i = 0; i < 400 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 25));
      const faulter = spawnTs(FAULTER, ['--length', String(pages * PS), '--socket', sock, '--slow', '1']);
      children.push(faulter);
      const out = jsonLines(faulter);
      await out.next((e) => e.event === 'attached', 30_000);
      return { dir, expected, connect, daemon, out, children, cleanup };
    } catch (err) {
      await cleanup();
      throw err;
    }
  }

  it('kills the target when the fault handler itself is killed, before a missing page can read as zero', async (t) => {
    if (!need(t, caps.uffd.ok, caps.uffd.detail)) return;
    const m = await daemonMigration('daemon', []);
    try {
      await new Promise((r) => setTimeout(r, 100)); // mid-migration
      m.daemon.kill('SIGKILL');
      // Its keeper kills the process; without it the process would read zeros and print its hashes.
      assert.equal(await m.out.exit, 'SIGKILL');
    } finally {
      await m.cleanup();
    }
  });

  it('lets a restarted fault handler take the migration over from the keeper, every page intact', async (t) => {
    if (!need(t, caps.uffd.ok, caps.uffd.detail)) return;
    const recoverAt = join(tmpdir(), `pc-recover-${process.pid}.sock`);
    const m = await daemonMigration('recover', ['--recover-at', recoverAt, '--recover-grace', '20']);
    try {
      await new Promise((r) => setTimeout(r, 150)); // mid-migration: most pages missing
      m.daemon.kill('SIGKILL');
      for (let i = 0; i < 400 && !existsSync(recoverAt); i++) await new Promise((r) => setTimeout(r, 10)); // the keeper waits there
      // Faults only here too: the thread that was waiting on the dead handler must be served again.
      const second = spawnTs(CLI, ['attach', '--connect', m.connect, '--recover', recoverAt, '--no-push', '--json']);
      m.children.push(second);
      const secondOut = jsonLines(second);
      const got = await m.out.next((e) => e.event === 'hashes', 60_000).catch((err: Error) => {
        throw new Error(`${err.message}; second handler said: ${secondOut.stderr()}`);
      });
      const report = await secondOut.next((e) => 'complete' in e, 60_000);
      assert.equal(report.complete, true);
      const wrong = (got.hashes as number[]).filter((h, i) => h !== m.expected[i]).length;
      assert.equal(wrong, 0, `${wrong} pages arrived wrong`);
      t.diagnostic(`handler killed mid-migration, its successor took over: faulted ${report.faulted}, pushed ${report.pushed}, already there ${report.raced}, wrong 0`);
    } finally {
      await m.cleanup();
    }
  });

  it('fails within its deadline, and kills the target, when the source is gone for good', async (t) => {
    if (!need(t, caps.uffd.ok, caps.uffd.detail)) return;
    const s = await setup(8192, ['--slow', '1'], { pushBatch: 1, pushWindow: 1, resumeTimeoutMs: 500 });
    try {
      await s.out.next((e) => e.event === 'attached');
      await new Promise((r) => setTimeout(r, 50));
      await s.proxy.close(); // nothing listens there any more
      const t0 = Date.now();
      await assert.rejects(s.handler.done(), (e: { code?: string; message: string }) => {
        assert.equal(e.code, 'ERR_PEER_CLOSED');
        assert.match(e.message, /unreachable for 500 ms/);
        return true;
      });
      assert.ok(Date.now() - t0 < 5000, `gave up in ${Date.now() - t0} ms`);
      assert.equal(await s.out.exit, 'SIGKILL');
    } finally {
      await s.cleanup();
    }
  });
});
