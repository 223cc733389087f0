// `postcopy migrate`: post-copy migration of an unmodified process with stock CRIU.
// CRIU checkpoints and restores everything but the lazy memory; postcopy moves the memory:
//  1. `criu dump --lazy-pages` freezes the task and writes the small images (its own page server
//     listens on loopback only, for the release at the end);
//  2. our source serves the lazy VMAs straight from the frozen task (process_vm_readv);
//  3. `criu restore --lazy-pages` hands the task's userfaultfd to our lazy-pages daemon, which
//     resolves faults and pushes the rest;
//  4. once every page is in, the source sends PS_IOV_CLOSE to CRIU's page server and the dump ends
//     (CRIU kills the frozen task).
// mode 'stock' runs CRIU's own `criu lazy-pages` instead of 2-3, as the baseline.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PostcopyError } from '../errors.js';
import type { PresharedKey } from '../protocol/auth.js';
import { native } from '../native/index.js';
import { LiveProcessSource, privateAnonymousRanges } from '../source/live-process.js';
import { PageServer } from '../source/server.js';
import { checkPushSettings, FaultHandler } from '../target/handler.js';
import { TcpTransport } from '../transport/index.js';
import { anonymousBytes, warmUpMemory } from '../target/warm-up.js';
import { LineChild, nodeModuleArgv } from '../util/child.js';
import { VethPair } from '../util/netns.js';
import { processExitAt, treeMember, treePids } from '../util/proctree.js';
import type { HandlerReport } from '../target/handler.js';
import { silentLogger, type Logger } from '../util/log.js';
import { lazyLayout, readDump, type DumpImages } from './image.js';
import { LAZY_PAGES_SOCKET, listenForRestore, serveLazyPages, type LazyPagesReport } from './lazy-pages.js';
import { PS_IOV_CLOSE, writeIov } from './page-server.js';
import { criuRootDir, inCriuRoot } from './root.js';

export type MigrateMode = 'postcopy' | 'stock';

/**
 * 2 MiB requests, 4 in flight: the migrated task competes for the CPUs, so the push goes in large
 * steps (each request and reply costs both ends a fixed share of CPU).
 */
const DEFAULT_PUSH_BATCH = 512;
const DEFAULT_PUSH_WINDOW = 4;
const DEFAULT_READAHEAD = 0;

export interface MigrateOptions {
  /** the task to migrate (as this host sees it; the CRIU root shares our pid namespace) */
  pid: number;
  /** a directory inside the CRIU root for images and logs; created, and left for inspection */
  workDir: string;
  mode?: MigrateMode;
  /** port of CRIU's page server on loopback */
  criuPort: number;
  push?: boolean;
  /**
   * Run the two ends in two network namespaces joined by a veth pair: `postcopy serve` (pages and
   * images) in one, `postcopy lazy-pages` and `criu restore` in the other. The images travel over
   * their own connection; only the release of CRIU's dump uses this host's loopback.
   */
  netns?: boolean;
  pushBatch?: number;
  pushWindow?: number;
  /** extra pages fetched after each faulting page */
  readahead?: number;
  /**
   * A CRC32C with every page, checked by the target. Default: off in one network namespace (both
   * ends on this kernel, over loopback: nothing but the kernel's copies between them), on with
   * netns (the veth pair stands for a wire).
   */
  checksums?: boolean;
  /**
   * When each task's source, page server and handler are set up (in one network namespace):
   * 'before-freeze' (default), over the task's map as it is then, checked against the dump's and
   * done again for a task whose map changed; 'after-dump', from the dump, in the downtime.
   */
  prepare?: 'before-freeze' | 'after-dump';
  /**
   * The private anonymous ranges a task (by host pid) is taken to have before the freeze, for
   * 'before-freeze'; default: those /proc/PID/maps shows then. Checked against the dump either way.
   */
  layoutBeforeFreeze?: (hostPid: number) => { start: number; length: number }[];
  /**
   * Write and free as much memory as the tasks hold just before the freeze, so the restored tasks'
   * pages land in memory the host backs (target/warm-up.ts), in both modes. Default false: on this
   * VM it showed no gain that outlasted the noise, and it costs its writes (docs/benchmarks.md).
   */
  warmUp?: boolean;
  timeoutMs?: number;
  onPhase?: (phase: string, ms: number) => void;
  logger?: Logger;
}

