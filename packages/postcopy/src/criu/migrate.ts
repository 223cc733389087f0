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
// Exactly one copy runs at the end, always: on success the restored tree (the original is seen
// gone); on a failure, every restored task is killed and seen dead before the dump's end lets the
// frozen original run again, unless the original was released already (see Run.settle).
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, normalize } from 'node:path';
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
import { childrenOf, processExitAt, treeMember, treePids } from '../util/proctree.js';
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
  /** which copy runs now: the restored tree alone (the original is gone); a failure says it in MigrateError.running */
  running: 'restored';
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
  /** postcopy: tasks and fork children killed by a signal while their pages were still coming (pid: as this host sees it) */
  died_of_signal?: { pid: number | null; signal: number }[];
  /** bytes of memory written and freed just before the freeze (0: warm-up off) */
  warmed_bytes?: number;
  /** how long that took, before the freeze (the task still runs: in neither downtime nor all present) */
  warm_up_ms?: number;
}

/**
 * Ends CRIU's lazy dump: PS_IOV_CLOSE on its page server, which answers with an int32 0. onSent is
 * called just before the request goes out: from then on CRIU may kill the frozen tasks.
 */
export function releaseCriuDump(port: number, onSent?: () => void): void {
  const fd = native.tcpConnect('127.0.0.1', port);
  if (fd < 0) throw new PostcopyError('ERR_CRIU', `cannot reach CRIU's page server on 127.0.0.1:${port} (errno ${-fd})`);
  try {
    const msg = Buffer.alloc(24);
    writeIov(msg, 0, { cmd: PS_IOV_CLOSE, nrPages: 0, vaddr: 0, dstId: 0 });
    onSent?.();
    if (native.writeAll(fd, msg, 0, msg.length) !== msg.length) throw new PostcopyError('ERR_CRIU', 'cannot tell CRIU\'s page server to close');
    const status = Buffer.alloc(4);
    if (native.readFull(fd, status, 0, 4) !== 4 || status.readInt32LE(0) !== 0) throw new PostcopyError('ERR_CRIU', 'CRIU\'s page server did not acknowledge PS_IOV_CLOSE');
  } finally {
    native.close(fd);
  }
}

/**
 * Which copy of the task runs once migrate() is over: the original (the migration failed before the
 * original was let go), the restored tree (it had every page), or none of them.
 */
export type Running = 'original' | 'restored' | 'none';

/** What migrate() throws: a PostcopyError (the first failure's code) that says which copy runs. */
export type MigrateError = PostcopyError & { running: Running };

/** argv, run once a line `go` arrives on stdin; it says `armed` when it waits (in the CRIU root, its mounts made). */
const waitForGo = (argv: string[]) => ['/bin/bash', '-c', 'echo armed; read -r go && [ "$go" = go ] && exec "$@"', 'armed', ...argv];
const sh = (lines: string[]) => inCriuRoot(['/bin/bash', '-c', lines.join('\n')]);
const inTaskMounts = (pid: number, lines: string[]) => ['nsenter', '-t', String(pid), '-m', '-r', '/bin/bash', '-c', lines.join('\n')];
/**
 * Waits for CRIU's status byte on fifo $1 while process $2 runs: `ready` only once a byte came (CRIU
 * writes none when it fails: head then returns at EOF), then `NAME exit N` when it ends.
 */
const readyOnStatus = (fifo: string, pidVar: string, name: string) =>
  `[ "$(head -c1 ${fifo} | wc -c)" = 1 ] && echo ready; wait $${pidVar}; echo "${name} exit $?"`;

/** The longest path a Unix socket takes (sun_path, less its NUL). */
const MAX_SOCKET_PATH = 107;
const KILL_WAIT_MS = 10_000;
const MAX_TIMEOUT_MS = 2_147_483_647;

/**
 * Migrates task o.pid (and its tree). Every option is checked before anything freezes. Resolves
 * once the restored tree alone runs (`running: 'restored'`); throws a MigrateError: the first
 * failure's PostcopyError, with `running` saying which copy runs then ('original', 'restored' or
 * 'none'), every other one killed and seen dead.
 */
