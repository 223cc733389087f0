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
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, normalize } from 'node:path';
import { PostcopyError } from '../errors.js';
import { native } from '../native/index.js';
import { LiveProcessSource, privateAnonymousRanges } from '../source/live-process.js';
import { PageServer } from '../source/server.js';
import { checkPushSettings, FaultHandler } from '../target/handler.js';
import { TcpTransport } from '../transport/index.js';
import { anonymousBytes, warmUpMemory } from '../target/warm-up.js';
import { parseCliEvent } from '../protocol/cli-events.js';
import type { WorkingSet } from '../protocol/working-set.js';
import { checkPushPriority, type PushPriority } from '../util/push-priority.js';
import { LineChild, nodeModuleArgv } from '../util/child.js';
import { VethPair } from '../util/netns.js';
import { processExitAt, treeMember, treePids } from '../util/proctree.js';
import { silentLogger, type Logger } from '../util/log.js';
import { lazyLayout, readDump } from './image.js';
import { LAZY_PAGES_SOCKET, listenForRestore, serveLazyPages, type LazyPagesReport } from './lazy-pages.js';
import { criuRootDir, inCriuRoot } from './root.js';
import { alive, dumpOnGo, exitedSince, failure, frozenTasks, inTaskMounts, MAX_SOCKET_PATH, MAX_TIMEOUT_MS, migrationKey, pokeSocket, portFree, postcopyResult, presentSince, readLog, readText, readyOnStatus, round, Run, sh, waitForGo, within, ended, type MigrateMode, type MigrateResult } from './run.js';
export { releaseCriuDump, type MigrateError, type MigrateMode, type MigrateResult, type Running } from './run.js';


/**
 * 2 MiB requests, 4 in flight: the migrated task competes for the CPUs, so the push goes in large
 * steps (each request and reply costs both ends a fixed share of CPU).
 */
export const DEFAULT_PUSH_BATCH = 512;
export const DEFAULT_PUSH_WINDOW = 4;
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
  /**
   * postcopy in one namespace: each task's pages in this working set (by its pid in the dump) are
   * pushed first, in their order (a record of an earlier migration: protocol/working-set.ts).
   */
  workingSet?: WorkingSet;
  /** postcopy in one namespace: called with the pages each task faulted on, in order, once all are in */
  onWorkingSet?: (recorded: WorkingSet) => void;
  /** postcopy in one namespace: how far the push threads lower themselves, on both ends (default normal) */
  pushPriority?: PushPriority;
  timeoutMs?: number;
  onPhase?: (phase: string, ms: number) => void;
  logger?: Logger;
}



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
    const server = new PageServer(source, { logger: log, grants: [key], backgroundPriority: o.pushPriority });
    servers.push(server);
    run.guard();
    const { endpoint } = await server.listen(new TcpTransport('127.0.0.1', 0));
    run.guard();
    const handler = await FaultHandler.start({
      endpoint,
      mappings: source.regions.map((r) => ({ regionId: r.id, localStart: r.start, length: r.length })),
      pageSize: PAGE,
      push: o.push ?? true,
      pushFirst: o.workingSet?.tasks.get(vpid),
      recordTouches: !!o.onWorkingSet,
      pushPriority: o.pushPriority,
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
    const dump = armed('criu dump', inTaskMounts(o.pid, dumpOnGo(o.workDir, ['img'], `criu dump -t ${o.pid} -D img --lazy-pages --address 127.0.0.1 --port ${o.criuPort} --status-fd 9 -o dump.log`)));
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

    if (o.netns) return { ...(await migrateAcrossNamespaces({ o, run, host, start, phase, timeoutMs }, veth!, t0)), ...warmedReport(warmed) };

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
    o.onWorkingSet?.({ pageSize: PAGE, tasks: new Map(lazyResult!.tasks.map((t) => [t.pid, t.report.touched ?? []])) });
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


/** Every option checked before anything is frozen; returns a pidfd of the task. `container`: the task is a container's init (its root is the container's, not the CRIU root). */
export async function checkOptions(o: MigrateOptions, mode: MigrateMode, timeoutMs: number, container = false): Promise<number> {
  const bad = (what: string) => new PostcopyError('ERR_INVALID_ARG', what);
  if (mode !== 'postcopy' && mode !== 'stock') throw bad(`mode must be postcopy or stock, not ${String(mode)}`);
  checkPushSettings(o);
  if (o.readahead !== undefined && !(Number.isInteger(o.readahead) && o.readahead >= 0)) throw bad(`readahead must be a number of pages, 0 or more, not ${o.readahead}`);
  if (o.pushPriority !== undefined) checkPushPriority(o.pushPriority);
  if ((o.workingSet || o.onWorkingSet) && (mode !== 'postcopy' || o.netns)) throw bad('a working set is replayed and recorded by postcopy in one namespace (not stock, not --netns)');
  if (o.workingSet && o.workingSet.pageSize !== PAGE) throw bad(`the working set's pages are ${o.workingSet.pageSize} bytes, this host's ${PAGE}`);
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
    if (!container && (taskRoot.dev !== rootStat.dev || taskRoot.ino !== rootStat.ino))
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

const warmedReport = (w: { bytes: number; ms: number }) => ({ warmed_bytes: w.bytes, warm_up_ms: round(w.ms) });


/** What a migration's steps share: its options, its Run, its directory on this host, how it starts children and says its phases. */
interface MigrationFlow {
  o: MigrateOptions;
  run: Run;
  /** the work directory, as this host sees it */
  host: string;
  start: (name: string, argv: string[]) => LineChild;
  phase: (name: string, t0: number) => void;
  timeoutMs: number;
}

/** The postcopy mode with each end in a network namespace of its own, as separate processes. */
async function migrateAcrossNamespaces(m: MigrationFlow, veth: VethPair, t0: number): Promise<Omit<MigrateResult, 'running'>> {
  const { o, run, host, start, phase, timeoutMs } = m;
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
      const pages = (await serve.event('serve', 'listening', timeoutMs)).endpoint;
      sources.push(serves.length === 1 ? pages : `${images.tasks[i].pid}=${pages}`);
    }
    const imagesAt = (await serves[0].event('serve', 'images-listening', timeoutMs)).endpoint;
    phase('serving', t0);
    const lazy = start('postcopy lazy-pages', [
      ...veth.exec('b'), ...cli, 'lazy-pages', '--images', join(host, 'target', 'img'), '--images-from', imagesAt,
      '--source', 'postcopy', '--page-server', ...sources, '--pidfile', join(host, 'target', 'restored.pid'),
      '--push-batch', String(o.pushBatch ?? DEFAULT_PUSH_BATCH), '--push-window', String(o.pushWindow ?? DEFAULT_PUSH_WINDOW), ...(o.checksums === false ? ['--no-checksums'] : []), ...keyArgs, '--json',
    ]);
    await lazy.event('lazy-pages', 'images', timeoutMs);
    phase('images on the target', t0);
    await lazy.event('lazy-pages', 'listening', timeoutMs);
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
    const done = ((await lazy.rest(timeoutMs)).map((l) => parseCliEvent('lazy-pages', 'done', l)).find((e) => e) ?? {}) as LazyPagesReport;
    const allPresent = presentSince(done, t0);
    let bytesSent = 0;
    for (const serve of serves) bytesSent += (await serve.event('serve', 'done', timeoutMs)).stats.bytesSent;
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
