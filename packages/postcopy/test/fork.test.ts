// Forks during post-copy: every child a migrated task forks while pages are still missing sees
// exactly the memory its parent had at the fork, never a page read as zero (issue 15).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { startInRoot } from '../src/bench/criu-bench.js';
import { migrate } from '../src/criu/migrate.js';
import { criuRootDir, ensureCriuRoot, inCriuRoot, withPipeSize } from '../src/criu/root.js';
import { native } from '../src/native/index.js';
import { ImageFileSource } from '../src/source/image-file.js';
import { PageServer } from '../src/source/server.js';
import { acknowledgeUffd, receiveUffd } from '../src/target/handoff.js';
import { FaultHandler } from '../src/target/handler.js';
import { TcpTransport } from '../src/transport/index.js';
import { createLogger } from '../src/util/log.js';
import { caps, need } from './helpers/caps.js';
import { FAULTER, jsonLines, makeImage, spawnTs, waitForLines } from './helpers/util.js';

const PS = 4096;

const RUNS = Number(process.env.POSTCOPY_FORK_RUNS ?? 5);
const MIB = 256;
const FORKS = 50;


const alive = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !'ZX'.includes(stat[stat.lastIndexOf(')') + 2]);
  } catch {
    return false;
  }
};

if (process.env.POSTCOPY_STALL_FILE) {
  // Debugging aid: the main thread's native stack whenever its event loop stalls for 3 s.
  const beat = new Int32Array(new SharedArrayBuffer(4));
  setInterval(() => Atomics.store(beat, 0, Math.floor(Date.now() / 1000)), 100).unref();
  Atomics.store(beat, 0, Math.floor(Date.now() / 1000));
  new Worker(new URL('./helpers/stall-watch.mjs', import.meta.url), { workerData: { beat, file: process.env.POSTCOPY_STALL_FILE } }).unref();
}

describe('forks during post-copy', () => {
  for (const netns of [false, true]) {
    it(`a fork storm (${FORKS} forks from the restore on, ${MIB} MiB, ${RUNS} runs${netns ? ', two network namespaces' : ''}): every child sees its parent's memory at the fork`, async (t) => {
      if (!need(t, caps.root && caps.uffd.ok && (!netns || caps.netns.ok), `${caps.uffd.detail}; ${caps.netns.detail}`)) return;
      ensureCriuRoot();
      const totals = { forked: 0, ok: 0, bad: 0, crashed: 0 };
      for (let run = 0; run < RUNS; run++) {
        const dir = `/var/lib/postcopy/forkstorm${netns ? 'ns' : ''}-${process.pid}-${run}`;
        const host = join(criuRootDir(), dir);
        const out = join(host, 'out.txt');
        const lag = monitorEventLoopDelay({ resolution: 20 });
        lag.enable();
        const stall = setInterval(() => {
          if (process.env.POSTCOPY_TEST_VERBOSE && lag.max > 2e9) console.error(`event loop stalled: max ${Math.round(lag.max / 1e6)} ms`);
        }, 1000);
        try {
          const pid = await startInRoot(dir, `/usr/local/bin/forkstorm ${MIB} ${dir}/out.txt ${FORKS} ${run + 1}`, `[ -s ${dir}/out.txt ]`, 'forkstorm');
          // The storm starts the moment `criu restore` has returned, while most pages are on the source.
          const onPhase = (phase: string) => phase === 'restored' && writeFileSync(`${out}.fork`, '');
          const logger = process.env.POSTCOPY_TEST_VERBOSE ? createLogger('migrate', 'info') : undefined;
          const result = await withPipeSize(() => migrate({ pid, workDir: dir, criuPort: (netns ? 27860 : 27870) + (process.pid % 9), netns, onPhase, logger, timeoutMs: 60_000 }));
          const lines = await waitForLines(out, (l) => l.some((x) => x.startsWith('storm done')) && /^(ok|BAD) /.test(l[l.length - 1]), 120_000);
          const children = lines.filter((l) => l.startsWith('child '));
          const bad = children.filter((l) => !l.startsWith('child ok '));
          assert.ok(lines.some((l) => l.startsWith('storm done')), `run ${run}: the storm ends (last lines: ${lines.slice(-3).join(' | ')})`);
          assert.deepEqual(bad, [], `run ${run}: no child read a wrong page or died`);
          assert.equal(children.length, FORKS, `run ${run}: every child reported`);
          assert.deepEqual(lines.filter((l) => l.startsWith('BAD ')), [], `run ${run}: the parent's memory is whole`);
          assert.ok(!alive(pid) || result.restoredPid === pid, `run ${run}: the original is gone`);
          if (process.env.POSTCOPY_TEST_VERBOSE) t.diagnostic(`run ${run}: ${result.forked} forks served, ${readdirSync('/proc/self/task').length} threads here after it, event loop delay max ${Math.round(lag.max / 1e6)} ms`);
          totals.forked += result.forked ?? 0;
          totals.ok += children.length - bad.length;
        } finally {
          clearInterval(stall);
          lag.disable();
          spawnSync('pkill', ['-9', '-x', 'forkstorm']);
          rmSync(host, { recursive: true, force: true });
        }
      }
      t.diagnostic(`${RUNS} runs: ${totals.ok} children right, ${totals.forked} forks served during post-copy`);
      assert.ok(totals.forked >= RUNS, `forks came while pages were missing (${totals.forked} served by handlers of their own)`);
    });
  }
});

