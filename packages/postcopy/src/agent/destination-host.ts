// What the destination host does in a migration between two agents: on PREPARE, a work directory,
// `criu restore --lazy-pages` waiting in the CRIU root (its mounts made) and the fault threads
// started, all before the source freezes; on IMAGES and RESTORE, the images written, the restore
// let go, and our lazy-pages daemon serving each restored task from the source's page servers.
// Until the source says COMMIT, whatever goes wrong (an ABORT, a failure here, the channel lost)
// ends with every restored task killed and seen dead: the source still holds the original.
import { existsSync, mkdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PostcopyError } from '../errors.js';
import { native } from '../native/index.js';
import { AgentType, type MessageOf } from '../protocol/agent.js';
import { isName } from '../protocol/schema.js';
import { FaultHandler } from '../target/handler.js';
import type { AgentChannel } from '../transport/agent-channel.js';
import { parseEndpoint } from '../transport/index.js';
import { LineChild } from '../util/child.js';
import type { Logger } from '../util/log.js';
import { treeMember } from '../util/proctree.js';
import { readDump } from '../criu/image.js';
import { unpackImages } from '../criu/image-transfer.js';
import { LAZY_PAGES_SOCKET, listenForRestore, serveLazyPages, type LazyPagesReport } from '../criu/lazy-pages.js';
import { criuRootDir, inCriuRoot } from '../criu/root.js';
import { behindGate, GatedRequest, gateUsable, writeGate } from '../criu/criu-gate.js';
import { checkBundle, checkContainerId, checkPathInRoot, inRuncRoot, runc, runRunc } from '../criu/runc.js';
import { receiveBundle } from './bundle.js';
import { ended, inMountNamespace, killAll, pokeSocket, readLog, round, waitForGo, withDescendants, within } from '../criu/run.js';
import type { AgentMetrics } from './metrics.js';
import { isWorkloadKey, parsePrepared, type WorkingSetStore } from './working-sets.js';
import { mergeWorkingSets, type WorkingSet } from '../protocol/working-set.js';

export interface DestinationContext {
  name: string;
  workRoot: string;
  /** where runc keeps this host's containers, inside the CRIU root */
  runcRoot: string;
  metrics: AgentMetrics;
  logger: Logger;
  /** where the working sets of the workloads that moved here are kept */
  workingSets?: WorkingSetStore;
}

export type DestinationState = 'preparing' | 'prepared' | 'restoring' | 'running' | 'done' | 'committed' | 'aborted' | 'failed';

const KILL_WAIT_MS = 10_000;
/** After RESTORE, how long COMMIT may take: the source releases its dump and sees the original gone. */
const COMMIT_WAIT_MS = 120_000;

export class DestinationMigration {
  state: DestinationState = 'preparing';
  restoredPid = 0;
  report: Record<string, unknown> | null = null;
  error: { code: string; message: string } | null = null;
  /** the steps from the images' arrival on (ms since then): the part of the downtime spent here */
  readonly phases: { name: string; ms: number }[] = [];
  #t0 = 0;
  #restore: LineChild | null = null;
  #restoreNs: string | null = null;
  #listenFd = -1;
  #host = '';
  #socketDir = '';
  /** the bundle came with this migration (--copy-bundle): removed if it fails */
  #copiedBundle = false;

  constructor(
    readonly prepare: MessageOf<AgentType.PREPARE>,
    readonly ch: AgentChannel,
    readonly ctx: DestinationContext,
  ) {}

  get id(): string {
    return this.prepare.migration;
  }

