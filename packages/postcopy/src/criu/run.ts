// What a migration with CRIU needs on either host: the shell commands that wait to run CRIU, the
// tasks found and killed, the result's shape, and Run, which settles a migration whatever failed so
// that exactly one copy of the task runs. Used by migrate() (both ends on this host) and by the
// agent (each end on its own host).
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { PostcopyError } from '../errors.js';
import type { PresharedKey } from '../protocol/auth.js';
import { native } from '../native/index.js';
import type { HandlerReport } from '../target/handler.js';
import type { LineChild } from '../util/child.js';
import { childrenOf, treePids } from '../util/proctree.js';
import type { Logger } from '../util/log.js';
import type { DumpImages } from './image.js';
import type { LazyPagesReport } from './lazy-pages.js';
import { PS_IOV_CLOSE, writeIov } from '../protocol/criu-page-server.js';
import { inCriuRoot } from './root.js';

export const round = (x: number) => Math.round(x * 10) / 10;

export type MigrateMode = 'postcopy' | 'stock';

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
  /** postcopy: faults served before the push was let go (during `criu restore`, and the tasks' first) */
  faults_before_push?: number;
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
export const waitForGo = (argv: string[]) => ['/bin/bash', '-c', 'echo armed; read -r go && [ "$go" = go ] && exec "$@"', 'armed', ...argv];
export const sh = (lines: string[]) => inCriuRoot(['/bin/bash', '-c', lines.join('\n')]);
export const inTaskMounts = (pid: number, lines: string[]) => ['nsenter', '-t', String(pid), '-m', '-r', '/bin/bash', '-c', lines.join('\n')];
/**
 * Waits for CRIU's status byte on fifo $1 while process $2 runs: `ready` only once a byte came (CRIU
 * writes none when it fails: head then returns at EOF), then `NAME exit N` when it ends.
 */
export const readyOnStatus = (fifo: string, pidVar: string, name: string) =>
  `[ "$(head -c1 ${fifo} | wc -c)" = 1 ] && echo ready; wait $${pidVar}; echo "${name} exit $?"`;

/**
 * Shell lines for a lazy dump that waits for go: they make dir's subdirectories `dirs` and the
 * status fifo `st` in dir, say `armed`, read `go`, run `command` (which gives CRIU `--status-fd 9`)
 * with fd 9 on the fifo (D: its pid; `after`: lines run then), and say `ready` once CRIU's status
 * byte came, then `dump exit N`.
 */
export const dumpOnGo = (dir: string, dirs: string[], command: string, after: string[] = []) => [
  `mkdir -p ${dirs.map((d) => `${dir}/${d}`).join(' ')} && cd ${dir} && rm -f st && mkfifo st`,
  'echo armed; read -r go; [ "$go" = go ] || exit 1',
  `${command} 9>st &`,
  'D=$!',
  ...after,
  readyOnStatus('st', 'D', 'dump'),
];

/** The longest path a Unix socket takes (sun_path, less its NUL). */
export const MAX_SOCKET_PATH = 107;
export const KILL_WAIT_MS = 10_000;
export const MAX_TIMEOUT_MS = 2_147_483_647;

/** The error migrate() throws: a PostcopyError (the first failure's) with the copy that runs. */
export function failure(err: unknown, running: Running): MigrateError {
  const e = err instanceof PostcopyError ? err : new PostcopyError('ERR_CRIU', (err as Error)?.message ?? String(err), { cause: err });
  return Object.assign(e, { running });
}

/** Whether a TCP port on 127.0.0.1 is free to listen on. */
export async function portFree(port: number): Promise<boolean> {
  return (await tryLoopbackPort(port)) !== null;
}

/** A TCP port on 127.0.0.1 that was free a moment ago (for CRIU's page server, which picks none itself). */
export async function freePort(): Promise<number> {
  const port = await tryLoopbackPort(0);
  if (port === null) throw new PostcopyError('ERR_CRIU', 'no free TCP port on 127.0.0.1');
  return port;
}

/** Listens on 127.0.0.1:port (0: any) and closes again: the port it got, or null if it could not. */
function tryLoopbackPort(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(null));
    server.listen({ host: '127.0.0.1', port, exclusive: true }, () => {
      const got = (server.address() as { port: number }).port;
      server.close(() => resolve(got));
    });
  });
}

/**
 * How a child process ended ('exit N', 'killed by SIG...'), as soon as it has: LineChild.exited
 * waits for its output to close too, and tasks that `criu restore` left behind hold that open.
 */
export function ended(c: LineChild): Promise<string> {
  const p = c.child;
  const how = (code: number | null, signal: NodeJS.Signals | null) => (signal ? `killed by ${signal}` : `exit ${code}`);
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve(how(p.exitCode, p.signalCode));
  return new Promise((resolve) => {
    p.once('exit', (code, signal) => resolve(how(code, signal)));
    p.once('error', (err) => resolve(`could not start: ${err.message}`));
  });
}