export async function migrate(o: MigrateOptions): Promise<MigrateResult> {
  const mode = o.mode ?? 'postcopy';
  const timeoutMs = o.timeoutMs ?? 120_000;
  const log = o.logger ?? silentLogger;
  // Bad settings are refused before the task freezes, not once it is down.
  let originalFd: number;
  try {
    originalFd = await checkOptions(o, mode, timeoutMs);
  } catch (err) {
    // Nothing was frozen: the task runs on, if it is there at all.
    throw failure(err, Number.isInteger(o.pid) && o.pid > 0 && alive(o.pid) ? 'original' : 'none');
  }
  const host = join(criuRootDir(), o.workDir);
  const run = new Run(o.pid, originalFd, join(host, o.netns && mode === 'postcopy' ? 'target' : '', 'restored.pid'), log);
  const phase = (name: string, t0: number) => {
    if (!run.failed && !run.over) o.onPhase?.(name, Math.round(performance.now() - t0));
  };
  const children: LineChild[] = [];
  const start = (name: string, argv: string[]) => {
    run.guard();
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
  // Each restored task is killed if its pages cannot be fetched: its host pid, once restored.
  const restoredHostPid = treeMember(() => run.restoredPid || undefined);
  // A key for this migration alone: only our daemon can read the frozen tasks' memory.
  const key = migrationKey();
  /** A source over a task (by its host pid), its page server, and a handler connected to it. */
  const prepareTask = async (vpid: number, hostPid: number, ranges: Range[], touched?: Uint8Array[]): Promise<PreparedTask> => {
    run.guard();
    const source = await LiveProcessSource.attach(hostPid, { freeze: 'none', ranges, touched: touched ?? ranges.map((r) => new Uint8Array(r.length / PAGE)) });
    const server = new PageServer(source, { logger: log, grants: [key] });
    servers.push(server);
    run.guard();
    const { endpoint } = await server.listen(new TcpTransport('127.0.0.1', 0));
    run.guard();
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
    if (run.failed || run.over) {
      await handler.stop();
      run.guard();
    }
    return { ranges, source, handler };
  };
  let restoreSocket = -1;
  let veth: VethPair | null = null;
  let warmed = { bytes: 0, ms: 0 };

  const flow = async (): Promise<Omit<MigrateResult, 'running'>> => {
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
    // The two namespaces exist before the freeze (making them can fail).
    if (mode === 'postcopy' && o.netns) veth = VethPair.create(`pcm${process.pid % 100000}`, '10.233.0');
    // What runs during the downtime is set up before the task freezes: each command waits in its
    // shell (the CRIU root entered, its mounts made: ~20 ms) for go().
    const restoreArgv = ['criu', 'restore', '-D', `${o.workDir}/img`, '--lazy-pages', '-d', '--pidfile', `${o.workDir}/restored.pid`, '-o', 'restore.log'];
    const restore = mode === 'stock' || !o.netns ? armed('criu restore', inCriuRoot(waitForGo(restoreArgv))) : null;
    const lazy = mode === 'stock' ? armed('criu lazy-pages', sh([
      'read -r go; [ "$go" = go ] || exit 1',
      `cd ${o.workDir} && rm -f lst && mkfifo lst`,
      `criu lazy-pages --page-server --address 127.0.0.1 --port ${o.criuPort} -D img --status-fd 9 -o lazy.log 9>lst &`,
      'L=$!',
      readyOnStatus('lst', 'L', 'lazy'),
    ])) : null;
    // CRIU must dump from the task's own mount namespace (another one trips its mount code).
    const dump = armed('criu dump', inTaskMounts(o.pid, [
      `mkdir -p ${o.workDir}/img && cd ${o.workDir} && rm -f st && mkfifo st`,
      'read -r go; [ "$go" = go ] || exit 1',
      `criu dump -t ${o.pid} -D img --lazy-pages --address 127.0.0.1 --port ${o.criuPort} --status-fd 9 -o dump.log 9>st &`,
      'D=$!',
      readyOnStatus('st', 'D', 'dump'),
    ]));
    run.dump = dump.child;
    // The tasks `criu restore` makes share its mount namespace (made by criu-root.sh, its own): a
    // restore cut short leaves them without a pid file, and they are found by it.
    if (restore) await run.armed(restore.child, timeoutMs);
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
    run.guard();
    const t0 = performance.now();
    run.frozen = true;
    dump.go();
    // `ready`: CRIU wrote its status byte (the images are written, its page server listens); a dump
    // that fails writes none, and its shell says how it ended instead.
    const said = await dump.child.next((l) => l === 'ready' || l.startsWith('dump exit'), timeoutMs).catch((err: Error) => {
      throw new PostcopyError('ERR_CRIU', `criu dump failed: ${err.message}; ${readLog(host, 'img/dump.log')}`);
    });
    if (said !== 'ready') throw new PostcopyError('ERR_CRIU', `criu dump failed (${said.slice(5)}): ${readLog(host, 'img/dump.log')}`);
    run.watchDump(host, mode);
    phase('dumped', t0);
    let downtime = 0;
    const restored = async () => {
      await restore!.child.rest(timeoutMs).catch((err: Error) => {
        throw new PostcopyError('ERR_CRIU', `criu restore failed: ${err.message}; ${readLog(host, 'img/restore.log')}`);
      });
      downtime = performance.now() - t0;
      run.setRestored(Number(readFileSync(join(host, 'restored.pid'), 'utf8').trim()));
      phase('restored', t0);
    };

    if (mode === 'stock') {
      run.guard();
      lazy!.go();
      const lazySaid = await lazy!.child.next((l) => l === 'ready' || l.startsWith('lazy exit'), timeoutMs);
      if (lazySaid !== 'ready') throw new PostcopyError('ERR_CRIU', `criu lazy-pages failed (${lazySaid.slice(5)}): ${readLog(host, 'img/lazy.log')}`);
      run.guard();
      restore!.go();
      run.watchRestore(restore!.child, host);
      const exitAt = processExitAt(restore!.child.child.pid!, timeoutMs);
      await restored();
      downtime = exitedSince(await exitAt, t0, downtime);
      // criu lazy-pages ends the dump itself once it has sent every page.
      const tail = await lazy!.child.rest(timeoutMs);
      const allPresent = performance.now() - t0;
      if (!tail.includes('lazy exit 0')) throw new PostcopyError('ERR_CRIU', `criu lazy-pages failed: ${readLog(host, 'img/lazy.log')}`);
      run.allPresent = true;
      run.releaseSent = true;
      phase('all pages present', t0);
      await run.dumpEnded(host, timeoutMs);
      const transferred = /UFFD transferred pages: \((\d+)\/(\d+)\)/.exec(readText(join(host, 'img/lazy.log')));
      return { mode, restoredPid: run.restoredPid, downtime_ms: round(downtime), all_present_ms: round(allPresent), pages: transferred ? Number(transferred[2]) : null, faulted: null, pushed: null, bytes_sent: transferred ? Number(transferred[1]) * 4096 : null, fault_p50_us: null, fault_p99_us: null, forked: null, ...warmedReport(warmed) };
    }

    if (o.netns) return { ...(await migrateAcrossNamespaces(o, run, host, veth!, start, t0, phase, timeoutMs)), ...warmedReport(warmed) };

    // postcopy: our source over the frozen tasks, our daemon in the place of `criu lazy-pages`.
    run.guard();
    restore!.go();
    run.watchRestore(restore!.child, host);
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
    const socketPath = join(host, 'img', LAZY_PAGES_SOCKET);
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
    // Cut short (the migration failed elsewhere), it may still wait for `criu restore` to connect:
    // a connection that says nothing ends that wait.
    run.onOver(() => pokeSocket(socketPath), lazyDone);
    lazyDone.catch(() => {}); // observed below
    // The restore returns (task running) long before every page is in.
    await Promise.all([lazyDone.then((r) => (lazyResult = r)), restored()]);
    const allPresent = presentSince(lazyResult!, t0);
    run.checkWhole(lazyResult!.tasks);
    phase('all pages present', t0);
    run.release(o.criuPort);
    await run.dumpEnded(host, timeoutMs);
    phase('released', t0);
    const result = postcopyResult(run.restoredPid, exitedSince(lazyResult!.restoreExitAt, t0, downtime), allPresent, servers.reduce((n, x) => n + x.stats.bytesSent, 0), lazyResult!);
    return { ...result, prepared_before_freeze: images.tasks.length - again, ...warmedReport(warmed) };
  };

  const flowDone = flow();
  flowDone.catch(() => {}); // observed below, or it lost the race to a failure seen elsewhere
  try {
    const result = await Promise.race([flowDone, run.failure]);
    // Exactly one copy: the original is gone (CRIU killed it as the dump ended), the restored tree runs.
    await run.confirmOriginalGone();
    if (!run.restoredAlive()) throw new PostcopyError('ERR_TARGET_GONE', `the restored task ${run.restoredPid} is gone`);
    return { ...result, running: 'restored' };
  } catch (err) {
    run.fail(err);
    const running = await run.settle(children);
    log.info({ running }, 'migration failed');
    throw failure(run.failed, running);
  } finally {
    run.end();
    if (restoreSocket >= 0) native.close(restoreSocket);
    for (const c of children) c.kill();
    const stopAll = async () => {
      for (const p of prepared.values()) await p.handler.stop();
      for (const s of servers) await s.close();
    };
    await stopAll();
    // Whatever the flow still does ends now (its children are gone, its handlers stopped).
    await within(flowDone.catch(() => {}), 5000);
    await stopAll();
    (veth as VethPair | null)?.destroy();
    run.close();
  }
}

/** The error migrate() throws: a PostcopyError (the first failure's) with the copy that runs. */
function failure(err: unknown, running: Running): MigrateError {
  const e = err instanceof PostcopyError ? err : new PostcopyError('ERR_CRIU', (err as Error)?.message ?? String(err), { cause: err });
  return Object.assign(e, { running });
}

/** Every option checked before anything is frozen; returns a pidfd of the task. */
async function checkOptions(o: MigrateOptions, mode: MigrateMode, timeoutMs: number): Promise<number> {
  const bad = (what: string) => new PostcopyError('ERR_INVALID_ARG', what);
  if (mode !== 'postcopy' && mode !== 'stock') throw bad(`mode must be postcopy or stock, not ${String(mode)}`);
  checkPushSettings(o);
  if (o.readahead !== undefined && !(Number.isInteger(o.readahead) && o.readahead >= 0)) throw bad(`readahead must be a number of pages, 0 or more, not ${o.readahead}`);
  if (o.prepare !== undefined && o.prepare !== 'before-freeze' && o.prepare !== 'after-dump') throw bad(`prepare must be before-freeze or after-dump, not ${String(o.prepare)}`);
  if (!(typeof timeoutMs === 'number' && timeoutMs >= 1 && timeoutMs <= MAX_TIMEOUT_MS)) throw bad(`timeoutMs must be 1 to ${MAX_TIMEOUT_MS} ms, not ${timeoutMs}`);
  if (!(Number.isInteger(o.criuPort) && o.criuPort >= 1 && o.criuPort <= 65535)) throw bad(`criuPort must be a TCP port, 1 to 65535, not ${o.criuPort}`);
  // The work directory is a path inside the CRIU root, written into shell commands as it is.
  const w = o.workDir;
  if (typeof w !== 'string' || !/^\/[A-Za-z0-9._+@%=,:/-]*$/.test(w) || w.split('/').some((s) => s === '..' || s === '.') || normalize(w) === '/')
    throw bad(`workDir must be an absolute path inside the CRIU root (letters, digits and ._+@%=,:/- only, no . or ..), not ${JSON.stringify(w)}`);
  const root = criuRootDir();
  let rootStat;
  try {
    rootStat = statSync(root);
  } catch {
    throw new PostcopyError('ERR_CRIU', `no CRIU root at ${root}: \`postcopy criu-setup\` builds it`);
  }
  const host = join(root, w);
  const socket = join(host, mode === 'postcopy' && o.netns ? 'target' : '', 'img', LAZY_PAGES_SOCKET);
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) throw bad(`workDir ${w} is too long: ${socket} must fit in ${MAX_SOCKET_PATH} bytes (a Unix socket's path)`);
  const pid = o.pid;
  if (!(Number.isInteger(pid) && pid > 1) || pid === process.pid) throw bad(`pid must be the pid of a task to migrate, not ${pid}`);
  const fd = native.pidfdOpen(pid);
  if (fd < 0) throw bad(`no process ${pid}`);
  try {
    let status = '';
    let taskRoot;
    try {
      status = readFileSync(`/proc/${pid}/status`, 'utf8');
      taskRoot = statSync(`/proc/${pid}/root`);
    } catch (err) {
      throw bad(`cannot inspect process ${pid}: ${(err as Error).message}`);
    }
    const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1] ?? '';
    if (/^[ZX]/.test(field('State'))) throw bad(`process ${pid} has exited`);
    if (field('TracerPid') !== '0') throw bad(`process ${pid} is traced by process ${field('TracerPid')} (a dump or a debugger): it cannot be dumped now`);
    if (taskRoot.dev !== rootStat.dev || taskRoot.ino !== rootStat.ino)
      throw bad(`process ${pid} does not run in the CRIU root ${root}: CRIU there cannot dump it, nor restore it there (start it inside, see \`postcopy criu-setup\`)`);
    try {
      mkdirSync(host, { recursive: true });
    } catch (err) {
      throw bad(`cannot make the work directory ${host}: ${(err as Error).message}`);
    }
    if (!(await portFree(o.criuPort))) throw bad(`port ${o.criuPort} on 127.0.0.1 is taken: CRIU's page server could not listen there (criuPort)`);
    // An earlier migration's pid files must not be taken for this one's (their tasks are killed on a failure).
    for (const old of ['restored.pid', 'target/restored.pid']) rmSync(join(host, old), { force: true });
    return fd;
  } catch (err) {
    native.close(fd);
    throw err;
  }
}

