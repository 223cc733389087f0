// `postcopy bench --criu`: stock CRIU lazy-pages against postcopy on the same workloads, in the
// same run, runs alternating: memproc (a memory-heavy process that keeps checking every page) and
// redis (digest compared before and after).
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { PostcopyError } from '../errors.js';
import { migrate, type MigrateMode, type MigrateResult } from '../criu/migrate.js';
import { checkPushSettings } from '../target/handler.js';
import { criuRootDir, ensureCriuRoot, inCriuRoot, withPipeSize } from '../criu/root.js';
import { LineChild } from '../util/child.js';
import { median, migrationTables, summarizeMigrations, type Ratio, type SummaryRow } from './migration-summary.js';
import { probeRedisGets, type RedisProbe } from './redis-probe.js';

export interface CriuBenchOptions {
  memprocMiB: number;
  redisKeys: number;
  runs: number;
  workloads: ('memproc' | 'redis')[];
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

export interface CriuRun extends MigrateResult {
  workload: 'memproc' | 'redis';
  /** memproc: every checksum after the migration right; redis: digest equal */
  verified: boolean;
  detail: string;
  /** redis: GETs sent back to back from the restore until every page was in */
  get_during_postcopy: { n: number; p50_us: number; p99_us: number; errors: number } | null;
}

export interface CriuBenchResult {
  options: Omit<CriuBenchOptions, 'onProgress'>;
  runs: CriuRun[];
  /** per workload: medians, and postcopy / stock */
  summary: SummaryRow<MigrateMode>[];
  ratios: Ratio[];
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
  if (o.idleBefore !== undefined && !(o.idleBefore >= 0 && o.idleBefore <= 600))
    throw new PostcopyError('ERR_INVALID_ARG', `idle before each freeze: ${o.idleBefore} s is not within 0-600`);
  ensureCriuRoot();
  const root = criuRootDir();
  const runs: CriuRun[] = [];
  const plan: { workload: 'memproc' | 'redis'; mode: MigrateMode }[] = [];
  for (const workload of o.workloads)
    for (let i = 0; i < o.runs; i++) for (const mode of (i % 2 ? ['postcopy', 'stock'] : ['stock', 'postcopy']) as MigrateMode[]) plan.push({ workload, mode });
  let port = 27200 + (process.pid % 500);
  await withPipeSize(async () => {
    for (const [k, { workload, mode }] of plan.entries()) {
      o.onProgress?.(k, plan.length, `${workload}, ${mode}`);
      const dir = `/var/lib/postcopy/bench-${process.pid}-${k}`;
      const host = join(root, dir);
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
        let probe: RedisProbe | null = null;
        const onPhase = (phase: string) => {
          if (workload === 'redis' && phase === 'restored') probe = probeRedisGets(join(host, 'redis.sock'), o.redisKeys);
        };
        const result = await migrate({ pid, workDir: dir, mode, criuPort: port++, pushBatch: o.pushBatch, pushWindow: o.pushWindow, checksums: o.checksums, warmUp: o.warmUp, onPhase });
        const gets = probe ? await (probe as RedisProbe).stop() : null;
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
        runs.push({ ...result, workload, verified, detail, get_during_postcopy: gets && { n: gets.n, p50_us: gets.p50, p99_us: gets.p99, errors: gets.errors } });
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
  const { onProgress: _omit, ...options } = o;
  return { options, runs, summary, ratios };
}

export function formatCriuReport(r: CriuBenchResult): string {
  const lines = [
    `Stock CRIU 4.1.1 lazy-pages against postcopy: medians of ${r.options.runs} runs each (memproc ${r.options.memprocMiB} MiB, redis ${r.options.redisKeys} keys).`,
    'Downtime: dump start (the task freezes) -> `criu restore -d` returns. All present: dump start -> every lazy page on the target.',
    `postcopy: TCP over loopback, ${r.options.checksums ? 'a CRC32C with every page (--checksums)' : 'no per-page CRC32C (migrate\'s default over loopback; --checksums to ask)'}.`,
    r.options.warmUp
      ? `Both modes: as much memory as the task holds written and freed just before the freeze (--warm-up), median ${median(r.runs.map((x) => x.warm_up_ms ?? 0))} ms while the task still runs, in neither figure.`
      : 'No memory warmed before the freeze (--warm-up to ask).',
    ...(r.options.idleBefore ? [`${r.options.idleBefore} s idle before each freeze (--idle-before).`] : []),
    '',
    ...migrationTables(r.summary, r.ratios),
  ];
  return lines.join('\n');
}