export interface MigrateResult {
  mode: MigrateMode;
  restoredPid: number;
  /** dump start (the task is frozen at once) -> `criu restore -d` returns with the task running */
  downtime_ms: number;
  /** dump start -> every lazy page is on the target */
  all_present_ms: number;
  pages: number | null;
  faulted: number | null;
  pushed: number | null;
  bytes_sent: number | null;
  fault_p50_us: number | null;
  fault_p99_us: number | null;
  /** postcopy: tasks in the dump (a process tree), each served by a handler of its own */
  tasks?: number;
  /** postcopy in one namespace: tasks whose source and handler were ready before the freeze (the rest, after the dump) */
  prepared_before_freeze?: number;
  /** postcopy: children the tasks forked during post-copy, each served by a handler of its own */
  forked: number | null;
  /** bytes of memory written and freed just before the freeze (0: warm-up off) */
  warmed_bytes?: number;
  /** how long that took, before the freeze (the task still runs: in neither downtime nor all present) */
  warm_up_ms?: number;
}

/** Ends CRIU's lazy dump: PS_IOV_CLOSE on its page server, which answers with an int32 0. */
export function releaseCriuDump(port: number): void {
  const fd = native.tcpConnect('127.0.0.1', port);
  try {
    const msg = Buffer.alloc(24);
    writeIov(msg, 0, { cmd: PS_IOV_CLOSE, nrPages: 0, vaddr: 0, dstId: 0 });
    if (native.writeAll(fd, msg, 0, msg.length) !== msg.length) throw new PostcopyError('ERR_CRIU', 'cannot tell CRIU\'s page server to close');
    const status = Buffer.alloc(4);
    if (native.readFull(fd, status, 0, 4) !== 4 || status.readInt32LE(0) !== 0) throw new PostcopyError('ERR_CRIU', 'CRIU\'s page server did not acknowledge PS_IOV_CLOSE');
  } finally {
    native.close(fd);
  }
}

/** argv, run once a line `go` arrives on stdin. */
const waitForGo = (argv: string[]) => ['/bin/bash', '-c', 'read -r go && [ "$go" = go ] && exec "$@"', 'armed', ...argv];
const sh = (lines: string[]) => inCriuRoot(['/bin/bash', '-c', lines.join('\n')]);
const inTaskMounts = (pid: number, lines: string[]) => ['nsenter', '-t', String(pid), '-m', '-r', '/bin/bash', '-c', lines.join('\n')];