  /** Runs the migration to its end (committed, or aborted with nothing left behind). Never throws. */
  async run(): Promise<void> {
    const p = this.prepare;
    const log = this.ctx.logger.child({ migration: p.migration, from: this.ch.peer });
    let lazy: Promise<LazyPagesReport> | null = null;
    try {
      if (!isName(p.migration)) throw new PostcopyError('ERR_INVALID_ARG', `migration id ${JSON.stringify(p.migration)}: letters, digits, '.', '_' and '-' only`);
      const key = { keyId: p.keyId, key: Buffer.from(p.key, 'hex') };
      if (key.key.length < 16) throw new PostcopyError('ERR_INVALID_ARG', 'the migration key has fewer than 16 bytes');
      const workDir = `${this.ctx.workRoot}/${p.migration}`;
      this.#host = join(criuRootDir(), workDir);
      const img = join(this.#host, 'img');
      rmSync(this.#host, { recursive: true, force: true });
      mkdirSync(img, { recursive: true });
      // What the downtime needs is ready before the source freezes.
      // A container's bundle must be here already, or come now (--copy-bundle), before the source
      // freezes anything: refused now, the task runs on there.
      if (p.container !== undefined) {
        checkContainerId(p.container);
        if (p.copyBundle) await this.#receiveBundle(p.bundle ?? '', p.timeoutMs);
        checkBundle(p.bundle ?? '');
      } else if (p.copyBundle) throw new PostcopyError('ERR_INVALID_ARG', 'copyBundle goes with a container');
      // A container's `runc restore` can start before the images, its RESTORE held at the gate, once
      // the source's checkpoint (held too) has written runc's descriptors.json: CHECKPOINT_HELD.
      const restoreGate = p.container !== undefined && gateUsable();
      if (!restoreGate) await this.#startRestore(workDir, null, p.timeoutMs);
      // CRIU connects to lazy-pages.socket in its work directory: runc gives it one apart from the images.
      this.#socketDir = p.container !== undefined ? join(this.#host, 'work') : img;
      mkdirSync(this.#socketDir, { recursive: true });
      this.#listenFd = listenForRestore(this.#socketDir);
      await FaultHandler.prestartThreads(2 * Math.max(1, p.tasks));
      this.state = 'prepared';
      this.ch.send({ type: AgentType.PREPARED, migration: p.migration, ...(restoreGate ? { restoreGate } : {}) });

      // Before the images: PINGs (a round trip timed), with --copy-bundle the files changed since
      // the first pass, and CHECKPOINT_HELD.
      const before = [AgentType.IMAGES, AgentType.ABORT, AgentType.PING, AgentType.BUNDLE, AgentType.BUNDLE_END, AgentType.CHECKPOINT_HELD] as const;
      let images = await this.ch.next(before, p.timeoutMs);
      for (let steps = 0; images.type !== AgentType.IMAGES && images.type !== AgentType.ABORT; steps++) {
        if (steps >= 16) throw new PostcopyError('ERR_PROTOCOL', `${steps} messages, and no IMAGES`);
        if (images.type === AgentType.PING) this.ch.send({ type: AgentType.PONG });
        else if (images.type === AgentType.CHECKPOINT_HELD) {
          if (!restoreGate || this.#restore) throw new PostcopyError('ERR_PROTOCOL', 'a CHECKPOINT_HELD that was not asked for');
          writeFileSync(join(img, RUNC_DESCRIPTORS), checkDescriptors(images.descriptors));
          await this.#startRestore(workDir, writeGate(this.#host, workDir), p.timeoutMs);
          this.ch.send({ type: AgentType.RESTORE_HELD });
        } else {
          if (!this.#copiedBundle) throw new PostcopyError('ERR_PROTOCOL', 'a bundle stream that was not asked for');
          await receiveBundle(this.ch, join(criuRootDir(), p.bundle!), true, p.timeoutMs, images);
        }
        images = await this.ch.next(before, p.timeoutMs);
      }
      if (images.type === AgentType.ABORT) throw new Aborted(images.reason);
      this.#t0 = performance.now();
      // A source that held no checkpoint (it has no gate): `runc restore` starts now, in the downtime.
      if (!this.#restore) await this.#startRestore(workDir, null, p.timeoutMs);
      const restore = this.#restore!;
      if (this.#copiedBundle) this.#mark('bundle changes written (before the images)');
      unpackImages(Buffer.from(images.data.buffer, images.data.byteOffset, images.data.length), img);
      this.ctx.metrics.imageBytes.inc({ role: 'destination' }, images.data.length);
      const dump = readDump(img);
      this.#mark('images written');
      const order = await this.ch.next([AgentType.RESTORE, AgentType.ABORT], p.timeoutMs);
      if (order.type === AgentType.ABORT) throw new Aborted(order.reason);
      this.#mark('restore ordered');
      const sources = new Map(order.sources.map((s) => [s.pid, parseEndpoint(s.endpoint)]));
      // The workload's working set: the last move's, pushed first; this move's, recorded.
      const workload = p.workload !== undefined && isWorkloadKey(p.workload) && this.ctx.workingSets ? p.workload : null;
      const replay = workload ? parsePrepared(p.workingSet, log) : null;
      for (const t of dump.tasks) if (!sources.get(t.pid) || sources.get(t.pid)!.kind !== 'tcp') throw new PostcopyError('ERR_INVALID_ARG', `RESTORE names no tcp:// source for task ${t.pid} of the dump`);
      this.state = 'restoring';
      lazy = serveLazyPages({
        imagesDir: img,
        dump,
        source: { kind: 'postcopy', endpoint: (pid) => sources.get(pid)! },
        push: p.push,
        pushBatch: p.pushBatch,
        pushWindow: p.pushWindow,
        checksums: p.checksums,
        ...(replay?.pageSize === 4096 ? { workingSet: replay } : {}),
        recordTouches: workload !== null,
        targetPid: treeMember(() => this.restoredPid || undefined),
        key,
        timeoutMs: p.timeoutMs,
        logger: log,
        listenFd: this.#listenFd,
      });
      this.#listenFd = -1; // serveLazyPages closes it
      lazy.catch(() => {}); // observed below
      // The source may ABORT, or the channel end, at any time from here.
      const control = this.ch.next([AgentType.COMMIT, AgentType.ABORT], COMMIT_WAIT_MS + p.timeoutMs);
      control.catch(() => {});
      restore.send('go');
      this.#mark('restore started');
      // Downtime ends as `criu restore -d` exits (the tasks run): seen on its exit, not once its output closes.
      const exit = ended(restore);
      const how = await Promise.race([exit, control.then(stopped)]);
      const restoreExited = performance.now() - this.#t0;
      this.#mark('restore exited');
      if (how !== 'exit 0') throw new PostcopyError('ERR_CRIU', `criu restore failed (${how}): ${readLog(this.#host, this.prepare.container !== undefined ? 'work/restore.log' : 'img/restore.log')}`);
      let pid = 0;
      try {
        pid = Number(readFileSync(join(this.#host, 'restored.pid'), 'utf8').trim());
      } catch {
        // said below
      }
      if (!(pid > 0)) throw new PostcopyError('ERR_CRIU', `criu restore wrote no pid: ${readLog(this.#host, this.prepare.container !== undefined ? 'work/restore.log' : 'img/restore.log')}`);
      this.restoredPid = pid;
      this.state = 'running';
      this.ch.send({ type: AgentType.RESTORED, restoredPid: pid, restoreMs: round(restoreExited) });
      this.#mark('restored said');
      const result = await Promise.race([lazy, control.then(stopped)]);
      lazy = null;
      const tasks = result.tasks.map((t) => ({
        pid: t.pid,
        pages: t.report.pages,
        faulted: t.report.faulted,
        pushed: t.report.pushed,
        complete: !!t.report.complete,
        exited: !!t.report.exited,
        forked: t.forked.length,
        p50Ns: t.report.latency?.p50Ns ?? null,
        p99Ns: t.report.latency?.p99Ns ?? null,
      }));
      const complete = tasks.length > 0 && result.tasks.every((t) => t.report.complete || t.report.exited);
      for (const t of result.tasks) {
        this.ctx.metrics.faulted.inc(t.report.faulted);
        this.ctx.metrics.pushed.inc(t.report.pushed);
        for (const r of [t.report, ...t.forked]) this.ctx.metrics.observeFaults(r.latency);
      }
      const recorded: WorkingSet = { pageSize: 4096, tasks: new Map(result.tasks.map((t) => [t.pid, t.report.touched ?? []])) };
      const workingSet = workload ? { replayed: sumPages(replay), recorded: sumPages(recorded) } : undefined;
      this.report = { tasks, zombies: result.zombies, phases: this.phases, ...(workingSet ? { workingSet } : {}) };
      this.state = 'done';
      this.ch.send({ type: AgentType.DONE, complete, report: this.report });
      const end = await control;
      if (end.type === AgentType.ABORT) throw new Aborted(end.reason);
      this.state = 'committed';
      // The workload lives here now: its record is kept for its next move.
      if (workload) this.ctx.workingSets!.save(workload, mergeWorkingSets(replay, recorded));
      // The restored tree runs on its own: its images and the restore's logs go (a failure keeps them).
      rmSync(this.#host, { recursive: true, force: true });
      this.ch.send({ type: AgentType.COMMITTED });
      log.info({ restoredPid: pid }, 'migration committed');
    } catch (err) {
      const e = err as PostcopyError;
      this.error = { code: e instanceof Aborted ? 'ABORTED' : (e.code ?? 'ERR_CRIU'), message: e.message };
      log.warn({ err: e.message }, 'migration aborted on the destination');
      const { clean, killed } = await this.#removeRestored(lazy);
      this.state = err instanceof Aborted ? 'aborted' : 'failed';
      if (!this.ch.closed) {
        if (!(err instanceof Aborted)) this.ch.send({ type: AgentType.ERROR, code: e.code ?? 'ERR_CRIU', message: e.message });
        // The source waits for this (after its ABORT) before it lets the original run.
        try {
          if (err instanceof Aborted) this.ch.send({ type: AgentType.ABORTED, clean, killed });
          else {
            const abort = await this.ch.next([AgentType.ABORT], 30_000).catch(() => null);
            if (abort) this.ch.send({ type: AgentType.ABORTED, clean, killed });
          }
        } catch {
          // the channel is gone: the source sees our page connections close
        }
      }
    } finally {
      if (this.#listenFd >= 0) native.close(this.#listenFd);
      this.#restore?.kill();
      this.ch.close();
    }
  }

  #mark(name: string): void {
    this.phases.push({ name, ms: round(performance.now() - this.#t0) });
  }

  /** Starts the restore (see #restoreArgv), and waits until it waits for go in a mount namespace of its own. */
  async #startRestore(workDir: string, gate: string | null, timeoutMs: number): Promise<void> {
    const restore = new LineChild('criu restore', this.#restoreArgv(workDir, gate));
    this.#restore = restore;
    const armed = await restore.next((l) => l === 'armed' || l.startsWith('restore exit'), timeoutMs);
    if (armed !== 'armed') throw new PostcopyError('ERR_CRIU', `runc restore failed before its images came (${armed.slice(8)}): ${restore.stderr.split('\n').slice(-3).join(' ')}`);
    this.#restoreNs = readlinkSync(`/proc/${restore.child.pid}/ns/mnt`);
    if (this.#restoreNs === readlinkSync('/proc/self/ns/mnt')) throw new PostcopyError('ERR_CRIU', 'criu restore runs in this agent\'s mount namespace, not one of its own');
  }

  /**
   * `criu restore --lazy-pages` (or `runc restore --lazy-pages` of a container), waiting for go. With
   * a gate (runc's --criu), runc starts at once and its RESTORE waits for go (criu/criu-gate.ts).
   */
  #restoreArgv(workDir: string, gate: string | null): string[] {
    const p = this.prepare;
    if (p.container === undefined) return inCriuRoot(waitForGo(['criu', 'restore', '-D', `${workDir}/img`, '--lazy-pages', '-d', '--pidfile', `${workDir}/restored.pid`, '-o', 'restore.log']));
    const args = ['restore', '--lazy-pages', '-d', '--image-path', `${workDir}/img`, '--work-path', `${workDir}/work`, '--bundle', p.bundle!, '--pid-file', `${workDir}/restored.pid`, p.container];
    if (!gate) return inRuncRoot(this.ctx.name, waitForGo(runc(this.ctx.runcRoot, args)));
    const command = runc(this.ctx.runcRoot, ['--criu', gate, ...args]).join(' ');
    // No go (this agent died): runc ends before its RESTORE, and what it made of the container goes.
    const onGiveUp = [`${runc(this.ctx.runcRoot, ['delete', '-f', p.container]).join(' ')} >/dev/null 2>&1`];
    return inRuncRoot(this.ctx.name, ['/bin/bash', '-c', behindGate({ dir: workDir, request: GatedRequest.RESTORE, name: 'restore', command, end: ['wait $D; exit $?'], onGiveUp }).join('\n')]);
  }

  /** --copy-bundle: the first pass, into a bundle path that must not exist here yet. */
  async #receiveBundle(bundle: string, timeoutMs: number): Promise<void> {
    checkPathInRoot('bundle', bundle);
    const dir = join(criuRootDir(), bundle);
    if (existsSync(dir)) throw new PostcopyError('ERR_INVALID_ARG', `a bundle is at ${bundle} on ${this.ctx.name} already: without --copy-bundle it is used as it is`);
    mkdirSync(dir, { recursive: true });
    this.#copiedBundle = true;
    const bytes = await receiveBundle(this.ch, dir, false, timeoutMs);
    this.ctx.logger.info({ bundle, bytes }, 'bundle received');
  }

  /** Kills `criu restore` and every task it made (with their children), each seen dead. */
  async #removeRestored(lazy: Promise<LazyPagesReport> | null): Promise<{ clean: boolean; killed: number[] }> {
    this.#restore?.kill();
    const killed: number[] = [];
    const find = () => {
      const roots: number[] = [];
      let root = this.restoredPid;
      if (!root) {
        try {
          root = Number(readFileSync(join(this.#host, 'restored.pid'), 'utf8').trim()) || 0;
        } catch {
          // not restored
        }
      }
      if (root > 0) roots.push(root);
      if (this.#restoreNs) roots.push(...inMountNamespace(this.#restoreNs));
      return withDescendants(roots);
    };
    let clean = await killAll(find, () => false, KILL_WAIT_MS, killed);
    // A container: whatever runc made of it goes too (its state; tasks the pid file did not name).
    if (this.prepare.container !== undefined) {
      const r = await runRunc(this.ctx.name, this.ctx.runcRoot, ['delete', '-f', this.prepare.container], KILL_WAIT_MS);
      if (r.status !== 0 && !/does not exist|not exist/.test(r.stderr)) clean = false;
    }
    // Our lazy-pages daemon ends once its tasks are gone (or, still waiting for the restore, on a poke).
    if (lazy) {
      pokeSocket(join(this.#socketDir, LAZY_PAGES_SOCKET));
      await within(lazy.catch(() => null), KILL_WAIT_MS);
    }
    if (this.#copiedBundle) rmSync(join(criuRootDir(), this.prepare.bundle!), { recursive: true, force: true });
    return { clean, killed };
  }
}

const sumPages = (ws: WorkingSet | null) => (ws ? [...ws.tasks.values()].reduce((n, pages) => n + pages.length, 0) : 0);

/** What `runc checkpoint` writes beside the images, and `runc restore` reads before anything else. */
const RUNC_DESCRIPTORS = 'descriptors.json';

/** runc's descriptors.json, as CHECKPOINT_HELD brings it: a JSON array of strings (the init's stdio), small. */
function checkDescriptors(text: string): string {
  let ok = text.length <= 65_536;
  try {
    const v = ok ? (JSON.parse(text) as unknown) : null;
    ok = Array.isArray(v) && v.every((x) => typeof x === 'string');
  } catch {
    ok = false;
  }
  if (!ok) throw new PostcopyError('ERR_PROTOCOL', `CHECKPOINT_HELD: descriptors is runc's descriptors.json (a JSON array of strings), not ${JSON.stringify(text.slice(0, 80))}`);
  return text;
}

/** The source said ABORT: not a failure of ours. */
class Aborted extends Error {
  constructor(reason: string) {
    super(`the source aborted: ${reason}`);
  }
}

/** A COMMIT or ABORT that came before its time, or the channel's end: the migration stops. */
function stopped(m: MessageOf<AgentType.COMMIT> | MessageOf<AgentType.ABORT>): never {
  if (m.type === AgentType.ABORT) throw new Aborted(m.reason);
  throw new PostcopyError('ERR_PROTOCOL', 'COMMIT before every page was present');
}