/** Whether a TCP port on 127.0.0.1 is free to listen on. */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/**
 * How a child process ended ('exit N', 'killed by SIG...'), as soon as it has: LineChild.exited
 * waits for its output to close too, and tasks that `criu restore` left behind hold that open.
 */
function ended(c: LineChild): Promise<string> {
  const p = c.child;
  const how = (code: number | null, signal: NodeJS.Signals | null) => (signal ? `killed by ${signal}` : `exit ${code}`);
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve(how(p.exitCode, p.signalCode));
  return new Promise((resolve) => {
    p.once('exit', (code, signal) => resolve(how(code, signal)));
    p.once('error', (err) => resolve(`could not start: ${err.message}`));
  });
}

/** A connection to a Unix socket, closed at once. */
function pokeSocket(path: string): void {
  const fd = native.unixConnect(path);
  if (fd >= 0) native.close(fd);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** p, or null once ms have passed (the timer cleared either way). */
function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Whether a pidfd's process has exited (a zombie counts as exited). */
const exited = (pidfd: number) => native.pollIn(Int32Array.of(pidfd), 0) !== 0;

/** Whether process pid is there and has not exited. */
function alive(pid: number): boolean {
  if (!(pid > 0)) return false;
  const fd = native.pidfdOpen(pid);
  if (fd < 0) return false;
  try {
    return !exited(fd);
  } finally {
    native.close(fd);
  }
}

/** Waits (bounded) for a pidfd's process to exit; whether it did. */
async function exitedWithin(pidfd: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!exited(pidfd)) {
    if (Date.now() >= deadline) return false;
    await sleep(2);
  }
  return true;
}

