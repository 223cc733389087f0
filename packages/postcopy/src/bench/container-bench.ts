// `postcopy bench --container`: a runc container moved between two hosts (network namespaces
// joined by a veth pair), by postcopy's agents against stock runc lazy migration, in the same run,
// runs alternating. Stock is what runc documents: `runc checkpoint --lazy-pages --page-server` on
// the source; the images copied over; `criu lazy-pages --page-server` then `runc restore
// --lazy-pages` on the destination. (The copy is a local cp: both hosts share this disk, which
// favours stock, whose users copy with scp or rsync.)
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { migrateThroughAgent } from '../agent/agent.js';
import { PostcopyError } from '../errors.js';
import { inRuncRoot, runc } from '../criu/runc.js';
import { dumpOnGo, readyOnStatus } from '../criu/run.js';
import { criuRootDir, ensureCriuRoot, inCriuRoot, withPipeSize } from '../criu/root.js';
import { LineChild, nodeModuleArgv } from '../util/child.js';
import { VethPair } from '../util/netns.js';
import { containerStatus, makeBundle, removeContainer, startContainer } from './containers.js';
import { median, migrationTables, summarizeMigrations, type Ratio, type SummaryRow } from './migration-summary.js';
import { inRoot } from './criu-bench.js';
import { startProbeProcess } from './redis-probe.js';

/** redis-zipf: the redis container, its GETs drawn from a Zipf distribution (s = 0.99), as a cache with a hot set */
export type ContainerWorkload = 'memproc' | 'redis' | 'redis-zipf';
export const CONTAINER_WORKLOADS: ContainerWorkload[] = ['memproc', 'redis', 'redis-zipf'];
export type ContainerMode = 'postcopy' | 'stock';

export interface ContainerBenchOptions {
  memprocMiB: number;
  redisKeys: number;
  runs: number;
  workloads: ContainerWorkload[];
  /**
   * postcopy: move the container there and back, the second move (b to a) pushing first what the
   * first recorded (the working set host b's agent kept); the run's figures are the second's
   */
  workingSet?: boolean;
  onProgress?: (done: number, total: number, label: string) => void;
}

export interface ContainerRun {
  workload: ContainerWorkload;
  mode: ContainerMode;
  /** the freeze (checkpoint start) -> the container runs on the destination */
  downtime_ms: number;
  /** the freeze -> every lazy page on the destination */
  all_present_ms: number;
  /** memproc: every checksum after the move right; redis: digest equal; and runc says it runs there alone */
  verified: boolean;
  detail: string;
  get_during_postcopy: { n: number; p50_us: number; p99_us: number; errors: number } | null;
  /** postcopy: the agent's report */
  report?: Record<string, unknown>;
  /** --working-set, postcopy: the first move, which recorded what the run's (second) one replayed */
  first_migration?: { downtime_ms: number; all_present_ms: number; faulted: number };
  /** --working-set: pages the second move pushed first */
  working_set_pages?: number;
}

export interface ContainerBenchResult {
  options: Omit<ContainerBenchOptions, 'onProgress'>;
  runs: ContainerRun[];
  summary: SummaryRow<ContainerMode>[];
  /** with --working-set, faults_replay: the second move's faults over the first's (medians) */
  ratios: (Ratio & { faults_replay?: number })[];
}

const HOSTS = { a: 'bench-a', b: 'bench-b' } as const;
const AGENT_PORT = 7070;
const STEP_MS = 120_000;

const round = (x: number) => Math.round(x * 10) / 10;

/** Waits (polling, bounded) until ok() holds or ms have passed. */
async function until(ok: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
}

/** Lines of a file once there are enough, or the time is up. */
async function linesOf(path: string, enough: (l: string[]) => boolean, ms: number): Promise<string[]> {
  const read = () => (existsSync(path) ? readFileSync(path, 'utf8').trim().split('\n').filter(Boolean) : []);
  await until(() => enough(read()), ms);
  return read();
}

