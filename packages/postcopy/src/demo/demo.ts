// `postcopy demo`: a local post-copy migration of a live workload, verified page by page.
import { randomBytes } from 'node:crypto';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { PostcopyError } from '../errors.js';
import { native } from '../native/index.js';
import { LiveProcessSource } from '../source/live-process.js';
import { PageServer } from '../source/server.js';
import { acknowledgeUffd, receiveUffd } from '../target/handoff.js';
import { FaultHandler, type Progress } from '../target/handler.js';
import { TcpTransport, UnixTransport } from '../transport/index.js';
import { hashPages } from '../util/pagehash.js';
import { requireDemoCapabilities } from '../util/preflight.js';

export interface DemoOptions {
  mib?: number;
  transport?: 'tcp' | 'unix';
  readahead?: number;
  /** background push: pages per request and requests in flight */
  pushBatch?: number;
  pushWindow?: number;
  /** seconds the workload computes before it is frozen */
  warmup?: number;
  onProgress?: (p: Progress) => void;
}

export interface DemoResult {
  pages: number;
  faulted: number;
  pushed: number;
  zero: number;
  mismatches: number;
  self_check_failures: number;
  steps_on_target: number;
  downtime_ms: number;
  total_ms: number;
  fault_p50_us: number;
  fault_p99_us: number;
  faults: number;
  bytes_sent: number;
  transport: string;
}

const here = import.meta.url;
const fromSource = here.endsWith('.ts');

function spawnWorkload(args: string[], extraFd?: number): ChildProcess {
  const script = new URL(fromSource ? './workload.ts' : './workload.js', here).pathname;
  const node = fromSource ? ['--import', 'tsx', script] : [script];
  const stdio: (string | number)[] = ['ignore', 'pipe', 'inherit'];
  if (extraFd !== undefined) stdio.push(extraFd);
  return spawn(process.execPath, [...node, ...args], { stdio: stdio as never });
}

/** Yields the JSON lines a workload prints, failing if it exits first. */
function events(child: ChildProcess) {
  const lines = createInterface({ input: child.stdout! });
  const queue: Record<string, unknown>[] = [];
  let waiter: (() => void) | null = null;
  let exited: string | null = null;
  lines.on('line', (l) => {
    try {
      queue.push(JSON.parse(l));
    } catch {
      return;
    }
    waiter?.();
  });
  child.on('exit', (code, signal) => {
    exited = `workload ${child.pid} exited (${signal ?? code})`;
    waiter?.();
  });
  return async (event: string, timeoutMs: number): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = queue.findIndex((e) => e.event === event);
      if (i >= 0) return queue.splice(i, 1)[0];
      if (exited) throw new PostcopyError('ERR_SOURCE_GONE', `${exited} before "${event}"`);
      if (Date.now() > deadline) throw new PostcopyError('ERR_TIMEOUT', `no "${event}" from workload ${child.pid} in ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        waiter = resolve;
        setTimeout(resolve, 50);
      });
      waiter = null;
    }
  };
}

export async function runDemo(options: DemoOptions = {}): Promise<DemoResult> {
  requireDemoCapabilities();
  const mib = options.mib ?? 256;
  const dir = mkdtempSync(join(tmpdir(), 'postcopy-demo-'));
  const children: ChildProcess[] = [];
  let server: PageServer | null = null;
  let handler: FaultHandler | null = null;
  const sockets: number[] = [];
  try {
    // 1. The workload runs on the "source".
    const src = spawnWorkload(['source', '--mib', String(mib)]);
    children.push(src);
    const srcEvents = events(src);
    const ready = await srcEvents('ready', 60_000);
    await sleep((options.warmup ?? 1) * 1000);

    // 2. Freeze it and serve its memory straight from the frozen process.
    const tFreeze = performance.now();
    src.kill('SIGUSR2');
    await srcEvents('frozen', 10_000);
    const source = await LiveProcessSource.attach(src.pid!, { ranges: [{ start: ready.addr as number, length: ready.length as number }] });
    // As a real migration would: a key for this migration alone, proven by both ends.
    const key = { keyId: 'demo', key: randomBytes(32) };
    server = new PageServer(source, { grants: [key] });
    const transport = options.transport === 'unix' ? new UnixTransport(join(dir, 'source.sock')) : new TcpTransport('127.0.0.1', 0);
    const listener = await server.listen(transport);

    // 3. A new instance on the "target" maps the range and hands its userfaultfd over.
    const [ours, theirs] = native.socketpair();
    sockets.push(ours);
    const hashFile = join(dir, 'hashes.bin');
    const dst = spawnWorkload(['target', '--addr', String(ready.addr), '--length', String(ready.length), '--hashes', hashFile, '--fd', '3'], theirs);
    native.close(theirs);
    children.push(dst);
    const dstEvents = events(dst);
    const handoff = await receiveUffd(ours, 30_000);
    handler = await FaultHandler.start({
      endpoint: listener.endpoint,
      uffd: handoff.uffd,
      mappings: handoff.mappings,
      readahead: options.readahead ?? 0,
      pushBatch: options.pushBatch,
      pushWindow: options.pushWindow,
      targetPid: dst.pid,
      key,
    });
    acknowledgeUffd(ours);

    // 4. It runs again as soon as its first pages arrive; the rest follows in the background.
    await dstEvents('running', 30_000);
    const downtimeMs = performance.now() - tFreeze;
    const ticker = options.onProgress ? setInterval(() => options.onProgress!(handler!.progress), 100) : null;
    let report;
    try {
      report = await handler.done();
    } finally {
      if (ticker) clearInterval(ticker);
    }
    const totalMs = performance.now() - tFreeze;
    options.onProgress?.(report);

    // 5. Verify every page the target received against the frozen source.
    dst.kill('SIGUSR2');
    const finished = await dstEvents('finished', 60_000);
    const received = new Uint32Array(readFileSync(hashFile).buffer.slice(0));
    const region = source.regions[0];
    const pages = region.length / source.pageSize;
    const expected = new Uint32Array(pages);
    const chunkPages = 256;
    const buf = Buffer.alloc(chunkPages * source.pageSize);
    for (let p = 0; p < pages; p += chunkPages) {
      const n = Math.min(chunkPages, pages - p);
      source.read(region, p, n, buf, 0);
      hashPages(buf.subarray(0, n * source.pageSize), source.pageSize, expected, p);
    }
    let mismatches = received.length === pages ? 0 : pages;
    for (let p = 0; p < Math.min(pages, received.length); p++) if (received[p] !== expected[p]) mismatches++;

    // 6. The target has everything: release the source.
    source.release();
    const lat = report.latency;
    return {
      pages: report.pages,
      faulted: report.faulted,
      pushed: report.pushed,
      zero: report.zero,
      mismatches,
      self_check_failures: finished.failures as number,
      steps_on_target: finished.steps as number,
      downtime_ms: round(downtimeMs),
      total_ms: round(totalMs),
      fault_p50_us: round((lat?.p50Ns ?? 0) / 1000),
      fault_p99_us: round((lat?.p99Ns ?? 0) / 1000),
      faults: report.faults,
      bytes_sent: server.stats.bytesSent,
      transport: transport.kind,
    };
  } finally {
    if (handler) await handler.stop();
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    for (const s of sockets) native.close(s);
    await server?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