describe('a fork child that dies during post-copy', () => {
  it('is reported with its signal in the result', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return;
    ensureCriuRoot();
    // The signal is read from a dead child's zombie. Its parent may reap all three before the
    // handler looks (seen once in a full run): such a run says nothing of the report, and is run
    // again, three runs at most. A report that never names them fails all three.
    let died: { pid: number | null; signal: number }[] = [];
    for (let attempt = 0; attempt < 3 && died.length === 0; attempt++) {
      const dir = `/var/lib/postcopy/forkcrash-${process.pid}-${attempt}`;
      const host = join(criuRootDir(), dir);
      try {
        // The first 3 children read a word and kill themselves with SIGUSR1, right after the restore.
        const pid = await startInRoot(dir, `/usr/local/bin/forkstorm 64 ${dir}/out.txt 6 7 3`, `[ -s ${dir}/out.txt ]`, 'forkstorm');
        const onPhase = (phase: string) => phase === 'restored' && writeFileSync(join(host, 'out.txt.fork'), '');
        // A slow push (a page per request) so that the children die while pages are still missing.
        const result = await withPipeSize(() => migrate({ pid, workDir: dir, criuPort: 27830 + (process.pid % 9), onPhase, pushBatch: 1, pushWindow: 1, timeoutMs: 60_000 }));
        const lines = await waitForLines(join(host, 'out.txt'), (l) => l.some((x) => x.startsWith('storm done')), 60_000);
        assert.equal(lines.filter((l) => l.startsWith('child signal ')).length, 3, `three children died of a signal: ${lines.slice(0, 12).join(' | ')}`);
        died = result.died_of_signal ?? [];
        if (!died.length) t.diagnostic(`run ${attempt}: the parent reaped every child before the handler looked: ${JSON.stringify(result)}`);
      } finally {
        spawnSync('pkill', ['-9', '-x', 'forkstorm']);
        rmSync(host, { recursive: true, force: true });
      }
    }
    assert.ok(died.length >= 1, 'the result names them, in one of three runs');
    assert.ok(died.every((d) => d.signal === 10 && d.pid! > 0), `by pid and SIGUSR1: ${JSON.stringify(died)}`);
  });
});

const REDIS_RUNS = Number(process.env.POSTCOPY_BGSAVE_RUNS ?? 10);
const REDIS_KEYS = Number(process.env.POSTCOPY_BGSAVE_KEYS ?? 300_000);