export async function runContainerBench(o: ContainerBenchOptions): Promise<ContainerBenchResult> {
  if (!(Number.isInteger(o.runs) && o.runs >= 1)) throw new PostcopyError('ERR_INVALID_ARG', `--runs must be 1 or more, not ${o.runs}`);
  if (!(Number.isInteger(o.memprocMiB) && o.memprocMiB >= 1)) throw new PostcopyError('ERR_INVALID_ARG', `--memproc-mib must be 1 or more, not ${o.memprocMiB}`);
  if (!(Number.isInteger(o.redisKeys) && o.redisKeys >= 1)) throw new PostcopyError('ERR_INVALID_ARG', `--redis-keys must be 1 or more, not ${o.redisKeys}`);
  for (const w of o.workloads) if (!CONTAINER_WORKLOADS.includes(w)) throw new PostcopyError('ERR_INVALID_ARG', `--workload: ${CONTAINER_WORKLOADS.join(', ')}, not ${w}`);
  ensureCriuRoot();
  const root = criuRootDir();
  const tag = `${process.pid}`;
  const tmp = mkdtempSync(join(tmpdir(), 'pc-cbench-'));
  const keyFile = join(tmp, 'rack.key');
  writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  const runcRoot = (h: string) => `/var/lib/postcopy-agent/${h}/runc`;
  const runs: ContainerRun[] = [];
  const plan: { workload: ContainerWorkload; mode: ContainerMode }[] = [];
  for (const workload of o.workloads)
    for (let i = 0; i < o.runs; i++) for (const mode of (i % 2 ? ['postcopy', 'stock'] : ['stock', 'postcopy']) as ContainerMode[]) plan.push({ workload, mode });
  const agents: LineChild[] = [];
  let veth: VethPair | null = null;
  const bundles = new Set<string>();
  try {
    veth = VethPair.create(`pck${process.pid % 100000}`, '10.237.0');
    const cli = nodeModuleArgv(import.meta.url, '../cli/main');
    for (const end of ['a', 'b'] as const) {
      const agent = new LineChild(`agent ${end}`, [...veth.exec(end), ...cli, 'agent', '--listen', `tcp://${veth[end].addr}:${AGENT_PORT}`, '--key-file', keyFile, '--state-dir', join(tmp, `state-${end}`), '--name', HOSTS[end], '--json']);
      agents.push(agent);
      await agent.event('agent', 'listening', STEP_MS);
    }
    let port = 27700 + (process.pid % 200);
    await withPipeSize(async () => {
      for (const [k, { workload, mode }] of plan.entries()) {
        o.onProgress?.(k, plan.length, `${workload}, ${mode}`);
        const id = `cbench-${tag}-${k}`;
        const out = `/var/lib/postcopy/cbench-${tag}-${k}`;
        const bundle = `/var/lib/postcopy/bundles/cbench-${tag}-${k}`;
        bundles.add(bundle);
        const host = join(root, out);
        mkdirSync(host, { recursive: true });
        try {
          const args =
            workload === 'memproc'
              ? ['/bin/sh', '-c', `exec /usr/local/bin/memproc ${o.memprocMiB} ${out}/out.txt </dev/null >/dev/null 2>&1`]
              : ['/bin/sh', '-c', `exec redis-server --port 0 --unixsocket ${out}/redis.sock --save '' --appendonly no --enable-debug-command yes </dev/null >/dev/null 2>&1`];
          makeBundle(bundle, args, [out]);
          startContainer(HOSTS.a, runcRoot(HOSTS.a), bundle, id, veth!.exec('a'));
          let digest = '';
          if (workload === 'memproc') await linesOf(join(host, 'out.txt'), (l) => l.length >= 1, 30_000);
          else {
            await until(() => existsSync(join(host, 'redis.sock')), 30_000);
            digest = (await inRoot([`redis-cli -s ${out}/redis.sock DEBUG POPULATE ${o.redisKeys} key 100 >/dev/null`, `redis-cli -s ${out}/redis.sock DEBUG DIGEST`])).at(-1) ?? '';
          }
          const before = workload === 'memproc' ? (await linesOf(join(host, 'out.txt'), () => true, 0)).length : 0;
          // The GET probe is a process of its own (what it measures is redis, not this process's
          // event loop), ready before the freeze; it starts as the restored server runs.
          const startProbe = () => (workload !== 'memproc' ? startProbeProcess(join(host, 'redis.sock'), o.redisKeys, workload === 'redis-zipf' ? 'zipf' : 'uniform') : Promise.resolve(null));
          const probe = await startProbe();
          const onRestored = () => probe?.go();
          let measured: { downtime_ms: number; all_present_ms: number; report?: Record<string, unknown> };
          let first: ContainerRun['first_migration'];
          // Where the container ends: b, or back on a after a move there and back.
          const home = mode === 'postcopy' && o.workingSet ? 'a' : 'b';
          try {
            if (mode === 'postcopy') {
              const move = (from: 'a' | 'b', to: 'a' | 'b', onPhase: (name: string) => void) => migrateThroughAgent(join(tmp, `state-${from}`, 'agent.sock'), { container: id, to: veth![to].addr, timeoutMs: STEP_MS }, onPhase);
              if (o.workingSet) {
                // The move there with GETs of its own, as the move back has: their faults are what is recorded.
                const firstProbe = await startProbe();
                try {
                  const there = await move('a', 'b', (name) => name === 'restored' && firstProbe?.go());
                  first = { downtime_ms: there.downtime_ms, all_present_ms: there.all_present_ms, faulted: there.faulted };
                } finally {
                  await firstProbe?.stop().catch(() => null);
                }
              }
              const result = await move(o.workingSet ? 'b' : 'a', home, (name) => name === 'restored' && onRestored());
              measured = { downtime_ms: result.downtime_ms, all_present_ms: result.all_present_ms, report: result as unknown as Record<string, unknown> };
            } else measured = await stockMove(veth!, id, bundle, out, port++, onRestored);
          } catch (err) {
            await probe?.stop().catch(() => null);
            throw err;
          }
          const gets = probe ? await probe.stop() : null;
          // Where it runs now: at home alone.
          const away = home === 'a' ? 'b' : 'a';
          const atHome = containerStatus(HOSTS[home], runcRoot(HOSTS[home]), id)?.status === 'running';
          const elsewhere = containerStatus(HOSTS[away], runcRoot(HOSTS[away]), id) !== null;
          let verified = atHome && !elsewhere;
          let detail = `runc: ${atHome ? `running on ${home}` : `not running on ${home}`}, ${elsewhere ? `still on ${away}` : `gone from ${away}`}`;
          if (workload === 'memproc') {
            const lines = await linesOf(join(host, 'out.txt'), (l) => l.length >= before + 2, 20_000);
            const bad = lines.filter((l) => !l.startsWith('ok ')).length;
            verified &&= lines.length >= before + 2 && bad === 0;
            detail += `; ${lines.length - before} checksums after the move, ${bad} wrong`;
          } else {
            const after = (await inRoot([`redis-cli -s ${out}/redis.sock DEBUG DIGEST`])).at(-1) ?? '';
            verified &&= after === digest && digest.length > 0;
            detail += `; digest ${after} (before ${digest})`;
          }
          const replayed = (measured.report?.working_set as { replayed?: number } | null | undefined)?.replayed;
          runs.push({ workload, mode, downtime_ms: round(measured.downtime_ms), all_present_ms: round(measured.all_present_ms), verified, detail, get_during_postcopy: gets && { n: gets.n, p50_us: gets.p50, p99_us: gets.p99, errors: gets.errors }, ...(measured.report ? { report: measured.report } : {}), ...(first ? { first_migration: first, working_set_pages: replayed ?? 0 } : {}) });
        } finally {
          removeContainer(HOSTS.a, runcRoot(HOSTS.a), id);
          removeContainer(HOSTS.b, runcRoot(HOSTS.b), id);
          rmSync(host, { recursive: true, force: true });
          rmSync(join(root, bundle), { recursive: true, force: true });
        }
      }
    });
  } finally {
    for (const a of agents) a.kill();
    veth?.destroy();
    for (const b of bundles) rmSync(join(root, b), { recursive: true, force: true });
    rmSync(tmp, { recursive: true, force: true });
  }
  o.onProgress?.(plan.length, plan.length, 'done');
  const { summary, ratios } = summarizeMigrations<ContainerMode>(o.workloads, runs);
  for (const r of ratios as ContainerBenchResult['ratios']) {
    const moved = runs.filter((x) => x.workload === r.workload && x.first_migration);
    const faulted = (x: ContainerRun) => (x.report?.faulted as number | undefined) ?? 0;
    if (moved.length) r.faults_replay = Math.round((median(moved.map(faulted)) / Math.max(1, median(moved.map((x) => x.first_migration!.faulted)))) * 100) / 100;
  }
  const { onProgress: _omit, ...options } = o;
  return { options, runs, summary, ratios };
}

