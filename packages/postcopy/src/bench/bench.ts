// `postcopy bench`: the report's remote page-fault benchmark (D6.9 §4.1-4.2), run through the
// product's own source and fault handler, side by side with the C reference (bench/reference),
// in the same session, with the same parameters and CPU placement.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { cpus, release, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PostcopyError } from '../errors.js';
import { cleanupOnSignal, LineChild, nodeModuleArgv } from '../util/child.js';
import { VethPair } from '../util/netns.js';
import { poolTrials, summarize, type Summary } from './stats.js';
import type { BenchTargetArgs } from './target.js';

export type Placement = 'same' | 'cross' | 'auto';
export type Link = 'loopback' | 'veth';
export type BenchTransport = 'tcp' | 'unix';

export interface BenchOptions {
  trials: number;
  /** trials run first and dropped, for both sides: our threads' JIT needs a few thousand faults */
  warmup: number;
  faults: number;
  pageSizes: number[];
  transports: BenchTransport[];
  links: Link[];
  /** veth MTUs; loopback keeps its own */
  mtus: number[];
  placement: Placement;
  onProgress?: (done: number, total: number, label: string) => void;
}

export interface BenchCase {
  transport: BenchTransport;
  link: Link;
  mtu: number | null;
  pageSize: number;
}

export interface CaseResult extends BenchCase {
  /** our source and fault handler */
  ours: Summary;
  /** the C reference, same path */
  ref: Summary;
  /** the C request/response alone, no userfaultfd */
  network: Summary;
  /** ours / ref */
  ratio: { p50: number; mean: number; p99: number };
  /** means, µs: kernel (uffd + UFFDIO_COPY, no network), network round trip, the rest of the C path, and what our code adds */
  breakdown: { kernel: number; network: number; refRest: number; oursExtra: number };
}

export interface BenchResult {
  machine: { cpu: string; cpus: number; memGiB: number; kernel: string; node: string };
  placement: Placement;
  cpusUsed: { server: string; target: string };
  trials: number;
  warmup: number;
  faults: number;
  /** the kernel path alone (C, local memory), per page size */
  kernel: Record<string, Summary>;
  cases: CaseResult[];
  startedAt: string;
  seconds: number;
}

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function referenceBinary(): string {
  const bin = join(packageRoot, 'build', 'Release', 'pcref');
  if (!existsSync(bin)) throw new PostcopyError('ERR_INVALID_ARG', `the C reference ${bin} is missing: it is built by \`npm ci\` (node-gyp)`);
  return bin;
}

export function benchCases(o: Pick<BenchOptions, 'transports' | 'links' | 'mtus' | 'pageSizes'>): BenchCase[] {
  const out: BenchCase[] = [];
  for (const transport of o.transports)
    for (const pageSize of o.pageSizes)
      for (const link of o.links) {
        if (link === 'veth' && transport === 'unix') continue; // a Unix socket does not cross a link
        for (const mtu of link === 'veth' ? o.mtus : [null]) out.push({ transport, link, mtu, pageSize });
      }
  return out;
}

function placementCpus(placement: Placement): { server: string; target: string } {
  if (placement === 'auto') return { server: 'any', target: 'any' };
  if (placement === 'same') return { server: '0', target: '0' };
  if (cpus().length < 2) throw new PostcopyError('ERR_INVALID_ARG', '--placement cross needs at least 2 CPUs');
  return { server: '1', target: '0' };
}

/** trials per turn when the three pairs take turns */
const BATCH = 5;

interface Pair {
  server: LineChild;
  client: LineChild;
  lines: string[];
}

/** Asks a batch-mode client for `count` more trials and keeps the lines it prints. */
async function runBatch(pair: Pair, count: number, timeoutMs: number): Promise<void> {
  if (count <= 0) return;
  pair.client.send(String(count));
  for (;;) {
    const line = await pair.client.next(() => true, timeoutMs);
    if (line === 'batch done') return;
    pair.lines.push(line);
  }
}

const pinned = (cpu: string): string[] => (cpu === 'any' ? [] : ['taskset', '-c', cpu]);
const round2 = (x: number) => Math.round(x * 100) / 100;