/** Host pids of processes and everything under them (bounded). */
function withDescendants(roots: Iterable<number>): Set<number> {
  const out = new Set<number>();
  const queue = [...roots];
  for (let i = 0; i < queue.length && out.size < 65536; i++) {
    if (out.has(queue[i])) continue;
    out.add(queue[i]);
    queue.push(...childrenOf(queue[i]));
  }
  return out;
}

/** Host pids of the processes in mount namespace ns (as readlink /proc/PID/ns/mnt says it). */
function inMountNamespace(ns: string): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readlinkSync(`/proc/${name}/ns/mnt`) === ns) out.push(Number(name));
    } catch {
      // gone, or a zombie (no namespaces left)
    }
  }
  return out;
}

/**
 * SIGKILLs the processes find() names (found again after each round: a task may fork while it is
 * killed) until none is left, each seen dead on a pidfd; false if some were not within ms.
 */
async function killAll(find: () => Iterable<number>, spare: (pid: number) => boolean, ms: number, killed: number[] = []): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (let round = 0; round < 100; round++) {
    const fds: number[] = [];
    try {
      for (const pid of new Set(find())) {
        if (pid === process.pid || spare(pid)) continue;
        const fd = native.pidfdOpen(pid);
        if (fd < 0) continue; // gone
        if (exited(fd)) {
          native.close(fd);
          continue;
        }
        fds.push(fd);
        killed.push(pid);
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // it exited meanwhile
        }
      }
      if (!fds.length) return true;
      for (const fd of fds) if (!(await exitedWithin(fd, deadline - Date.now()))) return false;
    } finally {
      for (const fd of fds) native.close(fd);
    }
  }
  return false;
}