/** Stock runc lazy migration of container id from host a to host b, timed from the checkpoint's start. */
async function stockMove(veth: VethPair, id: string, bundle: string, out: string, port: number, onRestored: () => void): Promise<{ downtime_ms: number; all_present_ms: number }> {
  const root = criuRootDir();
  const src = `${out}/stock-src`;
  const dst = `${out}/stock-dst`;
  const children: LineChild[] = [];
  try {
    const checkpoint = runc(`/var/lib/postcopy-agent/${HOSTS.a}/runc`, ['checkpoint', '--lazy-pages', '--page-server', `${veth.a.addr}:${port}`, '--status-fd', '9', '--image-path', `${src}/img`, '--work-path', `${src}/work`, id]);
    const dump = new LineChild('runc checkpoint', [...veth.exec('a'), ...inRuncRoot(HOSTS.a, ['/bin/bash', '-c', dumpOnGo(src, ['img', 'work'], checkpoint.join(' ')).join('\n')])]);
    children.push(dump);
    await dump.next((l) => l === 'armed', STEP_MS);
    const t0 = performance.now();
    dump.send('go');
    const said = await dump.next((l) => l === 'ready' || l.startsWith('dump exit'), STEP_MS);
    if (said !== 'ready') throw new PostcopyError('ERR_CRIU', `stock: runc checkpoint failed (${said}): ${dump.stderr}`);
    // The images to the destination (the lazy memory stays behind).
    mkdirSync(join(root, dst, 'work'), { recursive: true });
    cpSync(join(root, src, 'img'), join(root, dst, 'img'), { recursive: true });
    const lazy = new LineChild('criu lazy-pages', [...veth.exec('b'), ...inCriuRoot(['/bin/bash', '-c', [
      `cd ${dst} && rm -f lst && mkfifo lst`,
      `criu lazy-pages --page-server --address ${veth.a.addr} --port ${port} -D ${dst}/img -W ${dst}/work --status-fd 9 -o lazy.log 9>lst &`,
      'L=$!',
      readyOnStatus('lst', 'L', 'lazy'),
    ].join('\n')])]);
    children.push(lazy);
    const lazySaid = await lazy.next((l) => l === 'ready' || l.startsWith('lazy exit'), STEP_MS);
    if (lazySaid !== 'ready') throw new PostcopyError('ERR_CRIU', `stock: criu lazy-pages failed (${lazySaid}): ${lazy.stderr}`);
    const restore = new LineChild('runc restore', [...veth.exec('b'), ...inRuncRoot(HOSTS.b, runc(`/var/lib/postcopy-agent/${HOSTS.b}/runc`, ['restore', '--lazy-pages', '-d', '--image-path', `${dst}/img`, '--work-path', `${dst}/work`, '--bundle', bundle, id]))]);
    children.push(restore);
    const restored = await new Promise<string>((resolve) => restore.child.once('exit', (code, signal) => resolve(signal ?? String(code))));
    const downtime = performance.now() - t0;
    if (restored !== '0') throw new PostcopyError('ERR_CRIU', `stock: runc restore failed (${restored}): ${restore.stderr}`);
    onRestored();
    const lazyEnd = await lazy.next((l) => l.startsWith('lazy exit'), STEP_MS);
    const allPresent = performance.now() - t0;
    if (lazyEnd !== 'lazy exit 0') throw new PostcopyError('ERR_CRIU', `stock: criu lazy-pages ended badly (${lazyEnd})`);
    const dumpEnd = await dump.next((l) => l.startsWith('dump exit'), STEP_MS);
    if (dumpEnd !== 'dump exit 0') throw new PostcopyError('ERR_CRIU', `stock: runc checkpoint ended badly (${dumpEnd}): ${dump.stderr}`);
    return { downtime_ms: downtime, all_present_ms: allPresent };
  } finally {
    for (const c of children) c.kill();
  }
}

