// `postcopy lazy-pages` as a drop-in for `criu lazy-pages`: CRIU's own arguments, process trees and
// forks over CRIU's one page-server connection, the local-images mode, and a daemon that ends when
// its tasks do. Each restore is stock `criu restore --lazy-pages` in the CRIU root.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LineChild } from '../src/util/child.js';
import { ensureCriuRoot } from '../src/criu/root.js';
import { caps, need } from './helpers/caps.js';
import { assertMemprocRuns, dumpInRoot, SCRIPT } from './helpers/criu-dump.js';
import { CLI } from './helpers/util.js';

/** `postcopy lazy-pages ARGS --status-fd 3`, as zdtm starts `criu lazy-pages`; resolves once it is ready. */
async function startLazyPages(args: string[]): Promise<{ child: ChildProcess; exit: Promise<{ code: number | null; stderr: string; stdout: string }> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'lazy-pages', ...args, '--status-fd', '3'], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  child.stderr!.on('data', (d) => (stderr += d));
  child.stdout!.on('data', (d) => (stdout += d));
  const exit = new Promise<{ code: number | null; stderr: string; stdout: string }>((resolve) => child.once('exit', (code) => resolve({ code, stderr, stdout })));
  const status = child.stdio[3] as NodeJS.ReadableStream;
  const ready = await Promise.race([
    new Promise<Buffer | null>((resolve) => status.once('data', (d: Buffer) => resolve(d))),
    exit.then(() => null),
    new Promise<null>((resolve) => setTimeout(() => resolve(null), 60_000).unref()),
  ]);
  if (!ready || ready[0] !== 0) {
    child.kill('SIGKILL');
    throw new Error(`lazy-pages did not write its zero status byte: ${stderr}`);
  }
  return { child, exit };
}

/** `criu restore --lazy-pages` of DIR/img, detached (the tasks run on); resolves when it has exited. */
function restoreLazily(inRoot: string, extra: string[] = []): LineChild {
  return new LineChild('criu restore', ['bash', SCRIPT, 'exec', 'criu', 'restore', '-D', `${inRoot}/img`, '--lazy-pages', '-d', '-o', 'restore.log', ...extra]);
}

