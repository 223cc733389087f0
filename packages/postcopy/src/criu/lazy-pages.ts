// postcopy in the place of `criu lazy-pages`: `criu restore --lazy-pages` connects to
// lazy-pages.socket in its work directory and, for each task, sends its pid (an int) and then
// its userfaultfd (SCM_RIGHTS, one byte); a negative pid is a zombie with no fd. When the restore
// is done it sends the u32 0x52535446. We resolve each task's faults from the source and push the
// rest, and tell the source when every page is in. The source is CRIU's page server (one
// connection for the whole tree), the images directory itself (CRIU's local mode), or a postcopy
// source per task.
import { join } from 'node:path';
import { PostcopyError } from '../errors.js';
import { native } from '../native/index.js';
import { acceptOne } from '../target/handoff.js';
import { processExitAt, treePids } from '../util/proctree.js';
import { FaultHandler, type HandlerReport } from '../target/handler.js';
import { CriuPageServerConnection } from '../target/criu-channel.js';
import { ImagePageServer } from './image-page-server.js';
import type { Endpoint } from '../transport/transport.js';
import type { TlsMaterial } from '../transport/tls.js';
import type { PresharedKey } from '../protocol/auth.js';
import { silentLogger, type Logger } from '../util/log.js';
import { lazyLayout, readDump, type DumpImages } from './image.js';
import type { WorkingSet } from '../protocol/working-set.js';
import { readRestoreHandoff } from './restore-handoff.js';

export const LAZY_PAGES_SOCKET = 'lazy-pages.socket';
export { LAZY_PAGES_RESTORE_FINISHED } from './restore-handoff.js';

/**
 * Where pages come from: CRIU's own page server (`criu dump --lazy-pages --address A --port P`, or
 * `criu page-server --lazy-pages` over images), the images directory itself (pages-*.img, as
 * `criu lazy-pages` without --page-server), or a postcopy source serving the frozen tasks (its
 * regions: lazyLayout() of the same images). A promise lets `criu restore` start while the source is
 * still getting ready.
 */
export type LazyPagesSource =
  | { kind: 'criu'; endpoint: Endpoint | Promise<Endpoint>; tls?: TlsMaterial }
  | { kind: 'images' }
  | { kind: 'postcopy'; endpoint: Endpoint | Promise<Endpoint> | ((pid: number) => Endpoint | Promise<Endpoint>) };

export interface LazyPagesOptions {
  imagesDir: string;
  /** where lazy-pages.socket goes (CRIU's --work-dir): imagesDir by default */
  workDir?: string;
  /** the images of imagesDir, when the caller has read them already */
  dump?: DumpImages;
  source: LazyPagesSource;
  /**
   * A restored task's pid as this host sees it (from its pid in the dump): killed if its pages
   * cannot be fetched, watched so that its handler ends when it exits. Where this says nothing, the
   * task is found in the tree of the `criu restore` that handed it over.
   */
  targetPid?: (pid: number) => number | undefined;
  push?: boolean;
  /** extra pages fetched after each faulting page (FaultHandler's default otherwise) */
  readahead?: number;
  /** background push: pages per request, requests in flight (FaultHandler's defaults otherwise) */
  pushBatch?: number;
  pushWindow?: number;
  /** a CRC32C with every page from a postcopy source (FaultHandler's default otherwise) */
  checksums?: boolean;
  /** pages pushed first, per task (by its pid in the dump), after its command line's */
  workingSet?: WorkingSet;
  /** record the pages each task faults on while missing, in order (its report's `touched`) */
  recordTouches?: boolean;
  /**
   * A handler started beforehand for a task of the dump (threads connected to its source, no uffd
   * yet), asked for once the restore has been told to start; undefined: one is started here.
   */
  handlers?: (pid: number) => Promise<FaultHandler> | undefined;
  /** how long to wait for `criu restore` to connect and hand over its tasks */
  timeoutMs?: number;
  logger?: Logger;
  /** called once the socket listens: start `criu restore --lazy-pages` now */
  onListening?: () => void;
  /**
   * A socket listening on imagesDir/lazy-pages.socket already (closed here at the end), so that
   * `criu restore` could start before the images were read here.
   */
  listenFd?: number;
  /** the migration's pre-shared key, for a postcopy source that asks for one */
  key?: PresharedKey;
}