export async function migrate(o: MigrateOptions): Promise<MigrateResult> {
  const mode = o.mode ?? 'postcopy';
  // Bad settings are refused before the task freezes, not once it is down.
  checkPushSettings(o);
  const timeoutMs = o.timeoutMs ?? 120_000;
  const log = o.logger ?? silentLogger;
  const host = join(criuRootDir(), o.workDir);
  const phase = (name: string, t0: number) => o.onPhase?.(name, Math.round(performance.now() - t0));
  const children: LineChild[] = [];
  const start = (name: string, argv: string[]) => {
    const c = new LineChild(name, argv);
    children.push(c);
    return c;
  };
  const armed = (name: string, argv: string[]) => {
    const child = start(name, argv);
    return { child, go: () => child.send('go') };
  };
  const servers: PageServer[] = [];
  const prepared = new Map<number, PreparedTask>();
  let restoredPid = 0;
  // Each restored task is killed if its pages cannot be fetched: its host pid, once restored.
  const restoredHostPid = treeMember(() => restoredPid || undefined);
  // A key for this migration alone: only our daemon can read the frozen tasks' memory.
  const key = migrationKey();
  /** A source over a task (by its host pid), its page server, and a handler connected to it. */
  const prepareTask = async (vpid: number, hostPid: number, ranges: Range[], touched?: Uint8Array[]): Promise<PreparedTask> => {
    const source = await LiveProcessSource.attach(hostPid, { freeze: 'none', ranges, touched: touched ?? ranges.map((r) => new Uint8Array(r.length / PAGE)) });
    const server = new PageServer(source, { logger: log, grants: [key] });
    servers.push(server);
    const { endpoint } = await server.listen(new TcpTransport('127.0.0.1', 0));
    const handler = await FaultHandler.start({
      endpoint,
      mappings: source.regions.map((r) => ({ regionId: r.id, localStart: r.start, length: r.length })),
      pageSize: PAGE,
      push: o.push ?? true,
      readahead: o.readahead ?? DEFAULT_READAHEAD,
      pushBatch: o.pushBatch ?? DEFAULT_PUSH_BATCH,
      pushWindow: o.pushWindow ?? DEFAULT_PUSH_WINDOW,
      checksums: o.checksums ?? false,
      targetPid: () => restoredHostPid(vpid),
      key,
      logger: log,
    });
    return { ranges, source, handler };
  };
  let t0 = 0;
  let restoreSocket = -1;
  let warmed = { bytes: 0, ms: 0 };
  try {
    if (mode === 'postcopy' && !o.netns) {
      // Thread start-up costs CPU: done before the tasks freeze, not while `criu restore` runs. Two
      // connections per task (faults, push), a thread at each end of each; as many again wait as
      // spares for tasks prepared after the dump. (--netns runs both ends as processes of their own.)
      const tree = treePids(o.pid);
      const threads = 2 * tree.size;
      const spares = o.prepare === 'after-dump' ? threads : 2 * threads;
      await Promise.all([PageServer.prestartThreads(spares), FaultHandler.prestartThreads(spares)]);
      if (o.prepare !== 'after-dump') {
        // Each task's source, page server and handler, connected and authenticated before the
        // freeze, over the task's map as it is now; checked against the dump's (and done again if it
        // changed). The downtime then holds no thread start, no connection and no handshake.
        const layout = o.layoutBeforeFreeze ?? privateAnonymousRanges;
        for (const [vpid, hostPid] of tree) prepared.set(vpid, await prepareTask(vpid, hostPid, layout(hostPid)));
      }
    }
    // What runs during the downtime is set up before the task freezes: each command waits in its
    // shell (the CRIU root entered, its mounts made: ~20 ms) for go().
    const restoreArgv = ['criu', 'restore', '-D', `${o.workDir}/img`, '--lazy-pages', '-d', '--pidfile', `${o.workDir}/restored.pid`, '-o', 'restore.log'];
    const restore = mode === 'stock' || !o.netns ? armed('criu restore', inCriuRoot(waitForGo(restoreArgv))) : null;
    const lazy = mode === 'stock' ? armed('criu lazy-pages', sh([
      'read -r go; [ "$go" = go ] || exit 1',
      `cd ${o.workDir} && rm -f lst && mkfifo lst`,
      `criu lazy-pages --page-server --address 127.0.0.1 --port ${o.criuPort} -D img --status-fd 9 -o lazy.log 9>lst &`,
      'L=$!; head -c1 lst >/dev/null; echo ready; wait $L; echo "lazy exit $?"',
    ])) : null;
    // CRIU must dump from the task's own mount namespace (another one trips its mount code).
    const dump = armed('criu dump', inTaskMounts(o.pid, [
      `mkdir -p ${o.workDir}/img && cd ${o.workDir} && rm -f st && mkfifo st`,
      'read -r go; [ "$go" = go ] || exit 1',
      `criu dump -t ${o.pid} -D img --lazy-pages --address 127.0.0.1 --port ${o.criuPort} --status-fd 9 -o dump.log 9>st &`,
      'D=$!; head -c1 st >/dev/null; echo ready; wait $D; echo "dump exit $?"',
    ]));
    // Our lazy-pages socket listens before the freeze: `criu restore` starts as soon as the dump
    // is done, and the images are read here while it starts.
    if (mode === 'postcopy' && !o.netns) {
      mkdirSync(join(host, 'img'), { recursive: true });
      rmSync(join(host, 'img', LAZY_PAGES_SOCKET), { force: true });
      restoreSocket = listenForRestore(join(host, 'img'));
    }
    // Last before the freeze: memory freed any earlier may be handed back to the host meanwhile.
    if (o.warmUp) {
      const tasks = [...treePids(o.pid).values()].reduce((n, hostPid) => n + anonymousBytes(hostPid), 0);
      warmed = warmUpMemory(tasks);
      log.info({ bytes: warmed.bytes, ms: Math.round(warmed.ms) }, 'target memory warmed');
    }
    t0 = performance.now();
    dump.go();
    await dump.child.next((l) => l === 'ready', timeoutMs).catch((err: Error) => {
      throw new PostcopyError('ERR_CRIU', `criu dump failed: ${err.message}; ${readLog(host, 'img/dump.log')}`);
    });
    phase('dumped', t0);
    let downtime = 0;
    const restored = async () => {
      await restore!.child.rest(timeoutMs).catch((err: Error) => {
        throw new PostcopyError('ERR_CRIU', `criu restore failed: ${err.message}; ${readLog(host, 'img/restore.log')}`);
      });
      downtime = performance.now() - t0;
      restoredPid = Number(readFileSync(join(host, 'restored.pid'), 'utf8').trim());
      phase('restored', t0);
    };

    if (mode === 'stock') {
      lazy!.go();
      await lazy!.child.next((l) => l === 'ready', timeoutMs);
      restore!.go();
      const exitAt = processExitAt(restore!.child.child.pid!, timeoutMs);
      await restored();
      downtime = exitedSince(await exitAt, t0, downtime);
      const tail = await lazy!.child.rest(timeoutMs);
      const allPresent = performance.now() - t0;
      if (!tail.includes('lazy exit 0')) throw new PostcopyError('ERR_CRIU', `criu lazy-pages failed: ${readLog(host, 'img/lazy.log')}`);
      phase('all pages present', t0);
      await dumpEnded(dump.child, host, timeoutMs);
      const transferred = /UFFD transferred pages: \((\d+)\/(\d+)\)/.exec(readText(join(host, 'img/lazy.log')));
      return { mode, restoredPid, downtime_ms: round(downtime), all_present_ms: round(allPresent), pages: transferred ? Number(transferred[2]) : null, faulted: null, pushed: null, bytes_sent: transferred ? Number(transferred[1]) * 4096 : null, fault_p50_us: null, fault_p99_us: null, forked: null, ...warmedReport(warmed) };
    }

    if (o.netns) return { ...(await migrateAcrossNamespaces(o, host, dump.child, start, t0, phase, timeoutMs)), ...warmedReport(warmed) };

    // postcopy: our source over the frozen tasks, our daemon in the place of `criu lazy-pages`.
    restore!.go();
    phase('restoring', t0);
    const images = readDump(join(host, 'img'));
    const frozen = frozenTasks(images, o.pid);
    // Each task's prepared source and handler are checked against the dump once the restore has
    // been told to go (the restore reads its images meanwhile), before its uffd is attached.
    let again = 0;
    const checkPrepared = async () => {
      for (const t of images.tasks) {
        const { regions, lazy } = lazyLayout(images.mms.get(t.pid)!, images.pagemaps.get(t.pid)!);
        const ready = prepared.get(t.pid);
        if (ready && sameRanges(ready.ranges, regions)) {
          ready.source.setTouched(lazy);
          continue;
        }
        // Not prepared, or its map changed before the freeze: prepared now, in the downtime.
        await ready?.handler.stop();
        prepared.set(t.pid, await prepareTask(t.pid, frozen.get(t.pid)!, regions, lazy));
        again++;
      }
      for (const [vpid, p] of prepared) if (!images.tasks.some((t) => t.pid === vpid)) await p.handler.stop();
      phase(again ? `serving (${again} of ${images.tasks.length} tasks prepared after the dump)` : 'serving', t0);
    };
    let checked: Promise<void> | null = null;
    let lazyResult: LazyPagesReport;
    const lazyDone = serveLazyPages({
      imagesDir: join(host, 'img'),
      dump: images,
      source: { kind: 'postcopy', endpoint: () => { throw new PostcopyError('ERR_CRIU', 'every task has its handler'); } },
      handlers: (vpid) => (checked ??= checkPrepared()).then(() => prepared.get(vpid)!.handler),
      key,
      timeoutMs,
      logger: log,
      listenFd: restoreSocket,
    });
    restoreSocket = -1; // serveLazyPages closes it
    lazyDone.catch(() => {}); // observed below
    // The restore returns (task running) long before every page is in.
    await Promise.all([lazyDone.then((r) => (lazyResult = r)), restored()]);
    const allPresent = presentSince(lazyResult!, t0);
    phase('all pages present', t0);
    releaseCriuDump(o.criuPort);
    await dumpEnded(dump.child, host, timeoutMs);
    phase('released', t0);
    const result = postcopyResult(restoredPid, exitedSince(lazyResult!.restoreExitAt, t0, downtime), allPresent, servers.reduce((n, x) => n + x.stats.bytesSent, 0), lazyResult!);
    return { ...result, prepared_before_freeze: images.tasks.length - again, ...warmedReport(warmed) };
  } catch (err) {
    if (restoredPid) process.kill(restoredPid, 'SIGKILL');
    throw err;
  } finally {
    if (restoreSocket >= 0) native.close(restoreSocket);
    for (const c of children) c.kill();
    for (const p of prepared.values()) await p.handler.stop();
    for (const s of servers) await s.close();
  }
}

