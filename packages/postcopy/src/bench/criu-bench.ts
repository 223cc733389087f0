// `postcopy bench --criu`: stock CRIU lazy-pages against postcopy on the same workloads, in the
// same run, runs alternating: memproc (a memory-heavy process that keeps checking every page),
// redis (digest compared before and after; GETs of uniform keys during post-copy) and redis-zipf
// (the same, its GETs drawn from a Zipf distribution: a hot set). With --working-set each postcopy
// run migrates the workload twice, the second time pushing first what it touched the first time.
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PostcopyError } from '../errors.js';
import { migrate, type MigrateMode, type MigrateResult } from '../criu/migrate.js';
import { checkPushSettings } from '../target/handler.js';
import { criuRootDir, ensureCriuRoot, inCriuRoot, withPipeSize } from '../criu/root.js';
import { LineChild } from '../util/child.js';
import { median, migrationTables, summarizeMigrations, type Ratio, type SummaryRow } from './migration-summary.js';
import { startProbeProcess } from './redis-probe.js';
import type { WorkingSet } from '../protocol/working-set.js';
import { checkPushPriority, type PushPriority } from '../util/push-priority.js';

export type CriuWorkload = 'memproc' | 'redis' | 'redis-zipf';
export const CRIU_WORKLOADS: CriuWorkload[] = ['memproc', 'redis', 'redis-zipf'];

export interface CriuBenchOptions {
  memprocMiB: number;
  redisKeys: number;
  runs: number;
  workloads: CriuWorkload[];
  /** postcopy: migrate twice, the second time replaying the working set recorded the first time */
  workingSet?: boolean;
  /** postcopy: how far the push threads lower themselves (migrate's pushPriority) */
  pushPriority?: PushPriority;
  /** postcopy's background push (migrate's defaults otherwise) */
  pushBatch?: number;
  pushWindow?: number;
  /** postcopy: a CRC32C with every page (migrate's default: none over loopback) */
  checksums?: boolean;
  /** memory warmed before each freeze, in both modes (migrate's warmUp; default false) */
  warmUp?: boolean;
  /** seconds to wait before each freeze, the workload running: memory freed meanwhile may go back to the host */
  idleBefore?: number;
  onProgress?: (done: number, total: number, label: string) => void;
}

type Gets = { n: number; p50_us: number; p99_us: number; errors: number } | null;

export interface CriuRun extends MigrateResult {
  workload: CriuWorkload;
  /** memproc: every checksum after the migration right; redis: digest equal */
  verified: boolean;
  detail: string;
  /** redis: GETs sent back to back from the restore until every page was in */
  get_during_postcopy: Gets;
  /** --working-set, postcopy: the first migration, which recorded what the run's (second) one replayed */
  first_migration?: { downtime_ms: number; all_present_ms: number; faulted: number | null; faults_before_push?: number; pushed: number | null; get_during_postcopy: Gets };
  /** --working-set: pages the second migration pushed first */
  working_set_pages?: number;
}

export interface CriuRatio extends Ratio {
  /** --working-set: the second migration's faults over the first's (medians) */
  faults_replay?: number;
}

export interface CriuBenchResult {
  options: Omit<CriuBenchOptions, 'onProgress'>;
  runs: CriuRun[];
  /** per workload: medians, and postcopy / stock */
  summary: SummaryRow<MigrateMode>[];
  ratios: CriuRatio[];
}

const shell = (lines: string[]) => inCriuRoot(['/bin/bash', '-c', lines.join('\n')]);
const CLOSE_FDS = 'for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null; done';

/** Starts a program inside the root in its own pid namespace and session (prefix: in a network namespace, say); returns its pid. */
export async function startInRoot(dir: string, command: string, ready: string, comm: string, prefix: string[] = []): Promise<number> {
  const launcher = new LineChild(comm, [...prefix, ...shell([
    `mkdir -p ${dir}`,
    CLOSE_FDS,
    `( exec unshare -p -f setsid ${command} </dev/null >${dir}/stdout.log 2>&1 ) &`,
    `for i in $(seq 600); do ${ready} && break; sleep 0.05; done`,
    `echo "pid $(pgrep -n -x ${comm})"`,
  ])]);
  const line = await launcher.next((l) => l.startsWith('pid '), 60_000);
  await launcher.rest(10_000);
  const pid = Number(line.slice(4));
  if (!(pid > 0)) throw new PostcopyError('ERR_CHILD', `${comm} did not start in the CRIU root`);
  return pid;
}

/** A shell script's output lines, run in the CRIU root (2 minutes at most). */
export async function inRoot(lines: string[]): Promise<string[]> {
  return new LineChild('in root', shell(lines)).rest(120_000);
}