export function formatContainerReport(r: ContainerBenchResult): string {
  return [
    `A runc container moved between two hosts (network namespaces joined by a veth pair): stock runc lazy migration against postcopy's agents, medians of ${r.options.runs} runs each (memproc ${r.options.memprocMiB} MiB, redis ${r.options.redisKeys} keys).`,
    'Downtime: stock, from the start of runc checkpoint; postcopy, from the freeze (runc started before, its DUMP held at the criu gate); both to the container running on the destination. All present: the same start -> every lazy page on the destination.',
    'Stock: runc checkpoint --lazy-pages --page-server, the images copied (cp), criu lazy-pages, runc restore --lazy-pages. postcopy: migrate --container --to, TCP with a CRC32C with every page.',
    '',
    ...migrationTables(r.summary, r.ratios),
    ...(r.options.workingSet ? ['', ...replayTable(r)] : []),
  ].join('\n');
}

/** --working-set: each postcopy run's two moves, a -> b (recording) and b -> a (replaying). */
function replayTable(r: ContainerBenchResult): string[] {
  const rows = r.ratios.map((x) => {
    const runs = r.runs.filter((y) => y.workload === x.workload && y.first_migration);
    const m = (f: (y: ContainerRun) => number) => (runs.length ? median(runs.map(f)) : '–');
    return `| ${x.workload} | ${m((y) => y.first_migration!.faulted)} | ${m((y) => (y.report?.faulted as number) ?? 0)} | ${x.faults_replay ?? '–'}× | ${m((y) => y.working_set_pages ?? 0)} | ${m((y) => y.first_migration!.all_present_ms)} / ${m((y) => y.all_present_ms)} |`;
  });
  return [
    'postcopy with --working-set: the move there records the pages the tasks fault on (host b keeps them); the move back pushes them first.',
    '',
    '| workload | faults, there | faults, back | faults_replay | pages replayed | all present ms, there / back |',
    '|---|---|---|---|---|---|',
    ...rows,
  ];
}