/** Whether a process is gone within ms (a zombie counts as gone). */
async function goneWithin(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

const port = () => 28000 + (process.pid % 500) * 2;

describe('postcopy lazy-pages as criu lazy-pages', () => {
  it("serves a process tree over CRIU's one page-server connection, given CRIU's arguments (-D --page-server --address --port -o -v4 --status-fd), no pid file", async (t) => {
    if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return;
    ensureCriuRoot();
    const p = port();
    // An init with two memory-heavy children: three tasks in the dump, each with lazy memory.
    const d = await dumpInRoot({ tag: `lptree${process.pid}`, workload: 'memproc 24 OUT & memproc 24 OUT.2 & wait', lazyPort: p });
    let restore: LineChild | null = null;
    let lazy: ChildProcess | null = null;
    try {
      const started = await startLazyPages(['-D', join(d.onHost, 'img'), '--page-server', '--address', '127.0.0.1', '--port', String(p), '-o', 'lazy-pages.log', '--verbosity=4', '--json']);
      lazy = started.child;
      restore = restoreLazily(d.inRoot);
      await restore.rest(60_000);
      const { code, stderr, stdout } = await started.exit;
      assert.equal(code, 0, stderr);
      const done = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { event: string; tasks?: { report: { complete: boolean } }[] }).find((e) => e.event === 'done');
      assert.equal(done?.tasks?.length, 3, `the init and its two children were served: ${stdout}`);
      assert.ok(done!.tasks!.every((x) => x.report.complete), stdout);
      // Nothing here unmaps memory: a page counted as dropped would be a page never installed,
      // read as zero once the uffd is let go (the push once ran before the restorer registered
      // the task's VMAs, and took their ENOENT for "unmapped").
      assert.deepEqual(done!.tasks!.map((x) => (x.report as { dropped?: number }).dropped), [0, 0, 0], stdout);
      const log = readFileSync(join(d.onHost, 'img', 'lazy-pages.log'), 'utf8');
      assert.match(log, /every task is done/, 'the log went to -o, in the work directory');
      const tail = await d.dumpSide.rest(30_000);
      assert.ok(tail.includes('dump exit 0'), `criu dump ended once every task had its pages: ${tail.join(' | ')}`);
      await assertMemprocRuns(join(d.onHost, 'out.txt'), d.before);
      await assertMemprocRuns(join(d.onHost, 'out.txt.2'), 0);
    } finally {
      lazy?.kill('SIGKILL');
      d.cleanup([restore]);
    }
  });

  it("serves the children a task forks during post-copy from CRIU's page server, with --no-push: they read what their parent had, and the daemon ends when the task does", async (t) => {
    if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return;
    ensureCriuRoot();
    const p = port() + 1;
    // memproc FORK=1 never reads its heap itself: a child forked each round sums every word.
    const d = await dumpInRoot({ tag: `lpfork${process.pid}`, workload: 'memproc 16 OUT 1', lazyPort: p });
    let restore: LineChild | null = null;
    let lazy: ChildProcess | null = null;
    try {
      const started = await startLazyPages(['--images-dir', join(d.onHost, 'img'), '--page-server', '--port', String(p), '--no-push', '-o', 'lazy-pages.log', '-v4']);
      lazy = started.child;
      restore = restoreLazily(d.inRoot, ['--pidfile', `${d.inRoot}/restored.pid`]);
      await restore.rest(60_000);
      writeFileSync(join(d.onHost, 'out.txt.fork'), '');
      await assertMemprocRuns(join(d.onHost, 'out.txt'), d.before, 4);
      const children = readFileSync(join(d.onHost, 'out.txt'), 'utf8').split('\n').filter((l) => l.startsWith('child ok '));
      assert.ok(children.length >= 2, `forked children checked the heap: ${children.length}`);
      assert.equal(await goneWithin(lazy, 500), false, 'it serves while the task runs (pages are still missing)');
      spawnSync('kill', ['-9', readFileSync(join(d.onHost, 'restored.pid'), 'utf8').trim()]);
      assert.equal(await goneWithin(lazy, 15_000), true, 'the daemon ended by itself once its task had exited');
      const { code, stderr } = await started.exit;
      assert.equal(code, 0, stderr);
    } finally {
      lazy?.kill('SIGKILL');
      d.cleanup([restore]);
    }
  });

  it('serves the lazy pages from the images directory without --page-server, as criu lazy-pages does', async (t) => {
    if (!need(t, caps.root && caps.uffd.ok, caps.uffd.detail)) return;
    ensureCriuRoot();
    const d = await dumpInRoot({ tag: `lplocal${process.pid}`, workload: 'memproc 24 OUT' });
    let restore: LineChild | null = null;
    let lazy: ChildProcess | null = null;
    try {
      const tail = await d.dumpSide.rest(60_000);
      assert.ok(tail.includes('dump exit 0'), `a plain criu dump: ${tail.join(' | ')}`);
      assert.ok(readdirSync(join(d.onHost, 'img')).some((f) => /^pages-\d+\.img$/.test(f)), 'the pages are in the images');
      const started = await startLazyPages(['-D', join(d.onHost, 'img'), '-W', join(d.onHost, 'img'), '--log-file', 'lazy-pages.log', '--json']);
      lazy = started.child;
      restore = restoreLazily(d.inRoot, ['--pidfile', `${d.inRoot}/restored.pid`]);
      await restore.rest(60_000);
      const { code, stderr } = await started.exit;
      assert.equal(code, 0, stderr);
      assert.ok(existsSync(join(d.onHost, 'img', 'lazy-pages.log')));
      await assertMemprocRuns(join(d.onHost, 'out.txt'), d.before);
    } finally {
      lazy?.kill('SIGKILL');
      d.cleanup([restore]);
    }
  });
});