/** One migration's state, for settling it whatever failed: which copy of the task runs at the end. */
class Run {
  /** the first failure */
  failed: unknown = null;
  /** migrate() has returned or thrown */
  over = false;
  /** the dump was told to go: the original may be frozen */
  frozen = false;
  dump: LineChild | null = null;
  /** how the dump ended (its shell's `dump exit N`), once it has */
  dumpEnd: string | null = null;
  #dumpEnded: Promise<string> | null = null;
  /** the restored tree's root (host pid), once `criu restore` has said */
  restoredPid = 0;
  #restoredFd = -1;
  /** the mount namespace `criu restore` runs in, and so the tasks it makes */
  restoreMountNs: string | null = null;
  /** every task of the restored tree has every page (or exited) */
  allPresent = false;
  /** PS_IOV_CLOSE went out (or CRIU's lazy-pages ended the dump): CRIU may have killed the original */
  releaseSent = false;
  /** the host pids of the original tree before the freeze: never taken for restored tasks */
  readonly originalTree: Set<number>;
  readonly failure: Promise<never>;
  #reject!: (err: unknown) => void;
  #onOver: (() => void)[] = [];

  constructor(
    readonly original: number,
    readonly originalFd: number,
    readonly restoredPidFile: string,
    readonly log: Logger,
  ) {
    this.originalTree = withDescendants([original]);
    this.failure = new Promise<never>((_, reject) => (this.#reject = reject));
    this.failure.catch(() => {});
  }

  /** Records the first failure; the migration stops at once (migrate() races its flow against it). */
  fail(err: unknown): void {
    if (this.failed || this.over) return;
    this.failed = err ?? new PostcopyError('ERR_CRIU', 'failed');
    this.#reject(this.failed);
  }

  /** Throws the failure, if there was one: nothing more is started once the migration failed. */
  guard(): void {
    if (this.failed) throw this.failed;
    if (this.over) throw new PostcopyError('ERR_CRIU', 'the migration is over');
  }

  /** Waits for an armed `criu restore` to be in its mount namespace, and notes which that is. */
  async armed(restore: LineChild, timeoutMs: number): Promise<void> {
    await restore.next((l) => l === 'armed', timeoutMs);
    const ns = readlinkSync(`/proc/${restore.child.pid}/ns/mnt`);
    // Its own, made by criu-root.sh: never this process's, nor the original's (their tasks are not the restore's).
    const others = [process.pid, this.original].map((pid) => {
      try {
        return readlinkSync(`/proc/${pid}/ns/mnt`);
      } catch {
        return null;
      }
    });
    if (others.includes(ns)) throw new PostcopyError('ERR_CRIU', `criu restore runs in the mount namespace of this process or of the task (${ns}), not one of its own`);
    this.restoreMountNs = ns;
  }

  setRestored(pid: number): void {
    if (!(pid > 0)) throw new PostcopyError('ERR_CRIU', `criu restore wrote no pid to ${this.restoredPidFile}`);
    this.restoredPid = pid;
    this.#restoredFd = native.pidfdOpen(pid);
  }

  restoredAlive(): boolean {
    return this.#restoredFd >= 0 && !exited(this.#restoredFd);
  }

  /**
   * From the dump's `ready` on: the dump must not end before it is released (it lets the frozen
   * original go: it runs again), nor end badly. (CRIU's lazy-pages, mode stock, ends it itself.)
   */
  watchDump(host: string, mode: MigrateMode): void {
    this.#dumpEnded = this.dump!.next((l) => l.startsWith('dump exit'), MAX_TIMEOUT_MS).catch((err: Error) => `dump ${err.message}`);
    void this.#dumpEnded.then((line) => {
      this.dumpEnd = line;
      if (line === 'dump exit 0' && (this.releaseSent || mode === 'stock')) return;
      this.fail(new PostcopyError('ERR_CRIU', `criu dump ended (${line.slice(5)}) before the migration was done, and let the original run again: ${readLog(host, 'img/dump.log')}`));
    });
  }