/** A connection to a Unix socket, closed at once. */
export function pokeSocket(path: string): void {
  const fd = native.unixConnect(path);
  if (fd >= 0) native.close(fd);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** p, or null once ms have passed (the timer cleared either way). */
export function within<T>(p: Promise<T>, ms: number): Promise<T | null> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), ms)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Whether a pidfd's process has exited (a zombie counts as exited). */
export const exited = (pidfd: number) => native.pollIn(Int32Array.of(pidfd), 0) !== 0;

/** Whether process pid is there and has not exited. */
export function alive(pid: number): boolean {
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
export async function exitedWithin(pidfd: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!exited(pidfd)) {
    if (Date.now() >= deadline) return false;
    await sleep(2);
  }
  return true;
}

/** Host pids of processes and everything under them (bounded). */
export function withDescendants(roots: Iterable<number>): Set<number> {
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
export function inMountNamespace(ns: string): number[] {
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
export async function killAll(find: () => Iterable<number>, spare: (pid: number) => boolean, ms: number, killed: number[] = []): Promise<boolean> {
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
export class Run {
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
  watchDump(host: string, mode: MigrateMode, log = 'img/dump.log'): void {
    this.#dumpEnded = this.dump!.next((l) => l.startsWith('dump exit'), MAX_TIMEOUT_MS).catch((err: Error) => `dump ${err.message}`);
    void this.#dumpEnded.then((line) => {
      this.dumpEnd = line;
      if (line === 'dump exit 0' && (this.releaseSent || mode === 'stock')) return;
      this.fail(new PostcopyError('ERR_CRIU', `criu dump ended (${line.slice(5)}) before the migration was done, and let the original run again: ${readLog(host, log)}`));
    });
  }

  /** `criu restore`, told to go: it fails the migration at once if it ends badly. */
  watchRestore(restore: LineChild, hostDir: string): void {
    void ended(restore).then((how) => {
      if (how !== 'exit 0') this.fail(new PostcopyError('ERR_CRIU', `criu restore failed (${how}): ${readLog(hostDir, 'img/restore.log')}`));
    });
  }

  /** Waits for the dump to end, as it does once released; it must end well. */
  async dumpEnded(host: string, timeoutMs: number, log = 'img/dump.log'): Promise<void> {
    const line = await within(this.#dumpEnded!, timeoutMs);
    if (line === null) throw new PostcopyError('ERR_TIMEOUT', `criu dump did not end within ${timeoutMs} ms of its release`);
    if (line !== 'dump exit 0') throw new PostcopyError('ERR_CRIU', `criu dump ended badly (${line.slice(5)}): ${readLog(host, log)}`);
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

/**
 * The host pid of each task of the dump: the dump names them by their pids in the tree's own
 * namespace, the sources read them by host pid.
 */
export function frozenTasks(images: DumpImages, root: number): Map<number, number> {
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
export function exitedSince(exitAt: number | null, t0: number, observed: number): number {
  return exitAt === null ? observed : Math.min(observed, exitAt - performance.timeOrigin - t0);
}

/**
 * ms from t0 (this thread's performance.now()) until the last page of every task and forked child
 * was in, as the handlers timed it; the time now if a report has no time (it had nothing to fetch).
 */
export function presentSince(lazy: LazyPagesReport, t0: number): number {
  const times = (lazy.tasks ?? []).flatMap((t) => [t.report, ...t.forked].map((r) => r?.completedAt));
  const at = times.every((x) => typeof x === 'number') && times.length ? Math.max(...(times as number[])) : performance.timeOrigin + performance.now();
  return at - performance.timeOrigin - t0;
}

export const migrationKey = (): PresharedKey => ({ keyId: `migration-${randomBytes(4).toString('hex')}`, key: randomBytes(32) });

/** Pages summed over the tasks; fault latency is the root task's. */
export function postcopyResult(restoredPid: number, downtime: number, allPresent: number, bytesSent: number, lazy: LazyPagesReport): Omit<MigrateResult, 'running'> {
  const r = lazy.tasks[0].report;
  const sum = (f: (x: HandlerReport) => number) => lazy.tasks.reduce((n, t) => n + f(t.report), 0);
  return {
    mode: 'postcopy',
    restoredPid,
    downtime_ms: round(downtime),
    all_present_ms: round(allPresent),
    pages: sum((x) => x.pages),
    faulted: sum((x) => x.faulted),
    faults_before_push: sum((x) => x.faultsBeforePush),
    pushed: sum((x) => x.pushed),
    bytes_sent: bytesSent,
    fault_p50_us: r.latency ? round(r.latency.p50Ns / 1000) : null,
    fault_p99_us: r.latency ? round(r.latency.p99Ns / 1000) : null,
    tasks: lazy.tasks.length,
    forked: lazy.tasks.reduce((n, t) => n + t.forked.length, 0),
    died_of_signal: lazy.tasks.flatMap((t) => [t.report, ...t.forked]).filter((x) => x?.exitSignal).map((x) => ({ pid: x.pid ?? null, signal: x.exitSignal! })),
  };
}

export function readText(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

export function readLog(hostDir: string, file: string, limit = 600): string {
  try {
    const text = readFileSync(join(hostDir, file), 'utf8');
    const errors = text.split('\n').filter((l) => /Error|error/.test(l));
    return (errors.length ? errors.join(' | ') : text).slice(-limit);
  } catch {
    return `(no ${file})`;
  }
}