/** Runs shell lines inside the CRIU root; their output, or a thrown error. */
function inRoot(script: string): string {
  const [cmd, ...args] = inCriuRoot(['/bin/bash', '-c', script]);
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`in the CRIU root: ${script}: ${r.stderr || r.stdout}`);
  return r.stdout.trim();
}

/** Sends one command to a redis on a Unix socket, without waiting for its answer. */
function sendRedis(sock: string, ...words: string[]): void {
  const c = createConnection(sock);
  c.on('error', () => {});
  c.end(`*${words.length}\r\n${words.map((w) => `$${w.length}\r\n${w}\r\n`).join('')}`);
}

describe('redis BGSAVE right after the restore', () => {
  for (const netns of [false, true]) {
    it(`writes an RDB with the digest of the dataset at the fork (${REDIS_RUNS} runs, ${REDIS_KEYS} keys${netns ? ', two network namespaces' : ''})`, async (t) => {
      if (!need(t, caps.root && caps.uffd.ok && (!netns || caps.netns.ok), `${caps.uffd.detail}; ${caps.netns.detail}`)) return;
      ensureCriuRoot();
      let forked = 0;
      for (let run = 0; run < REDIS_RUNS; run++) {
        const dir = `/var/lib/postcopy/bgsave${netns ? 'ns' : ''}-${process.pid}-${run}`;
        const host = join(criuRootDir(), dir);
        const cli = `redis-cli -s ${dir}/redis.sock`;
        try {
          const pid = await startInRoot(dir, `redis-server --port 0 --unixsocket ${dir}/redis.sock --dir ${dir} --dbfilename dump.rdb --save '' --appendonly no --enable-debug-command yes --daemonize no`, `[ -S ${dir}/redis.sock ]`, 'redis-server');
          const digest = inRoot(`${cli} DEBUG POPULATE ${REDIS_KEYS} key 100 >/dev/null && ${cli} DEBUG DIGEST`);
          // BGSAVE the moment the restored server runs: its child reads the whole dataset while most pages are on the source.
          const onPhase = (phase: string) => phase === 'restored' && sendRedis(join(host, 'redis.sock'), 'BGSAVE');
          const result = await withPipeSize(() => migrate({ pid, workDir: dir, criuPort: (netns ? 27840 : 27850) + (process.pid % 9), netns, onPhase, timeoutMs: 60_000 }));
          forked += result.forked ?? 0;
          let info = '';
          for (let i = 0; i < 300; i++) {
            info = inRoot(`${cli} INFO persistence`);
            if (/rdb_bgsave_in_progress:0/.test(info) && /rdb_last_save_time:/.test(info) && existsSync(join(host, 'dump.rdb'))) break;
            await new Promise((r) => setTimeout(r, 100));
          }
          assert.match(info, /rdb_last_bgsave_status:ok/, `run ${run}: the BGSAVE child finished well`);
          assert.equal(inRoot(`${cli} DEBUG DIGEST`), digest, `run ${run}: the restored dataset is whole`);
          // The RDB, loaded by a redis of its own, has the dataset's digest.
          const check = `redis-server --port 0 --unixsocket ${dir}/check.sock --dir ${dir} --dbfilename dump.rdb --save '' --appendonly no --enable-debug-command yes --daemonize yes --pidfile ${dir}/check.pid`;
          const saved = inRoot(`${check} && for i in $(seq 200); do redis-cli -s ${dir}/check.sock PING 2>/dev/null | grep -q PONG && break; sleep 0.05; done; redis-cli -s ${dir}/check.sock DEBUG DIGEST; redis-cli -s ${dir}/check.sock SHUTDOWN NOSAVE >/dev/null 2>&1; true`).split('\n').at(-1);
          assert.equal(saved, digest, `run ${run}: the RDB written during post-copy holds the dataset`);
        } finally {
          spawnSync('pkill', ['-9', '-f', `${dir}/`]); // the restored redis retitles itself 'redis-server unixsocket:…'
          rmSync(host, { recursive: true, force: true });
        }
      }
      t.diagnostic(`${REDIS_RUNS} runs: every RDB right; ${forked} BGSAVE children served during post-copy`);
    });
  }
});

