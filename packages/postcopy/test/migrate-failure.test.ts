// migrate(): exactly one copy of the task runs at the end, whatever fails and wherever (issue 15):
// the restored tree alone once it has every page and the original is gone; else, every restored
// task killed and seen dead before the original runs again, its memory whole. The error says which.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { migrate, type MigrateError, type MigrateOptions, type MigrateResult } from '../src/criu/migrate.js';
import { ensureCriuRoot, withPipeSize } from '../src/criu/root.js';
import { caps, need } from './helpers/caps.js';
import { assertOneCopy, findProcesses, running, startMemproc, type Workload } from './helpers/migrate-workload.js';

// CRIU's page server ports of this file: 27400-27499, a block of 25 by pid, one port per migration.
let nextPort = 27400 + (process.pid % 4) * 25;
const port = () => nextPort++;

/** Each test's bound (a migration that hangs fails its test, not the run). */
const TEST_TIMEOUT_MS = 120_000;

const MODES = [
  { name: 'default', netns: false },
  { name: 'netns', netns: true },
] as const;

const able = (t: TestContext, netns: boolean) =>
  need(t, caps.root && caps.uffd.ok && (!netns || caps.netns.ok), netns ? `${caps.uffd.detail}; ${caps.netns.detail}` : caps.uffd.detail);

async function migrateFails(o: MigrateOptions): Promise<MigrateError> {
  return withPipeSize(() => migrate({ timeoutMs: 30_000, ...o })).then(
    (r) => assert.fail(`the migration must fail: ${JSON.stringify(r)}`),
    (e: MigrateError) => e,
  );
}

function killAll(match: (argv: string[]) => boolean): number {
  const pids = findProcesses(match);
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  return pids.length;
}

/** `criu dump -t PID ...` */
const criuDumpOf = (pid: number) => (a: string[]) => /(^|\/)criu$/.test(a[0]) && a[1] === 'dump' && a[a.indexOf('-t') + 1] === String(pid);
/** `postcopy serve --dump DIR/img ...` of this workload (--netns) */
const serveOf = (w: Workload) => (a: string[]) => a.includes('serve') && a.includes('--dump') && a.some((x) => x.includes(w.dir));
const restoredPidFile = (w: Workload, netns: boolean) => join(w.host, netns ? 'target' : '', 'restored.pid');

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** What a failed migration must leave: its error as expected, the original alone running, whole. */
async function assertOriginalRuns(w: Workload, e: MigrateError, code: string, message: RegExp, restoredPid = 0) {
  assert.equal(e.code, code, `${e.code}: ${e.message}`);
  assert.match(e.message, message);
  assert.equal(e.running, 'original', e.message);
  if (restoredPid) assert.ok(!running(restoredPid), `the restored task ${restoredPid} is dead`);
  await assertOneCopy(w, w.pid);
}