interface Range {
  start: number;
  length: number;
}

interface PreparedTask {
  /** the ranges its source serves and its handler maps */
  ranges: Range[];
  source: LiveProcessSource;
  handler: FaultHandler;
}

const PAGE = 4096;

/** Whether two lists of ranges are the same, in the same order. */
export function sameRanges(a: readonly Range[], b: readonly Range[]): boolean {
  return a.length === b.length && a.every((r, i) => r.start === b[i].start && r.length === b[i].length);
}

const round = (x: number) => Math.round(x * 10) / 10;

const warmedReport = (w: { bytes: number; ms: number }) => ({ warmed_bytes: w.bytes, warm_up_ms: round(w.ms) });

/**
 * The host pid of each task of the dump: the dump names them by their pids in the tree's own
 * namespace, the sources read them by host pid.
 */
function frozenTasks(images: DumpImages, root: number): Map<number, number> {
  const frozen = treePids(root);
  for (const t of images.tasks)
    if (!frozen.has(t.pid)) throw new PostcopyError('ERR_CRIU', `task ${t.pid} of the dump is not in the tree of process ${root}`);
  return frozen;
}

/**
 * Downtime ends when `criu restore -d` exits, the restored tasks running: ms from t0 until then, as
 * a pidfd saw it (exitAt, see processExitAt), else as this process's event loop got to it (observed,
 * later: by as much as 4-8 ms while the push keeps both CPUs busy). Both modes are timed alike.
 */