export interface LazyPagesReport {
  /** per task; `forked`: the children it forked during post-copy, served too (depth first) */
  tasks: { pid: number; report: HandlerReport; forked: HandlerReport[] }[];
  zombies: number[];
  restoreFinished: boolean;
  /** when `criu restore` (the socket's peer) exited, as performance.timeOrigin + performance.now(); null: not seen */
  restoreExitAt: number | null;
  /** from the restore's connection to every page present */
  ms: number;
}

/** Waits for every child a handler's process forked (and theirs), and returns their reports. */
async function forkedReports(handler: FaultHandler): Promise<HandlerReport[]> {
  const out: HandlerReport[] = [];
  for (let i = 0; i < handler.children().length; i++) {
    const child = await handler.children()[i];
    out.push(await child.done(), ...(await forkedReports(child)));
  }
  return out;
}

/**
 * The pages of the task's command line and environment. /proc/PID/cmdline and environ read them
 * with no fault to userfaultfd: a missing page reads as nothing (zdtm's cmdlinenv00 with --no-push).
 * So they come first, with or without the push.
 */
function argEnvPages(ranges: { start: number; end: number }[], pageSize = 4096): number[] {
  const pages: number[] = [];
  for (const { start, end } of ranges)
    for (let a = start - (start % pageSize); a < end && pages.length < 1024; a += pageSize) if (!pages.includes(a)) pages.push(a);
  return pages;
}

/** The socket `criu restore --lazy-pages` connects to, in its work directory (the images directory by default). */
export function listenForRestore(workDir: string): number {
  return native.unixListen(join(workDir, LAZY_PAGES_SOCKET), 4);
}

/**
 * The restored tasks by their pids in the dump, as this host numbers them: found under the
 * `criu restore` that hands them over, while it still is their ancestor (it exits once they run),
 * and kept. Its own pid is left out.
 */
class RestoredTree {
  #pids = new Map<number, number>();
  #restorePid: number;

  constructor(restorePid: number) {
    this.#restorePid = restorePid;
  }