describe('postcopy migrate: exactly one copy, always', () => {
  it('refuses every bad option before anything is frozen, and the task runs on', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!able(t, false)) return;
    ensureCriuRoot();
    const w = await startMemproc('mf-opts', 8);
    // The port taken by another process (which hangs up on whoever connects), and a process on
    // this host, outside the CRIU root.
    const busy = port();
    const taken = spawn(process.execPath, ['-e', `require('net').createServer((s) => s.destroy()).listen(${busy}, '127.0.0.1', () => console.log('listening'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
    const outside = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      await new Promise<void>((resolve, reject) => {
        taken.stdout!.once('data', () => resolve());
        taken.once('exit', (code) => reject(new Error(`the port holder exited (${code})`)));
      });
      const good: MigrateOptions = { pid: w.pid, workDir: w.dir, criuPort: port() };
      // Each refused as ERR_INVALID_ARG, the task running on ('none' runs where there is no such task).
      const bad: [Partial<MigrateOptions> & Record<string, unknown>, RegExp, ('original' | 'none')?][] = [
        [{ criuPort: busy }, /port .* is taken/],
        [{ criuPort: busy, netns: true }, /port .* is taken/],
        [{ criuPort: 0 }, /criuPort/],
        [{ criuPort: 65536 }, /criuPort/],
        [{ criuPort: 27400.5 }, /criuPort/],
        [{ workDir: 'relative/dir' }, /workDir/],
        [{ workDir: `${w.dir}/../elsewhere` }, /workDir/],
        [{ workDir: `${w.dir}; touch /tmp/pwned` }, /workDir/],
        [{ workDir: `/var/lib/postcopy/${'x'.repeat(120)}` }, /too long/],
        [{ timeoutMs: 0 }, /timeoutMs/],
        [{ timeoutMs: Number.NaN }, /timeoutMs/],
        [{ mode: 'bogus' as never }, /mode/],
        [{ prepare: 'never' as never }, /prepare/],
        [{ pushWindow: 0 }, /pushWindow/],
        [{ readahead: -1 }, /readahead/],
        [{ pid: process.pid }, /pid/],
        [{ pid: 0 }, /pid/, 'none'],
        [{ pid: 2 ** 22 + 1 }, /no process/, 'none'],
        [{ pid: outside.pid! }, /does not run in the CRIU root/],
      ];
      for (const [change, message, runs = 'original'] of bad) {
        const e = await migrateFails({ ...good, ...change });
        assert.equal(e.code, 'ERR_INVALID_ARG', `${JSON.stringify(change)}: ${e.code} ${e.message}`);
        assert.match(e.message, message, JSON.stringify(change));
        assert.equal(e.running, runs, JSON.stringify(change));
      }
      assert.ok(!existsSync(join(w.host, 'img', 'dump.log')), 'CRIU never ran: the task was never frozen');
      await assertOneCopy(w, w.pid);
    } finally {
      taken.kill('SIGKILL');
      outside.kill('SIGKILL');
      w.cleanup();
    }
  });

  for (const { name, netns } of MODES) {
    it(`${name}: a dump that fails is ERR_CRIU in CRIU's words, nothing starts after it, and the original runs on whole`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
      if (!able(t, netns)) return;
      ensureCriuRoot();
      // A connected TCP socket, which CRIU refuses to dump (without --tcp-established) once the task is frozen.
      const peers: Socket[] = [];
      const server: Server = createServer((s) => peers.push(s));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      const tcp = (server.address() as { port: number }).port;
      const w = await startMemproc(`mf-dump-${name}`, 32, `exec 3<>/dev/tcp/127.0.0.1/${tcp}`);
      try {
        const e = await migrateFails({ pid: w.pid, workDir: w.dir, criuPort: port(), netns });
        await assertOriginalRuns(w, e, 'ERR_CRIU', /criu dump failed \(exit \d+\).*TCP/);
        assert.ok(!existsSync(join(w.host, 'img', 'restore.log')) && !existsSync(join(w.host, 'target')), 'nothing started after the dump failed');
      } finally {
        w.cleanup();
        for (const s of peers) s.destroy();
        server.close();
      }
    });

    it(`${name}: the dump ending after it was ready, before the restore, leaves the original alone running, whole`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
      if (!able(t, netns)) return;
      ensureCriuRoot();
      const w = await startMemproc(`mf-dumped-${name}`, 32);
      try {
        let killed = 0;
        const onPhase = (phase: string) => {
          if (phase === 'dumped') killed = killAll(criuDumpOf(w.pid)); // the frozen original runs again
        };
        const e = await migrateFails({ pid: w.pid, workDir: w.dir, criuPort: port(), netns, onPhase });
        assert.equal(killed, 1, 'criu dump was killed');
        await assertOriginalRuns(w, e, 'ERR_CRIU', /criu dump ended \(exit 137\) before the migration was done/);
      } finally {
        w.cleanup();
      }
    });

    it(`${name}: criu restore dying mid-restore fails the migration at once, its tasks killed, the original alone running`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
      if (!able(t, netns)) return;
      ensureCriuRoot();
      const w = await startMemproc(`mf-restore-${name}`, 32);
      try {
        let note = 'criu restore not killed';
        const onPhase = (phase: string) => {
          if (phase !== (netns ? 'images on the target' : 'restoring')) return;
          // Once it has made the task (or after 5 s), `criu restore` alone is killed: what it made is left behind.
          const deadline = Date.now() + 5000;
          let restore = 0;
          const poll = () => {
            restore ||= findProcesses((a) => /(^|\/)criu$/.test(a[0]) && a[1] === 'restore' && a.some((x) => x.includes(w.dir)))[0] ?? 0;
            const made = restore ? childrenOf(restore) : [];
            if (restore && (made.length || Date.now() > deadline)) {
              process.kill(restore, 'SIGKILL');
              note = `killed criu restore ${restore} (it had made ${made.join(', ') || 'nothing'})`;
            } else if (Date.now() < deadline + 1000) setTimeout(poll, 1);
          };
          poll();
        };
        const e = await migrateFails({ pid: w.pid, workDir: w.dir, criuPort: port(), netns, onPhase });
        assert.match(note, /^killed/, note);
        await assertOriginalRuns(w, e, 'ERR_CRIU', /criu restore failed \(killed by SIGKILL\)/);
      } finally {
        w.cleanup();
      }
    });

    it(`${name}: a failure after the restore kills every restored task, seen dead, before the original runs again`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
      if (!able(t, netns)) return;
      ensureCriuRoot();
      const w = await startMemproc(`mf-restored-${name}`, 64);
      try {
        let restoredPid = 0;
        let killed = 0;
        const onPhase = (phase: string) => {
          if (phase !== 'restored') return;
          restoredPid = Number(readFileSync(restoredPidFile(w, netns), 'utf8'));
          // default: the dump dies and lets the original go while the restored task runs on
          // missing pages; netns: the source's daemon dies.
          killed = killAll(netns ? serveOf(w) : criuDumpOf(w.pid));
        };
        // A slow push (a page at a time): the restored task is far from having every page.
        const e = await migrateFails({ pid: w.pid, workDir: w.dir, criuPort: port(), netns, onPhase, pushBatch: 1, pushWindow: 1 });
        assert.ok(restoredPid > 0 && killed === 1, `restored ${restoredPid}, killed ${killed}`);
        if (netns) await assertOriginalRuns(w, e, 'ERR_CHILD', /postcopy serve .* ended \(killed by SIGKILL\)/, restoredPid);
        else await assertOriginalRuns(w, e, 'ERR_CRIU', /criu dump ended \(exit 137\)/, restoredPid);
      } finally {
        w.cleanup();
      }
    });

    it(`${name}: a migration that succeeds leaves the restored tree alone running: the original is gone`, { timeout: TEST_TIMEOUT_MS }, async (t) => {
      if (!able(t, netns)) return;
      ensureCriuRoot();
      const w = await startMemproc(`mf-ok-${name}`, 32);
      try {
        const r: MigrateResult = await withPipeSize(() => migrate({ pid: w.pid, workDir: w.dir, criuPort: port(), netns, timeoutMs: 60_000 }));
        assert.equal(r.running, 'restored');
        assert.ok(!running(w.pid), `the original ${w.pid} is gone`);
        assert.ok(r.restoredPid !== w.pid && running(r.restoredPid), `the restored task ${r.restoredPid} runs`);
        await assertOneCopy(w, r.restoredPid);
      } finally {
        w.cleanup();
      }
    });
  }

  it('stock: the dump ending before CRIU\'s lazy-pages could fetch a page leaves the original alone running; a success, the restored task alone', { timeout: TEST_TIMEOUT_MS }, async (t) => {
    if (!able(t, false)) return;
    ensureCriuRoot();
    const w = await startMemproc('mf-stock', 32);
    try {
      const onPhase = (phase: string) => phase === 'dumped' && killAll(criuDumpOf(w.pid));
      const e = await migrateFails({ pid: w.pid, workDir: w.dir, criuPort: port(), mode: 'stock', onPhase });
      assert.equal(e.code, 'ERR_CRIU', e.message);
      assert.equal(e.running, 'original', e.message);
      await assertOneCopy(w, w.pid);
      const r = await withPipeSize(() => migrate({ pid: w.pid, workDir: w.dir, criuPort: port(), mode: 'stock', timeoutMs: 60_000 }));
      assert.equal(r.running, 'restored');
      assert.ok(!running(w.pid), `the original ${w.pid} is gone`);
      await assertOneCopy(w, r.restoredPid);
    } finally {
      w.cleanup();
    }
  });
});