export async function runCriuBench(o: CriuBenchOptions): Promise<CriuBenchResult> {
  checkPushSettings(o);
  if (o.pushPriority !== undefined) checkPushPriority(o.pushPriority);
  if (o.idleBefore !== undefined && !(o.idleBefore >= 0 && o.idleBefore <= 600))
    throw new PostcopyError('ERR_INVALID_ARG', `idle before each freeze: ${o.idleBefore} s is not within 0-600`);
  ensureCriuRoot();
  const root = criuRootDir();
  const runs: CriuRun[] = [];
  const plan: { workload: CriuWorkload; mode: MigrateMode }[] = [];
  for (const workload of o.workloads)
    for (let i = 0; i < o.runs; i++) for (const mode of (i % 2 ? ['postcopy', 'stock'] : ['stock', 'postcopy']) as MigrateMode[]) plan.push({ workload, mode });
  let port = 27200 + (process.pid % 500);
  await withPipeSize(async () => {
    for (const [k, { workload, mode }] of plan.entries()) {
      o.onProgress?.(k, plan.length, `${workload}, ${mode}`);
      const dir = `/var/lib/postcopy/bench-${process.pid}-${k}`;
      const host = join(root, dir);
      const redis = workload !== 'memproc';
      let restored = 0;
      let pid = 0;
      try {
        let digest = '';
        if (workload === 'memproc') pid = await startInRoot(dir, `/usr/local/bin/memproc ${o.memprocMiB} ${dir}/out.txt`, `[ -s ${dir}/out.txt ]`, 'memproc');
        else {
          pid = await startInRoot(dir, `redis-server --port 0 --unixsocket ${dir}/redis.sock --save '' --appendonly no --enable-debug-command yes --daemonize no`, `[ -S ${dir}/redis.sock ]`, 'redis-server');
          const out = await inRoot([`redis-cli -s ${dir}/redis.sock DEBUG POPULATE ${o.redisKeys} key 100 >/dev/null`, `redis-cli -s ${dir}/redis.sock DEBUG DIGEST`]);
          digest = out.at(-1) ?? '';
        }
        if (o.idleBefore) await new Promise((r) => setTimeout(r, o.idleBefore! * 1000));
        const before = workload === 'memproc' ? readFileSync(join(host, 'out.txt'), 'utf8').trim().split('\n').length : 0;
        // redis: GETs from the moment the restored server runs until every page is in.
        const once = async (workDir: string, from: number, replay?: WorkingSet, record?: (ws: WorkingSet) => void) => {
          // The probe is a process of its own, ready before the freeze, and starts as the restore returns.
          const probe = redis ? await startProbeProcess(join(host, 'redis.sock'), o.redisKeys, workload === 'redis-zipf' ? 'zipf' : 'uniform') : null;
          const onPhase = (phase: string) => {
            if (phase === 'restored') probe?.go();
          };
          let result: MigrateResult;
          try {
            result = await migrate({ pid: from, workDir, mode, criuPort: port++, pushBatch: o.pushBatch, pushWindow: o.pushWindow, checksums: o.checksums, warmUp: o.warmUp, workingSet: replay, onWorkingSet: record, pushPriority: mode === 'postcopy' ? o.pushPriority : undefined, onPhase });
          } catch (err) {
            await probe?.stop().catch(() => null);
            throw err;
          }
          const gets = probe ? await probe.stop() : null;
          return { result, gets: gets && { n: gets.n, p50_us: gets.p50, p99_us: gets.p99, errors: gets.errors } };
        };
        let first: CriuRun['first_migration'];
        let replay: WorkingSet | undefined;
        if (mode === 'postcopy' && o.workingSet) {
          const m = await once(`${dir}/first`, pid, undefined, (ws) => (replay = ws));
          pid = m.result.restoredPid;
          first = { downtime_ms: m.result.downtime_ms, all_present_ms: m.result.all_present_ms, faulted: m.result.faulted, faults_before_push: m.result.faults_before_push, pushed: m.result.pushed, get_during_postcopy: m.gets };
          // The restored workload settles before its second move, as it would between two.
          await new Promise((r) => setTimeout(r, 1000));
        }
        const { result, gets } = await once(dir, pid, replay);
        restored = result.restoredPid;
        let verified = false;
        let detail = '';
        if (workload === 'memproc') {
          const deadline = Date.now() + 20_000;
          let lines: string[] = [];
          while (Date.now() < deadline) {
            lines = readFileSync(join(host, 'out.txt'), 'utf8').trim().split('\n');
            if (lines.length >= before + 2) break;
            await new Promise((r) => setTimeout(r, 100));
          }
          const bad = lines.filter((l) => !l.startsWith('ok ')).length;
          verified = lines.length >= before + 2 && bad === 0;
          detail = `${lines.length - before} checksums after the restore, ${bad} wrong`;
        } else {
          const after = (await inRoot([`redis-cli -s ${dir}/redis.sock DEBUG DIGEST`])).at(-1) ?? '';
          verified = after === digest && digest.length > 0;
          detail = `digest ${after} (before ${digest})`;
        }
        const ws = replay as WorkingSet | undefined;
        runs.push({
          ...result, workload, verified, detail, get_during_postcopy: gets,
          ...(first ? { first_migration: first, working_set_pages: [...(ws?.tasks.values() ?? [])].reduce((n, p) => n + p.length, 0) } : {}),
        });
      } finally {
        for (const p of [restored, pid]) {
          try {
            if (p) process.kill(p, 'SIGKILL');
          } catch {
            // gone already
          }
        }
        rmSync(host, { recursive: true, force: true });
      }
    }
  });
  o.onProgress?.(plan.length, plan.length, 'done');
  const { summary, ratios } = summarizeMigrations<MigrateMode & ('stock' | 'postcopy')>(o.workloads, runs);
  for (const r of ratios as CriuRatio[]) {
    const replayed = runs.filter((x) => x.workload === r.workload && x.first_migration);
    if (replayed.length) r.faults_replay = Math.round((median(replayed.map((x) => x.faulted ?? 0)) / Math.max(1, median(replayed.map((x) => x.first_migration!.faulted ?? 0)))) * 100) / 100;
  }
  const { onProgress: _omit, ...options } = o;
  return { options, runs, summary, ratios };
}