  /** Looks again under `criu restore` (while it lives) for tasks not seen yet. */
  refresh(): void {
    if (this.#restorePid <= 0 || this.#restorePid === process.pid) return;
    for (const [inner, host] of treePids(this.#restorePid)) if (host !== this.#restorePid) this.#pids.set(inner, host);
  }

  get(pid: number): number | undefined {
    return this.#pids.get(pid);
  }
}

/** How long the push waits for `criu restore` to exit after RESTORE_FINISHED; it is a few ms. */
const RESTORE_EXIT_WAIT_MS = 200;

export async function serveLazyPages(o: LazyPagesOptions): Promise<LazyPagesReport> {
  const log = o.logger ?? silentLogger;
  const timeoutMs = o.timeoutMs ?? 60_000;
  const dump = o.dump ?? readDump(o.imagesDir);
  const source = o.source;
  if (source.kind === 'postcopy' && typeof source.endpoint !== 'function' && dump.tasks.length !== 1)
    throw new PostcopyError('ERR_CRIU', `the dump holds ${dump.tasks.length} tasks and there is one postcopy source: a process tree needs one per task (--page-server PID=ENDPOINT for each)`);
  // The image page server refuses images without the lazy pages here, before anything listens.
  const images = source.kind === 'images' ? new ImagePageServer(o.imagesDir, dump) : null;
  let criu: CriuPageServerConnection | null = images ? CriuPageServerConnection.over(images.fd) : null;
  let listenFd: number;
  try {
    listenFd = o.listenFd ?? listenForRestore(o.workDir ?? o.imagesDir);
  } catch (err) {
    await criu?.close(false);
    throw err;
  }
  const handlers: { pid: number; handler: FaultHandler }[] = [];
  const prepared = new Map<number, Promise<FaultHandler>>();
  let restored: RestoredTree | null = null;
  const targetPid = (pid: number) => restored?.get(pid) ?? o.targetPid?.(pid);
  let conn = -1;
  let complete = false;
  try {
    if (source.kind === 'criu') criu = await CriuPageServerConnection.connect(await source.endpoint, source.tls);
    o.onListening?.();
    // While `criu restore` starts, start the fault threads and connect them to the source, so the
    // restored task's first faults (its stack, during the restore itself) wait on nothing else.
    for (const t of dump.tasks) {
      const ready = o.handlers?.(t.pid);
      if (ready) {
        ready.catch(() => {}); // observed below
        prepared.set(t.pid, ready);
        continue;
      }
      const { regions, lazy } = lazyLayout(dump.mms.get(t.pid)!, dump.pagemaps.get(t.pid)!);
      const endpoint = source.kind !== 'postcopy' ? undefined : typeof source.endpoint === 'function' ? source.endpoint(t.pid) : source.endpoint;
      const handler = Promise.resolve(endpoint).then((endpoint) => FaultHandler.start({
        endpoint,
        mappings: regions.map((r) => ({ regionId: r.id, localStart: r.start, length: r.length })),
        pageSize: 4096,
        push: o.push ?? true,
        pushFirst: [...argEnvPages(dump.mms.get(t.pid)!.argEnv), ...(o.workingSet?.tasks.get(t.pid) ?? [])],
        recordTouches: o.recordTouches,
        readahead: o.readahead,
        pushBatch: o.pushBatch,
        pushWindow: o.pushWindow,
        checksums: o.checksums,
        criu: criu ? { pid: t.pid, regions, lazy, connection: criu.shared } : undefined,
        targetPid: () => targetPid(t.pid),
        key: o.key,
        logger: log,
      }));
      handler.catch(() => {}); // observed below
      prepared.set(t.pid, handler);
      log.info({ pid: t.pid, regions: regions.length }, 'task prepared');
    }
    conn = await acceptOne(listenFd, timeoutMs);
    const started = performance.now();
    const restorePid = native.peerPid(conn);
    restored = new RestoredTree(restorePid);
    const { zombies } = await readRestoreHandoff(conn, {
      pids: [...dump.tasks.map((t) => t.pid), ...(dump.zombies ?? [])],
      timeoutMs,
      onTask: async (pid, uffd) => {
        // Found now, while `criu restore` is still its ancestor: without it, a task that exits
        // before it has every page (--no-push) would keep its handler waiting, and one that cannot
        // be served could not be killed.
        if (restored!.get(pid) === undefined) restored!.refresh(); // the first finds every task: criu forks them all first
        const handler = await prepared.get(pid)!.catch((err: Error) => {
          native.close(uffd);
          throw err;
        });
        // The task's restorer registers its memory after handing the uffd over.
        handler.attach(uffd, { registered: false });
        handlers.push({ pid, handler });
      },
    });
    // RESTORE_FINISHED: every task's memory is registered. The push (and each keeper's start) waits
    // for `criu restore` to exit as well: its last steps (resuming the tasks, letting go of them)
    // are still downtime, and on few CPUs the push took them ~4 ms longer (docs/benchmarks.md).
    // The pages pushed first (a working set, the command line) may go in now, before the tasks run.
    for (const h of handlers) h.handler.pushFirstNow();
    const restoreExitAt = restorePid > 0 && restorePid !== process.pid ? await processExitAt(restorePid, RESTORE_EXIT_WAIT_MS) : null;
    if (restoreExitAt === null) log.info({ pid: restorePid }, 'criu restore not seen to exit after RESTORE_FINISHED: pushing now');
    for (const h of handlers) h.handler.registered();
    const tasks = [];
    for (const h of handlers) {
      const report = await h.handler.done();
      tasks.push({ pid: h.pid, report, forked: await forkedReports(h.handler) });
    }
    complete = true;
    return { tasks, zombies, restoreFinished: true, restoreExitAt, ms: Math.round((performance.now() - started) * 10) / 10 };
  } catch (err) {
    for (const h of prepared.values()) await h.then((x) => x.stop(), () => {});
    throw err;
  } finally {
    if (conn >= 0) native.close(conn);
    native.close(listenFd);
    // Every task and child is done: CRIU's page server may end (and the dump with it).
    await criu?.close(complete);
    await images?.ended();
  }
}