function exitedSince(exitAt: number | null, t0: number, observed: number): number {
  return exitAt === null ? observed : Math.min(observed, exitAt - performance.timeOrigin - t0);
}

/**
 * ms from t0 (this thread's performance.now()) until the last page of every task and forked child
 * was in, as the handlers timed it; the time now if a report has no time (it had nothing to fetch).
 */
function presentSince(lazy: LazyPagesReport, t0: number): number {
  const times = (lazy.tasks ?? []).flatMap((t) => [t.report, ...t.forked].map((r) => r?.completedAt));
  const at = times.every((x) => typeof x === 'number') && times.length ? Math.max(...(times as number[])) : performance.timeOrigin + performance.now();
  return at - performance.timeOrigin - t0;
}

const migrationKey = (): PresharedKey => ({ keyId: `migration-${randomBytes(4).toString('hex')}`, key: randomBytes(32) });

/** Waits for `criu dump` to end, which it does once released; it must end well. */
async function dumpEnded(dump: LineChild, host: string, timeoutMs: number): Promise<void> {
  const tail = await dump.rest(timeoutMs);
  if (!tail.includes('dump exit 0')) throw new PostcopyError('ERR_CRIU', `criu dump ended badly: ${readLog(host, 'img/dump.log')}`);
}

/** Pages summed over the tasks; fault latency is the root task's. */
function postcopyResult(restoredPid: number, downtime: number, allPresent: number, bytesSent: number, lazy: LazyPagesReport): MigrateResult {
  const r = lazy.tasks[0].report;
  const sum = (f: (x: HandlerReport) => number) => lazy.tasks.reduce((n, t) => n + f(t.report), 0);
  return {
    mode: 'postcopy',
    restoredPid,
    downtime_ms: round(downtime),
    all_present_ms: round(allPresent),
    pages: sum((x) => x.pages),
    faulted: sum((x) => x.faulted),
    pushed: sum((x) => x.pushed),
    bytes_sent: bytesSent,
    fault_p50_us: r.latency ? round(r.latency.p50Ns / 1000) : null,
    fault_p99_us: r.latency ? round(r.latency.p99Ns / 1000) : null,
    tasks: lazy.tasks.length,
    forked: lazy.tasks.reduce((n, t) => n + t.forked.length, 0),
  };
}