  /** `criu restore`, told to go: it fails the migration at once if it ends badly. */
  watchRestore(restore: LineChild, hostDir: string): void {
    void ended(restore).then((how) => {
      if (how !== 'exit 0') this.fail(new PostcopyError('ERR_CRIU', `criu restore failed (${how}): ${readLog(hostDir, 'img/restore.log')}`));
    });
  }

  /** Waits for the dump to end, as it does once released; it must end well. */
  async dumpEnded(host: string, timeoutMs: number): Promise<void> {
    const line = await within(this.#dumpEnded!, timeoutMs);
    if (line === null) throw new PostcopyError('ERR_TIMEOUT', `criu dump did not end within ${timeoutMs} ms of its release`);
    if (line !== 'dump exit 0') throw new PostcopyError('ERR_CRIU', `criu dump ended badly (${line.slice(5)}): ${readLog(host, 'img/dump.log')}`);
  }

  /**
   * Before the release: the restored tree runs, and each of its tasks has every page (or exited,
   * nothing lost); the dump still holds the original.
   */
  checkWhole(tasks: { pid: number; report: HandlerReport }[]): void {
    this.guard();
    const short = tasks.filter((t) => !t.report?.complete && !t.report?.exited);
    if (!tasks.length || short.length) throw new PostcopyError('ERR_CRIU', `the target did not get every page (tasks ${short.map((t) => t.pid).join(', ') || 'none'}): ${JSON.stringify(tasks.map((t) => ({ pid: t.pid, ...t.report, latency: undefined })))}`);
    if (!this.restoredAlive()) throw new PostcopyError('ERR_TARGET_GONE', `the restored task ${this.restoredPid} ended before the migration was done`);
    if (this.dumpEnd !== null) throw new PostcopyError('ERR_CRIU', `criu dump ended (${this.dumpEnd}) before its release`);
    this.allPresent = true;
  }

  /** Ends CRIU's dump: CRIU kills the original. */
  release(port: number): void {
    this.guard();
    releaseCriuDump(port, () => (this.releaseSent = true));
  }

  /** On success: the original tree is gone; CRIU kills it as the dump ends (else it is killed here). */
  async confirmOriginalGone(): Promise<void> {
    if (await exitedWithin(this.originalFd, KILL_WAIT_MS)) return;
    if (!(await killAll(() => withDescendants([this.original]), () => false, KILL_WAIT_MS)) || !exited(this.originalFd))
      throw new PostcopyError('ERR_CRIU', `the original task ${this.original} is still there after its dump ended`);
  }

  /** Runs fn when the migration is over, if `pending` has not settled by then. */
  onOver(fn: () => void, pending: Promise<unknown>): void {
    let settled = false;
    pending.then(() => (settled = true), () => (settled = true));
    this.#onOver.push(() => settled || fn());
  }

  end(): void {
    this.over = true;
    for (const fn of this.#onOver) {
      try {
        fn();
      } catch {
        // best effort
      }
    }
  }

  close(): void {
    native.close(this.originalFd);
    if (this.#restoredFd >= 0) native.close(this.#restoredFd);
  }

  /** The restored tasks: the restored tree (by its pid file) and whatever `criu restore` made, with every child they forked. */
  #restoredTasks(): Set<number> {
    const roots: number[] = [];
    let root = this.restoredPid;
    if (!root) {
      try {
        root = Number(readFileSync(this.restoredPidFile, 'utf8').trim()) || 0;
      } catch {
        // not restored (yet)
      }
    }
    if (root > 0) roots.push(root);
    if (this.restoreMountNs) roots.push(...inMountNamespace(this.restoreMountNs));
    return withDescendants(roots);
  }

  /**
   * After a failure, exactly one copy runs: every restored task is killed and seen dead before the
   * original is let go (the dump holds it frozen until its process ends); or, once the original
   * was released and the restored tree has every page, the restored tree alone. Never throws.
   */
  async settle(children: LineChild[]): Promise<Running> {
    try {
      if (!this.frozen) {
        for (const c of children) c.kill();
        return exited(this.originalFd) ? 'none' : 'original';
      }
      // The dump stays where it is: it neither lets the original go nor kills it. Everything else
      // stops (CRIU's lazy-pages could end the dump; `criu restore` could make more tasks).
      this.dump?.kill('SIGSTOP');
      for (const c of children) if (c !== this.dump) c.kill();
      const originalAlive = !exited(this.originalFd);
      const spareOriginal = (pid: number) => this.originalTree.has(pid);
      const killed: number[] = [];
      let running: Running;
      if (this.allPresent && this.restoredAlive() && (this.releaseSent || !originalAlive)) {
        // Released (or the original is gone), and the restored tree has every page: it stays.
        if (originalAlive) await killAll(() => withDescendants([this.original]), () => false, KILL_WAIT_MS);
        running = 'restored';
      } else if (await killAll(() => this.#restoredTasks(), spareOriginal, KILL_WAIT_MS, killed)) {
        this.log.info({ killed }, 'every restored task killed, and seen dead');
        running = originalAlive ? 'original' : 'none';
      } else {
        // A restored task that cannot be seen dead: the original must not run beside it.
        this.log.error({ killed }, 'a restored task was not seen dead: the original is killed too');
        await killAll(() => withDescendants([this.original]), () => false, KILL_WAIT_MS);
        running = 'none';
      }
      // The dump's end lets the original go (if it is there): it runs again.
      if (this.dump) {
        this.dump.kill('SIGKILL');
        await within(this.dump.exited, KILL_WAIT_MS);
      }
      if (running === 'original' && exited(this.originalFd)) running = 'none';
      return running;
    } catch {
      return exited(this.originalFd) ? 'none' : 'original';
    }
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

/** Pages summed over the tasks; fault latency is the root task's. */
function postcopyResult(restoredPid: number, downtime: number, allPresent: number, bytesSent: number, lazy: LazyPagesReport): Omit<MigrateResult, 'running'> {
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
    died_of_signal: lazy.tasks.flatMap((t) => [t.report, ...t.forked]).filter((x) => x?.exitSignal).map((x) => ({ pid: x.pid ?? null, signal: x.exitSignal! })),
  };
}

/** The postcopy mode with each end in a network namespace of its own, as separate processes. */
async function migrateAcrossNamespaces(
  o: MigrateOptions,
  run: Run,
  host: string,
  veth: VethPair,
  start: (name: string, argv: string[]) => LineChild,
  t0: number,
  phase: (name: string, t0: number) => void,
  timeoutMs: number,
): Promise<Omit<MigrateResult, 'running'>> {
  const images = readDump(join(host, 'img'));
  const frozen = frozenTasks(images, o.pid);
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
    // A source that ends badly fails the migration at once (the target would retry it for long).
    for (const [i, serve] of serves.entries())
      void ended(serve).then((how) => {
        if (how !== 'exit 0') run.fail(new PostcopyError('ERR_CHILD', `postcopy serve (task ${images.tasks[i].pid}) ended (${how}) before the target had every page${serve.stderr ? `: ${serve.stderr}` : ''}`));
      });
    // `criu restore` waits in the target's namespace, its mounts made, while the images travel.
    const target = join(o.workDir, 'target');
    const restore = start('criu restore', [...veth.exec('b'), ...inCriuRoot(waitForGo(['criu', 'restore', '-D', `${target}/img`, '--lazy-pages', '-d', '--pidfile', `${target}/restored.pid`, '-o', 'restore.log']))]);
    const sources: string[] = [];
    for (const [i, serve] of serves.entries()) {
      const pages = (JSON.parse(await serve.next((l) => l.includes('"listening"'), timeoutMs)) as { endpoint: string }).endpoint;
      sources.push(serves.length === 1 ? pages : `${images.tasks[i].pid}=${pages}`);
    }
    const imagesAt = (JSON.parse(await serves[0].next((l) => l.includes('"images-listening"'), timeoutMs)) as { endpoint: string }).endpoint;
    phase('serving', t0);
    const lazy = start('postcopy lazy-pages', [
      ...veth.exec('b'), ...cli, 'lazy-pages', '--images', join(host, 'target', 'img'), '--images-from', imagesAt,
      '--source', 'postcopy', '--page-server', ...sources, '--pidfile', join(host, 'target', 'restored.pid'),
      '--push-batch', String(o.pushBatch ?? DEFAULT_PUSH_BATCH), '--push-window', String(o.pushWindow ?? DEFAULT_PUSH_WINDOW), ...(o.checksums === false ? ['--no-checksums'] : []), ...keyArgs, '--json',
    ]);
    await lazy.next((l) => l.includes('"event":"images"'), timeoutMs);
    phase('images on the target', t0);
    await lazy.next((l) => l.includes('"event":"listening"'), timeoutMs);
    await run.armed(restore, timeoutMs);
    run.guard();
    restore.send('go');
    run.watchRestore(restore, join(host, 'target'));
    await restore.rest(timeoutMs).catch((err: Error) => {
      throw new PostcopyError('ERR_CRIU', `criu restore failed: ${err.message}; ${readLog(join(host, 'target'), 'img/restore.log')}`);
    });
    const downtime = performance.now() - t0;
    run.setRestored(Number(readFileSync(join(host, 'target', 'restored.pid'), 'utf8').trim()));
    phase('restored', t0);
    const done = JSON.parse((await lazy.rest(timeoutMs)).find((l) => l.includes('"event":"done"')) ?? '{}') as LazyPagesReport;
    const allPresent = presentSince(done, t0);
    let bytesSent = 0;
    for (const serve of serves) bytesSent += (JSON.parse(await serve.next((l) => l.includes('"event":"done"'), timeoutMs)) as { stats: { bytesSent: number } }).stats.bytesSent;
    run.checkWhole(done.tasks ?? []);
    phase('all pages present', t0);
    run.release(o.criuPort);
    await run.dumpEnded(host, timeoutMs);
    phase('released', t0);
    return postcopyResult(run.restoredPid, exitedSince(done.restoreExitAt ?? null, t0, downtime), allPresent, bytesSent, done);
  } finally {
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