export async function runBench(o: BenchOptions): Promise<BenchResult> {
  if (o.trials < 1 || o.faults < 1) throw new PostcopyError('ERR_INVALID_ARG', 'trials and faults must be at least 1');
  const started = Date.now();
  const cases = benchCases(o);
  if (cases.length === 0) throw new PostcopyError('ERR_INVALID_ARG', 'no configuration to run: unix runs on loopback only');
  const where = placementCpus(o.placement);
  const pcref = referenceBinary();
  const maxPage = Math.max(...o.pageSizes);
  const children = new Set<LineChild>();
  const start = (name: string, argv: string[]) => {
    const c = new LineChild(name, argv);
    children.add(c);
    void c.exited.then(() => children.delete(c));
    return c;
  };
  const dir = mkdtempSync(join(tmpdir(), 'pc-bench-'));
  let veth: VethPair | null = null;
  const cleanup = () => {
    for (const c of children) c.kill();
    veth?.destroy();
    rmSync(dir, { recursive: true, force: true });
  };
  const stopWatching = cleanupOnSignal(cleanup);

  const total = o.pageSizes.length + cases.length * Math.ceil(o.trials / BATCH);
  let done = 0;
  const step = (label: string) => o.onProgress?.(++done, total, label);
  const trials = o.warmup + o.trials;
  const pool = (lines: string[]) => summarize(poolTrials(lines, o.warmup));
  const timeoutMs = 60_000 + trials * o.faults * 2;

  try {
    // One frozen donor process holds the memory both sources serve.
    const span = 2 * o.faults * maxPage;
    const donor = start('donor', [pcref, 'donor', String(span)]);
    const donorAddr = Number(await donor.next((l) => /^\d+$/.test(l), 10_000));
    const donorPid = donor.child.pid!;
    if (o.links.includes('veth')) veth = VethPair.create(`pcb${process.pid % 100000}`, '10.232.0');

    const kernel: Record<string, Summary> = {};
    for (const ps of o.pageSizes) {
      const local = start('C local', [...pinned(where.target), pcref, 'local', String(ps), String(o.faults), String(trials)]);
      kernel[ps] = pool(await local.rest(timeoutMs));
      step(`kernel path ${ps / 1024} KiB`);
    }

    const results: CaseResult[] = [];
    for (const c of cases) {
      const label = `${c.transport} ${c.link}${c.mtu ? ` ${c.mtu}` : ''} ${c.pageSize / 1024} KiB`;
      if (c.link === 'veth') veth!.setMtu(c.mtu!);
      const host = c.link === 'veth' ? veth!.a.addr : '127.0.0.1';
      const serverSide = [...(veth && c.link === 'veth' ? veth.exec('a') : []), ...pinned(where.server)];
      const targetSide = [...(veth && c.link === 'veth' ? veth.exec('b') : []), ...pinned(where.target)];

      // Three client/server pairs stay up side by side, idle but for the one being measured: the
      // C reference, the C round trip alone, and ours (the product's `serve` and FaultHandler).
      // They take turns in small batches, so a slow spell of this shared machine hits all three.
      const startC = async (mode: 'fault' | 'rr', sockPath: string): Promise<Pair> => {
        const listen = c.transport === 'unix' ? `unix:${sockPath}` : `tcp:${host}:0`;
        const server = start('C server', [...serverSide, pcref, 'server', listen, String(donorPid), String(donorAddr)]);
        const port = (await server.next((l) => l.startsWith('listening '), 10_000)).split(' ')[1];
        const connect = c.transport === 'unix' ? listen : `tcp:${host}:${port}`;
        const client = start(`C ${mode}`, [...targetSide, pcref, mode, connect, String(c.pageSize), String(o.faults), '0']);
        return { server, client, lines: [] };
      };
      const startOurs = async (sockPath: string): Promise<Pair> => {
        const listen = c.transport === 'unix' ? `unix:${sockPath}` : `tcp://${host}:0`;
        const server = start('postcopy serve', [
          ...serverSide,
          ...nodeModuleArgv(import.meta.url, '../cli/main'),
          'serve', '--pid', String(donorPid), '--range', `${donorAddr}:${2 * o.faults * c.pageSize}`,
          '--freeze', 'none', '--page-size', String(c.pageSize), '--listen', listen, '--json',
        ]);
        const endpoint = (await server.event('serve', 'listening', 20_000)).endpoint;
        const args: BenchTargetArgs = { endpoint, pageSize: c.pageSize, faults: o.faults, trials: 0 };
        const client = start('bench target', [...targetSide, ...nodeModuleArgv(import.meta.url, './target'), JSON.stringify(args)]);
        return { server, client, lines: [] };
      };
      const pairs = { ref: await startC('fault', join(dir, 'ref.sock')), network: await startC('rr', join(dir, 'rr.sock')), ours: await startOurs(join(dir, 'ours.sock')) };
      const turns = [pairs.ref, pairs.ours, pairs.network];
      for (const p of turns) await runBatch(p, o.warmup, timeoutMs);
      for (let round = 0, left = o.trials; left > 0; round++, left -= BATCH) {
        for (let i = 0; i < turns.length; i++) await runBatch(turns[(round + i) % turns.length], Math.min(BATCH, left), timeoutMs);
        step(label);
      }
      for (const p of turns) p.client.endInput();
      for (const p of turns) {
        p.lines.push(...(await p.client.rest(timeoutMs)));
        if (p === pairs.ours) p.server.kill('SIGTERM');
        await p.server.exited;
      }
      const ref = pool(pairs.ref.lines);
      const network = pool(pairs.network.lines);
      const ours = pool(pairs.ours.lines);

      const k = kernel[c.pageSize];
      results.push({
        ...c,
        ours,
        ref,
        network,
        ratio: { p50: round2(ours.p50 / ref.p50), mean: round2(ours.mean / ref.mean), p99: round2(ours.p99 / ref.p99) },
        breakdown: { kernel: k.mean, network: network.mean, refRest: round2(ref.mean - k.mean - network.mean), oursExtra: round2(ours.mean - ref.mean) },
      });
    }
    return {
      machine: { cpu: cpus()[0]?.model ?? 'unknown', cpus: cpus().length, memGiB: Math.round(totalmem() / 2 ** 30), kernel: release(), node: process.version },
      placement: o.placement,
      cpusUsed: where,
      trials: o.trials,
      warmup: o.warmup,
      faults: o.faults,
      kernel,
      cases: results,
      startedAt: new Date(started).toISOString(),
      seconds: Math.round((Date.now() - started) / 100) / 10,
    };
  } finally {
    stopWatching();
    cleanup();
  }
}