/** The postcopy mode with each end in a network namespace of its own, as separate processes. */
async function migrateAcrossNamespaces(
  o: MigrateOptions,
  host: string,
  dump: LineChild,
  start: (name: string, argv: string[]) => LineChild,
  t0: number,
  phase: (name: string, t0: number) => void,
  timeoutMs: number,
): Promise<MigrateResult> {
  const images = readDump(join(host, 'img'));
  const frozen = frozenTasks(images, o.pid);
  const veth = VethPair.create(`pcm${process.pid % 100000}`, '10.233.0');
  try {
    const cli = nodeModuleArgv(import.meta.url, '../cli/main');
    const key = migrationKey();
    const keyFile = join(host, 'migration.key'); // beside the images, not among them: they travel
    writeFileSync(keyFile, Buffer.from(key.key).toString('hex'), { mode: 0o600 });
    const keyArgs = ['--key-file', keyFile, '--key-id', key.keyId];
    // A `postcopy serve` per task, started together, each over its task's part of the dump; the
    // first one also serves the images. (CRIU's page server listens on this namespace's loopback,
    // out of their reach: the dump is ended from here.)
    const serves = images.tasks.map((t, i) =>
      start('postcopy serve', [
        ...veth.exec('a'), ...cli, 'serve', '--pid', String(frozen.get(t.pid)), '--dump', join(host, 'img'),
        '--listen', `tcp://${veth.a.addr}:0`, ...(i === 0 ? ['--images', join(host, 'img'), '--images-listen', `tcp://${veth.a.addr}:0`] : []), ...keyArgs, '--json',
      ]),
    );
    const sources: string[] = [];
    for (const [i, serve] of serves.entries()) {
      const pages = (JSON.parse(await serve.next((l) => l.includes('"listening"'), timeoutMs)) as { endpoint: string }).endpoint;
      sources.push(serves.length === 1 ? pages : `${images.tasks[i].pid}=${pages}`);
    }
    const imagesAt = (JSON.parse(await serves[0].next((l) => l.includes('"images-listening"'), timeoutMs)) as { endpoint: string }).endpoint;
    phase('serving', t0);
    const target = join(o.workDir, 'target');
    const lazy = start('postcopy lazy-pages', [
      ...veth.exec('b'), ...cli, 'lazy-pages', '--images', join(host, 'target', 'img'), '--images-from', imagesAt,
      '--source', 'postcopy', '--page-server', ...sources, '--pidfile', join(host, 'target', 'restored.pid'),
      '--push-batch', String(o.pushBatch ?? DEFAULT_PUSH_BATCH), '--push-window', String(o.pushWindow ?? DEFAULT_PUSH_WINDOW), ...(o.checksums === false ? ['--no-checksums'] : []), ...keyArgs, '--json',
    ]);
    await lazy.next((l) => l.includes('"event":"images"'), timeoutMs);
    phase('images on the target', t0);
    await lazy.next((l) => l.includes('"event":"listening"'), timeoutMs);
    const restore = start('criu restore', [...veth.exec('b'), ...inCriuRoot(['criu', 'restore', '-D', `${target}/img`, '--lazy-pages', '-d', '--pidfile', `${target}/restored.pid`, '-o', 'restore.log'])]);
    await restore.rest(timeoutMs).catch((err: Error) => {
      throw new PostcopyError('ERR_CRIU', `criu restore failed: ${err.message}; ${readLog(join(host, 'target'), 'img/restore.log')}`);
    });
    const downtime = performance.now() - t0;
    const restoredPid = Number(readFileSync(join(host, 'target', 'restored.pid'), 'utf8').trim());
    phase('restored', t0);
    const done = JSON.parse((await lazy.rest(timeoutMs)).find((l) => l.includes('"event":"done"')) ?? '{}') as LazyPagesReport;
    const allPresent = presentSince(done, t0);
    phase('all pages present', t0);
    let bytesSent = 0;
    for (const serve of serves) bytesSent += (JSON.parse(await serve.next((l) => l.includes('"event":"done"'), timeoutMs)) as { stats: { bytesSent: number } }).stats.bytesSent;
    releaseCriuDump(o.criuPort);
    await dumpEnded(dump, host, timeoutMs);
    phase('released', t0);
    if (!done.tasks?.length || !done.tasks.every((t) => t.report?.complete)) throw new PostcopyError('ERR_CRIU', `the target did not get every page: ${JSON.stringify(done)}`);
    return postcopyResult(restoredPid, exitedSince(done.restoreExitAt ?? null, t0, downtime), allPresent, bytesSent, done);
  } finally {
    veth.destroy();
    rmSync(join(host, 'migration.key'), { force: true });
  }
}

function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function readLog(hostDir: string, file: string, limit = 600): string {
  try {
    const text = readFileSync(join(hostDir, file), 'utf8');
    const errors = text.split('\n').filter((l) => /Error|error/.test(l));
    return (errors.length ? errors.join(' | ') : text).slice(-limit);
  } catch {
    return `(no ${file})`;
  }
}
