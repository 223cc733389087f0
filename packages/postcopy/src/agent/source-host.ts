// What the source host does in a migration between two agents: everything it can before the
// freeze (the task and every option checked, the destination ready with `criu restore` waiting),
// then `criu dump --lazy-pages`, a page server per frozen task, the images sent on the control
// connection, and the dump released once the destination has every page. Exactly one copy runs
// at the end: before the release, a failure has the destination remove what it restored (ABORT)
// before the frozen original is let go.
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PostcopyError } from '../errors.js';
import { AgentType, type MessageOf } from '../protocol/agent.js';
import type { PresharedKey } from '../protocol/auth.js';
import { LiveProcessSource } from '../source/live-process.js';
import { PageServer } from '../source/server.js';
import type { AgentChannel } from '../transport/agent-channel.js';
import { formatEndpoint, TcpTransport } from '../transport/index.js';
import { LineChild } from '../util/child.js';
import type { Logger } from '../util/log.js';
import { treePids } from '../util/proctree.js';
import { lazyLayout, readDump } from '../criu/image.js';
import { packImages } from '../criu/image-transfer.js';
import { checkOptions, DEFAULT_PUSH_BATCH, DEFAULT_PUSH_WINDOW } from '../criu/migrate.js';
import { criuRootDir } from '../criu/root.js';
import { checkpointBehindGate, gateUsable, writeGate } from '../criu/criu-gate.js';
import { containerCgroup, containerState, inRuncRoot, runc, thawCgroupShell, thawContainer, type ContainerState } from '../criu/runc.js';
import { dumpOnGo, failure, freePort, frozenTasks, inTaskMounts, readLog, readText, round, Run, type MigrateError, type Running } from '../criu/run.js';
import { sendBundle } from './bundle.js';
import type { AgentMetrics } from './metrics.js';
import { formatForPrepare, workloadKey, type WorkingSetStore } from './working-sets.js';

export interface SourceRequest {
  /** a process, running in the CRIU root */
  pid?: number;
  /** or a runc container, by id, in runc root runcRoot (default: the agent's) */
  container?: string;
  runcRoot?: string;
  /** send the container's bundle (config.json and rootfs) to the destination, which must not have it */
  copyBundle?: boolean;
  /** the destination agent, as the user named it */
  to: string;
  checksums?: boolean;
  push?: boolean;
  timeoutMs?: number;
}

export interface SourceContext {
  /** this agent's name, and the directory inside the CRIU root where its migrations work */
  name: string;
  workRoot: string;
  /** where this host's runc keeps its containers' state, inside the CRIU root */
  runcRoot: string;
  /** an authenticated channel to the destination agent */
  connect: (to: string) => Promise<AgentChannel>;
  metrics: AgentMetrics;
  logger: Logger;
  /** where the working sets of the workloads that moved here are kept */
  workingSets?: WorkingSetStore;
}

export interface RemoteMigrateResult {
  migration: string;
  to: string;
  restoredPid: number;
  running: 'restored';
  downtime_ms: number;
  all_present_ms: number;
  pages: number;
  faulted: number;
  pushed: number;
  bytes_sent: number;
  image_bytes: number;
  fault_p50_us: number | null;
  fault_p99_us: number | null;
  tasks: number;
  forked: number;
  /** the workload's working set: pages of its last move's record pushed first, and pages recorded in this one */
  working_set: { replayed: number; recorded: number } | null;
  phases: { name: string; ms: number }[];
  /** the destination's steps, ms from the images' arrival there */
  destination_phases: { name: string; ms: number }[];
}

const DEFAULT_TIMEOUT_MS = 120_000;
const ABORT_WAIT_MS = 20_000;
/** How long a source waits, after a failed ABORT, for the destination's page connections to close. */
const DISCONNECT_WAIT_MS = 15_000;

/** Summed and picked from the destination's DONE: what the report says of the pages. */
interface DoneReport {
  phases?: { name: string; ms: number }[];
  workingSet?: { replayed: number; recorded: number };
  tasks: { pid: number; pages: number; faulted: number; pushed: number; complete: boolean; exited: boolean; forked: number; p50Ns: number | null; p99Ns: number | null }[];
}