/**
 * An image served over TCP, and a faulter process whose memory it is (its uffd handed over here):
 * `args(dir)` are the faulter's extra arguments. cleanup() stops the handler and removes the rest.
 */
async function servedFaulter(tag: string, pages: number, args: (dir: string) => string[]) {
  const dir = mkdtempSync(join(tmpdir(), `pc-${tag}-`));
  const expected = makeImage(join(dir, 'img'), pages * PS);
  const server = new PageServer(new ImageFileSource(join(dir, 'img')));
  const { endpoint } = await server.listen(new TcpTransport('127.0.0.1', 0));
  const [ours, theirs] = native.socketpair();
  const faulter = spawnTs(FAULTER, ['--length', String(pages * PS), ...args(dir)], { fd3: theirs });
  native.close(theirs);
  const s = {
    dir,
    expected,
    endpoint,
    faulter,
    handler: null as FaultHandler | null,
    /** the uffd, its mappings and pid; the faulter runs once started() is called */
    handoff: () => receiveUffd(ours, 30_000),
    started: () => acknowledgeUffd(ours),
    async cleanup() {
      await s.handler?.stop();
      faulter.kill('SIGKILL');
      native.close(ours);
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return s;
}

describe('the safety net before a uffd is let go', () => {
  it('finds pages counted as present that the task lacks, fetches them, and the task never reads zeros', async (t) => {
    if (!need(t, caps.uffd.ok, caps.uffd.detail)) return;
    const pages = 4096;
    const s = await servedFaulter('net', pages, (dir) => ['--wait-file', join(dir, 'go')]);
    try {
      const handoff = await s.handoff();
      // The bug of issue 15, on purpose: a third of the pages marked present that never arrived.
      const lie = new Uint8Array(pages).map((_, i) => (i % 3 === 0 ? 1 : 0));
      const lies = lie.reduce((n, b) => n + b, 0);
      s.handler = await FaultHandler.start({ endpoint: s.endpoint, uffd: handoff.uffd, mappings: handoff.mappings, targetPid: handoff.pid, initialPresent: [lie] });
      s.started();
      const report = await s.handler.done();
      assert.equal(report.complete, true);
      assert.equal(report.verified, true, 'the memory was checked against the pagemap');
      assert.equal(report.gaps, lies, 'every page marked present but missing was found');
      writeFileSync(join(s.dir, 'go'), '');
      const got = await jsonLines(s.faulter).next((e) => e.event === 'hashes', 60_000);
      const wrong = (got.hashes as number[]).filter((h, i) => h !== s.expected[i]).length;
      assert.equal(wrong, 0, `${wrong} pages read wrong after the handler let go`);
    } finally {
      await s.cleanup();
    }
  });
});

describe('a handler ends when its work ends', () => {
  it('with no push, ends by itself once its process exits, pages still missing', async (t) => {
    if (!need(t, caps.uffd.ok, caps.uffd.detail)) return;
    // It waits for a file that never comes: no fault, and no push to notice that it is gone.
    const s = await servedFaulter('end', 1024, (dir) => ['--wait-file', join(dir, 'never')]);
    try {
      const handoff = await s.handoff();
      s.handler = await FaultHandler.start({ endpoint: s.endpoint, uffd: handoff.uffd, mappings: handoff.mappings, targetPid: handoff.pid, push: false });
      s.started();
      await jsonLines(s.faulter).next((e) => e.event === 'attached', 30_000);
      s.faulter.kill('SIGKILL');
      const report = await Promise.race([s.handler.done(), new Promise<null>((r) => setTimeout(() => r(null), 10_000).unref())]);
      assert.ok(report, 'the handler ended within 10 s of its process');
      assert.equal(report.exited, true);
      assert.equal(report.complete, false);
      // (its signal is not asserted here: this process, its parent, may reap it before the handler looks)
    } finally {
      await s.cleanup();
    }
  });
});