export function formatCriuReport(r: CriuBenchResult): string {
  const lines = [
    `Stock CRIU 4.1.1 lazy-pages against postcopy: medians of ${r.options.runs} runs each (memproc ${r.options.memprocMiB} MiB, redis ${r.options.redisKeys} keys).`,
    'Downtime: dump start (the task freezes) -> `criu restore -d` returns. All present: dump start -> every lazy page on the target.',
    `postcopy's push threads: ${r.options.pushPriority ?? 'normal'} priority (--push-priority).`,
    `postcopy: TCP over loopback, ${r.options.checksums ? 'a CRC32C with every page (--checksums)' : 'no per-page CRC32C (migrate\'s default over loopback; --checksums to ask)'}.`,
    r.options.warmUp
      ? `Both modes: as much memory as the task holds written and freed just before the freeze (--warm-up), median ${median(r.runs.map((x) => x.warm_up_ms ?? 0))} ms while the task still runs, in neither figure.`
      : 'No memory warmed before the freeze (--warm-up to ask).',
    ...(r.options.idleBefore ? [`${r.options.idleBefore} s idle before each freeze (--idle-before).`] : []),
    '',
    ...migrationTables(r.summary, r.ratios),
    ...(r.options.workingSet ? ['', ...replayTable(r)] : []),
  ];
  return lines.join('\n');
}

/** --working-set: each postcopy run's two migrations, medians per workload. */
function replayTable(r: CriuBenchResult): string[] {
  const rows = r.ratios.map((x) => {
    const runs = r.runs.filter((y) => y.workload === x.workload && y.first_migration);
    const m = (f: (y: CriuRun) => number | null | undefined) => median(runs.map((y) => f(y) ?? 0));
    const p99 = (g: Gets | undefined) => g?.p99_us ?? null;
    const gets = (f: (y: CriuRun) => number | null) => (runs.some((y) => f(y) !== null) ? median(runs.map((y) => f(y) ?? 0)) : '–');
    return `| ${x.workload} | ${m((y) => y.first_migration!.faulted)} (${m((y) => y.first_migration!.faults_before_push)}) | ${m((y) => y.faulted)} (${m((y) => y.faults_before_push)}) | ${x.faults_replay ?? '–'}× | ${m((y) => y.working_set_pages)} | ${m((y) => y.first_migration!.all_present_ms)} / ${m((y) => y.all_present_ms)} | ${gets((y) => p99(y.first_migration!.get_during_postcopy))} / ${gets((y) => p99(y.get_during_postcopy))} |`;
  });
  return [
    'postcopy with --working-set: the first migration records the pages the tasks fault on; the second pushes them first.',
    '',
    '| workload | faults, first (before the push) | faults, second (before the push) | faults_replay | pages replayed | all present ms, first / second | GET p99 µs, first / second |',
    '|---|---|---|---|---|---|---|',
    ...rows,
  ];
}