export class SourceMigration {
  readonly id = `m-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  readonly phases: { name: string; ms: number }[] = [];
  #t0 = 0;

  constructor(
    readonly request: SourceRequest,
    readonly ctx: SourceContext,
    readonly onPhase: (name: string, ms: number) => void = () => {},
  ) {}

  /** the migration's start: phases are timed from it (the freeze is a phase of its own) */
  readonly #started = performance.now();

  #phase(name: string): void {
    const ms = round(performance.now() - this.#started);
    this.phases.push({ name, ms });
    this.onPhase(name, ms);
  }

  /** Resolves once the restored tree alone runs on the destination; throws a MigrateError (which copy runs). */
  async run(): Promise<RemoteMigrateResult> {
    const r = this.request;
    const log = this.ctx.logger.child({ migration: this.id });
    const timeoutMs = r.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const workDir = `${this.ctx.workRoot}/${this.id}`;
    const host = join(criuRootDir(), workDir);
    const criuPort = await freePort();
    let pidfd: number;
    let pid: number;
    let container: ContainerState | null = null;
    /** the container's cgroup: frozen on go, just before CRIU's DUMP (checkpointBehindGate) */
    let cgroup: string | null = null;
    try {
      if ((r.pid === undefined) === (r.container === undefined)) throw new PostcopyError('ERR_INVALID_ARG', 'give a pid or a container, not both');
      if (r.container !== undefined) {
        container = await containerState(this.ctx.name, r.runcRoot ?? this.ctx.runcRoot, r.container);
        cgroup = containerCgroup(r.runcRoot ?? this.ctx.runcRoot, r.container);
      }
      pid = container ? container.pid : r.pid!;
      if (r.copyBundle && !r.container) throw new PostcopyError('ERR_INVALID_ARG', '--copy-bundle goes with --container');
      pidfd = await checkOptions({ pid, workDir, criuPort, timeoutMs, checksums: r.checksums, push: r.push }, 'postcopy', timeoutMs, !!container);
    } catch (err) {
      throw failure(err, 'original');
    }
    // CRIU's log: runc has it write its logs into the work path, apart from the images.
    const dumpLog = container ? 'work/dump.log' : 'img/dump.log';
    const run = new Run(pid, pidfd, join(host, 'no-restore-here.pid'), log);
    const children: LineChild[] = [];
    const servers: PageServer[] = [];
    let ch: AgentChannel | null = null;
    let restoreSent = false;
    const key: PresharedKey = { keyId: this.id, key: randomBytes(32) };
    // The workload's working set (its last move's record, if it came here by one) goes with it.
    const workload = this.ctx.workingSets ? workloadKey({ container: container?.id, pid }) : null;
    const workingSet = workload ? this.ctx.workingSets!.load(workload) : null;
    try {
      // The destination first: refused (a certificate, no CRIU, a bad request), nothing froze.
      ch = await this.ctx.connect(r.to);
      const dest = ch;
      this.#phase('connected');
      dest.send({
        type: AgentType.PREPARE,
        migration: this.id,
        keyId: key.keyId,
        key: Buffer.from(key.key).toString('hex'),
        tasks: treePids(pid).size,
        ...(container ? { container: container.id, bundle: container.bundle, ...(r.copyBundle ? { copyBundle: true } : {}) } : {}),
        checksums: r.checksums ?? true,
        push: r.push ?? true,
        pushBatch: DEFAULT_PUSH_BATCH,
        pushWindow: DEFAULT_PUSH_WINDOW,
        timeoutMs,
        ...(workload ? { workload } : {}),
        ...(workingSet ? { workingSet: formatForPrepare(workingSet) } : {}),
      });
      // --copy-bundle: the first pass now, the container running; the changes since, in the downtime.
      let bundleSince = 0;
      if (container && r.copyBundle) {
        bundleSince = Date.now() - 2000; // mtime is in whole seconds: a margin, not a gap
        const bytes = await sendBundle(dest, join(criuRootDir(), container.bundle));
        this.#phase(`bundle sent (${bytes} bytes)`);
      }
      const prepared = await dest.next([AgentType.PREPARED], timeoutMs);
      // Half a round trip: the images' way to the destination, counted in the downtime.
      const oneWay = (await roundTrip(dest)) / 2;
      this.#phase('destination ready');
      // A container's checkpoint starts now, its freeze held back at the gate (criu/criu-gate.ts).
      let gate: string | null = null;
      if (container && gateUsable()) {
        mkdirSync(host, { recursive: true });
        gate = writeGate(host, workDir);
      }
      const dump = new LineChild('criu dump', container ? checkpointArgv(this.ctx.name, r.runcRoot ?? this.ctx.runcRoot, container.id, workDir, criuPort, gate, cgroup) : dumpArgv(pid, workDir, criuPort));
      children.push(dump);
      run.dump = dump;
      // Threads start before the freeze, not in the downtime: a connection thread at each end of
      // each of a task's two connections (faults, push).
      await PageServer.prestartThreads(2 * treePids(pid).size);
      const armed = await dump.next((l) => l === 'armed' || l.startsWith('dump exit'), timeoutMs);
      if (armed !== 'armed') throw new PostcopyError('ERR_CRIU', `the dump failed before the freeze (${armed.slice(5)}): ${dump.stderr.split('\n').slice(-3).join(' ') || readLog(host, dumpLog)}`);
      if (gate) {
        this.#phase('checkpoint started, its freeze held');
        // runc wrote descriptors.json before its DUMP: the destination's `runc restore` starts with
        // it. (Without it, the destination starts its restore once the images are there.)
        const descriptors = prepared.restoreGate ? readText(join(host, 'img', 'descriptors.json')) : '';
        if (descriptors) {
          dest.send({ type: AgentType.CHECKPOINT_HELD, descriptors });
          await dest.next([AgentType.RESTORE_HELD], timeoutMs);
          this.#phase('restore started, held until the images');
        }
      }
      run.guard();
      // The destination's end of the channel failing from here fails the migration at once.
      void dest.ended.then((err) => run.fail(err));
      this.#t0 = performance.now();
      this.#phase('frozen');
      run.frozen = true;
      dump.send('go');
      const said = await dump.next((l) => l === 'ready' || l.startsWith('dump exit'), timeoutMs).catch((err: Error) => {
        throw new PostcopyError('ERR_CRIU', `criu dump failed: ${err.message}; ${readLog(host, dumpLog)}`);
      });
      if (said !== 'ready') throw new PostcopyError('ERR_CRIU', `criu dump failed (${said.slice(5)}): ${readLog(host, dumpLog)}`);
      run.watchDump(host, 'postcopy', dumpLog);
      this.#phase('dumped');
      if (bundleSince) {
        const bytes = await sendBundle(dest, join(criuRootDir(), container!.bundle), bundleSince);
        this.#phase(`bundle changes sent (${bytes} bytes)`);
      }
      // A page server per frozen task, on the address the destination reached us from.
      const images = readDump(join(host, 'img'));
      const frozen = frozenTasks(images, pid);
      const address = dest.socket.localAddress?.replace(/^::ffff:/, '') ?? '127.0.0.1';
      const sources: { pid: number; endpoint: string }[] = [];
      for (const t of images.tasks) {
        const { regions, lazy } = lazyLayout(images.mms.get(t.pid)!, images.pagemaps.get(t.pid)!);
        const source = await LiveProcessSource.attach(frozen.get(t.pid)!, { freeze: 'none', ranges: regions, touched: lazy, pageSize: 4096 });
        const server = new PageServer(source, { logger: log, grants: [key] });
        servers.push(server);
        const { endpoint } = await server.listen(new TcpTransport(address, 0));
        sources.push({ pid: t.pid, endpoint: formatEndpoint(endpoint) });
      }
      run.guard();
      const packed = packImages(join(host, 'img'));
      dest.send({ type: AgentType.IMAGES, data: packed });
      dest.send({ type: AgentType.RESTORE, sources });
      restoreSent = true;
      this.ctx.metrics.imageBytes.inc({ role: 'source' }, packed.length);
      const imagesSent = performance.now() - this.#t0;
      this.#phase('images sent');
      const restored = await dest.next([AgentType.RESTORED], timeoutMs, run.failure);
      // Downtime on the two clocks, each timing its own part: freeze -> images sent here, the
      // images' way there, then arrival -> `criu restore` exited there. (When RESTORED arrives here
      // is later by its own way back, longer still when the link is slow or cut.)
      const downtime = imagesSent + oneWay + restored.restoreMs;
      this.#phase('restored');
      const done = await dest.next([AgentType.DONE], timeoutMs, run.failure);
      const allPresent = performance.now() - this.#t0;
      const report = done.report as unknown as DoneReport;
      if (!done.complete) throw new PostcopyError('ERR_CRIU', `the destination did not get every page: ${JSON.stringify(report).slice(0, 400)}`);
      run.guard();
      if (run.dumpEnd !== null) throw new PostcopyError('ERR_CRIU', `criu dump ended (${run.dumpEnd}) before its release`);
      run.allPresent = true;
      this.#phase('all pages present');
      // The original goes: CRIU kills it as its dump ends.
      run.release(criuPort);
      await run.dumpEnded(host, timeoutMs, dumpLog);
      await run.confirmOriginalGone();
      this.#phase('released');
      try {
        dest.send({ type: AgentType.COMMIT });
        await dest.next([AgentType.COMMITTED], 10_000);
      } catch (err) {
        // The restored tree has every page and the original is gone: it is the task now, whatever the channel says.
        log.warn({ err: (err as Error).message }, 'no COMMITTED from the destination');
      }
      // The workload left: its record went with it (the destination keeps it now).
      if (workload) this.ctx.workingSets!.remove(workload);
      const bytesSent = servers.reduce((n, s) => n + s.stats.bytesSent, 0);
      // Done: the images and CRIU's logs go (the ledger keeps the report); a failure keeps them for inspection.
      rmSync(host, { recursive: true, force: true });
      return summarize(this, r.to, restored, report, downtime, allPresent, bytesSent, packed.length);
    } catch (err) {
      run.fail(err);
      const running = await this.#settle(run, ch, restoreSent, children, servers, log);
      // The dump may have left the container's cgroup frozen (it was frozen on go): it runs again.
      if (running === 'original' && cgroup && run.frozen && !(await thawContainer(this.ctx.name, cgroup))) log.error({ cgroup }, 'could not thaw the container\'s cgroup');
      throw failure(run.failed, running) as MigrateError;
    } finally {
      run.end();
      for (const c of children) c.kill();
      for (const s of servers) await s.close();
      ch?.close();
      run.close();
    }
  }

  /**
   * After a failure, exactly one copy: once released, the restored tree (it has every page); else
   * the destination removes its copy (ABORT) before the dump lets the original go. A destination
   * that cannot say ABORTED (gone, cut off) kills its copy when it loses the channel; its page
   * connections closing is the sign of it, waited for before the original runs.
   */
  async #settle(run: Run, ch: AgentChannel | null, restoreSent: boolean, children: LineChild[], servers: PageServer[], log: Logger): Promise<Running> {
    if (run.releaseSent) return 'restored';
    let clean = !restoreSent;
    if (ch && !ch.closed) {
      try {
        ch.send({ type: AgentType.ABORT, reason: (run.failed as Error)?.message ?? 'failed' });
        const aborted = await ch.next([AgentType.ABORTED], ABORT_WAIT_MS);
        clean = aborted.clean;
        log.info({ killed: aborted.killed, clean }, 'the destination removed what it restored');
      } catch (err) {
        log.warn({ err: (err as Error).message }, 'no ABORTED from the destination');
      }
    }
    if (!clean) {
      const deadline = Date.now() + DISCONNECT_WAIT_MS;
      while (servers.some((s) => s.openConnections > 0) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      if (servers.some((s) => s.openConnections > 0)) {
        // A destination still reading pages may run the task: the original must not run beside it.
        log.error('the destination still holds page connections and did not confirm its copy is gone: the original stays frozen');
        for (const c of children) if (c !== run.dump) c.kill();
        run.dump?.kill('SIGSTOP');
        return 'none';
      }
    }
    return run.settle(children);
  }
}

function summarize(m: SourceMigration, to: string, restored: MessageOf<AgentType.RESTORED>, report: DoneReport, downtime: number, allPresent: number, bytesSent: number, imageBytes: number): RemoteMigrateResult {
  const sum = (f: (t: DoneReport['tasks'][number]) => number) => report.tasks.reduce((n, t) => n + f(t), 0);
  const root = report.tasks[0];
  return {
    migration: m.id,
    to,
    restoredPid: restored.restoredPid,
    running: 'restored',
    downtime_ms: round(downtime),
    all_present_ms: round(allPresent),
    pages: sum((t) => t.pages),
    faulted: sum((t) => t.faulted),
    pushed: sum((t) => t.pushed),
    bytes_sent: bytesSent,
    image_bytes: imageBytes,
    fault_p50_us: root?.p50Ns != null ? round(root.p50Ns / 1000) : null,
    fault_p99_us: root?.p99Ns != null ? round(root.p99Ns / 1000) : null,
    tasks: report.tasks.length,
    forked: sum((t) => t.forked),
    working_set: report.workingSet ?? null,
    phases: m.phases,
    destination_phases: report.phases ?? [],
  };
}


/** One round trip on the channel, ms (PREPARE's is not one: the destination works before it answers). */
async function roundTrip(ch: AgentChannel): Promise<number> {
  const t = performance.now();
  ch.send({ type: AgentType.PING });
  await ch.next([AgentType.PONG], 10_000);
  return performance.now() - t;
}

/** `criu dump --lazy-pages` of a process, waiting in the task's mount namespace for go (CRIU must dump from there). */
function dumpArgv(pid: number, workDir: string, criuPort: number): string[] {
  return inTaskMounts(pid, dumpOnGo(workDir, ['img'], `criu dump -t ${pid} -D img --lazy-pages --address 127.0.0.1 --port ${criuPort} --status-fd 9 -o dump.log`, [orphanWatch()]));
}

/**
 * `runc checkpoint --lazy-pages` of a container in the CRIU root: images in img, CRIU's logs in
 * work. With a gate (runc's --criu, see criu/criu-gate.ts), runc starts now and its DUMP waits for
 * go; without one, runc itself waits for go.
 */
function checkpointArgv(host: string, runcRoot: string, id: string, workDir: string, criuPort: number, gate: string | null, cgroup: string | null): string[] {
  const args = ['checkpoint', '--lazy-pages', '--page-server', `127.0.0.1:${criuPort}`, '--status-fd', '9', '--image-path', `${workDir}/img`, '--work-path', `${workDir}/work`, id];
  const lines = gate
    ? checkpointBehindGate(workDir, ['img', 'work'], runc(runcRoot, ['--criu', gate, ...args]).join(' '), [orphanWatch(cgroup)], cgroup)
    : dumpOnGo(workDir, ['img', 'work'], runc(runcRoot, args).join(' '), [orphanWatch()]);
  return inRuncRoot(host, ['/bin/bash', '-c', lines.join('\n')]);
}

/**
 * If this agent dies during the migration, its dump must not keep the task frozen for ever: a
 * watcher in the dump's shell kills the shell's whole process group (CRIU with it, which lets the
 * task run again) once the agent is gone. It waits 2 s first, so that the destination, which has
 * lost the agent's connection too, has removed whatever it restored. A container's cgroup, which
 * the dump's shell froze, is thawed first.
 */
function orphanWatch(cgroup: string | null = null): string {
  const thaw = cgroup ? `${thawCgroupShell(cgroup)}; ` : '';
  return `( while kill -0 ${process.pid} && kill -0 $D; do sleep 0.2; done 2>/dev/null; kill -0 $D 2>/dev/null || exit 0; sleep 2; ${thaw}kill -9 0 ) </dev/null >/dev/null 2>&1 &`;
}
