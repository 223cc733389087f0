// `postcopy rack simulate`: the planner on a simulated rack, against no migration and a threshold
// heuristic, on the same load. Pure: a seed and options in, figures out.
//   - The load: a trace (CSV: time, container, cpu, mem; a row sets a container's demand from then
//     on, and mem 0 ends it), or a seeded synthetic day: containers arrive and leave, and their CPU
//     follows the day (low at night, a peak in the afternoon).
//   - Every strategy places a new container alike: on the awake host where it adds the least power
//     and fits under the CPU ceiling (the SLA), waking a host only when none has room; and sleeps a
//     host that has nothing left. Only the migrations differ:
//       none: never; threshold: a host under 20% CPU is emptied if its containers fit elsewhere
//       (common consolidation heuristics); planner: plan() every step.
//     threshold and planner also move a container off a host over the ceiling (the SLA), waking
//     a host if they must.
//   - Energy: awake hosts by the model, asleep ones at their sleep power, each wake-up, and each
//     migration's own cost. SLA-violation minutes: minutes a host's demand is over its ceiling.
import { PostcopyError } from '../errors.js';
import { DEFAULT_CLASSES, DEFAULT_COSTS, hostW, marginalW, migrationJ, type HostClass, type MigrationCosts } from '../util/power-model.js';
import { countClasses, powerLowerBoundW } from './bound.js';
import { plan, type PlanHost, type RecentMove } from './planner.js';

export type Strategy = 'none' | 'threshold' | 'planner';
export const STRATEGIES: Strategy[] = ['none', 'threshold', 'planner'];

export interface TraceRow {
  timeS: number;
  container: string;
  cpu: number;
  memGiB: number;
}

export interface SimulateOptions {
  hosts: number;
  hours: number;
  seed: number;
  /** the load; a synthetic day from the seed when none */
  trace?: TraceRow[];
  classes?: HostClass[];
  costs?: MigrationCosts;
  stepS?: number;
  horizonS?: number;
  slaCpu?: number;
  maxMoves?: number;
  /** threshold: a host under this share of its threads is emptied */
  threshold?: number;
}

export interface StrategyResult {
  name: Strategy;
  energy_kwh: number;
  migration_kwh: number;
  sla_violation_minutes: number;
  migrations: number;
  wakeups: number;
  hosts_asleep_mean: number;
}

export interface BoundResult {
  energy_kwh: number;
  /** against no migration, % */
  vs_none_pct: number;
}

export interface SimulateResult {
  options: { hosts: number; hours: number; seed: number; stepS: number; horizonS: number; slaCpu: number; maxMoves: number; threshold: number; classes: string[]; costs: string; load: string };
  strategies: StrategyResult[];
  /**
   * The least energy any placement could spend on this load (plan/bound.ts: free and instant
   * migrations and wake-ups), with hosts up to 100% of their threads (`any`) and up to the SLA's
   * ceiling (`sla`); null when the rack has too many classes.
   */
  bound: { any: BoundResult; sla: BoundResult } | null;
  /** per step: the hour, each strategy's rack power (W) and hosts asleep, and the SLA bound's power */
  series: { hour: number[]; power_w: Record<Strategy, number[]>; asleep: Record<Strategy, number[]>; bound_w: number[] | null };
}

const bad = (what: string) => new PostcopyError('ERR_INVALID_ARG', what);
const J_PER_KWH = 3.6e6;
const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;

/** A small seeded PRNG (mulberry32): the same seed, the same rack. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A trace from CSV text: a header `time,container,cpu,mem` (seconds, an id, busy threads, GiB), then rows. */
export function parseTrace(text: string): TraceRow[] {
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== '' && !l.startsWith('#'));
  if (!lines.length) throw bad('the trace is empty');
  const head = lines[0].split(',').map((s) => s.trim().toLowerCase());
  if (head.join(',') !== 'time,container,cpu,mem') throw bad(`the trace's header must be time,container,cpu,mem, not ${lines[0]}`);
  return lines.slice(1).map((l, i) => {
    const f = l.split(',').map((s) => s.trim());
    const [time, cpu, mem] = [Number(f[0]), Number(f[2]), Number(f[3])];
    if (f.length !== 4 || !/^[A-Za-z0-9._:-]{1,128}$/.test(f[1]) || !(time >= 0) || !(cpu >= 0) || !(mem >= 0) || [time, cpu, mem].some((x) => !Number.isFinite(x)))
      throw bad(`trace line ${i + 2}: ${JSON.stringify(l)} is not time (s >= 0), container (an id), cpu (threads >= 0), mem (GiB >= 0)`);
    return { timeS: time, container: f[1], cpu, memGiB: mem };
  }).sort((a, b) => a.timeS - b.timeS);
}

/** The day's shape: a share of each container's peak CPU at this hour (0.25 at night, 1 at 15:00). */
export const diurnal = (hour: number) => {
  const h = ((hour % 24) + 24) % 24;
  return h < 6 || h > 22 ? 0.25 : 0.25 + 0.75 * Math.sin((Math.PI * (h - 6)) / 16) ** 2;
};

/** A seeded synthetic day: containers arriving and leaving, their CPU following the day. */
export function syntheticTrace(seed: number, hosts: number, hours: number, classes: HostClass[], stepS: number): TraceRow[] {
  const r = rng(seed);
  const capacity = Array.from({ length: hosts }, (_, i) => classFor(i, classes).threads).reduce((a, b) => a + b, 0);
  const sizes = [0.5, 1, 1, 2, 2, 4];
  const rows: TraceRow[] = [];
  type Live = { id: string; peak: number; mem: number; endS: number };
  let live: Live[] = [];
  let next = 0;
  // About as many containers as fill 45% of the rack's threads at the peak of the day.
  const population = Math.max(1, Math.round((0.45 * capacity) / 1.75));
  const spawn = (atS: number) => {
    const peak = sizes[Math.floor(r() * sizes.length)];
    live.push({ id: `c${next++}`, peak, mem: round(0.5 + r() * 3.5, 2), endS: atS + 3600 * (1 + r() * 10) });
  };
  for (let i = 0; i < population; i++) spawn(0);
  for (let t = 0; t <= hours * 3600; t += stepS) {
    for (const c of live.filter((x) => x.endS <= t)) rows.push({ timeS: t, container: c.id, cpu: 0, memGiB: 0 });
    live = live.filter((x) => x.endS > t);
    // Arrivals keep the population near its size (a few more by day).
    while (live.length < population * (0.85 + 0.3 * diurnal(t / 3600))) spawn(t);
    for (const c of live) rows.push({ timeS: t, container: c.id, cpu: round(c.peak * diurnal(t / 3600) * (0.85 + 0.3 * r()), 3), memGiB: c.mem });
  }
  return rows;
}

/** Host i's class: every fourth host of the second class (when there is one), the rest of the first. */
const classFor = (i: number, classes: HostClass[]) => (classes.length > 1 && i % 4 === 3 ? classes[1] : classes[0]);

interface SimHost {
  id: string;
  cls: HostClass;
  asleep: boolean;
  containers: Map<string, { cpu: number; mem: number }>;
}

class Rack {
  readonly hosts: SimHost[];
  readonly where = new Map<string, SimHost>();
  readonly recent: RecentMove[] = [];
  energyJ = 0;
  migrationJ = 0;
  migrations = 0;
  wakeups = 0;
  slaMinutes = 0;

  constructor(n: number, classes: HostClass[], readonly o: Required<Omit<SimulateOptions, 'trace' | 'classes' | 'costs'>> & { costs: MigrationCosts }) {
    this.hosts = Array.from({ length: n }, (_, i) => ({ id: `h${String(i).padStart(3, '0')}`, cls: classFor(i, classes), asleep: true, containers: new Map() }));
  }

  cpu = (h: SimHost) => [...h.containers.values()].reduce((n, c) => n + c.cpu, 0);
  mem = (h: SimHost) => [...h.containers.values()].reduce((n, c) => n + c.mem, 0);
  power = (h: SimHost) => (h.asleep ? h.cls.sleepW : hostW(h.cls, this.cpu(h), this.mem(h)));
  fits = (h: SimHost, cpu: number, mem: number) => !h.asleep && this.cpu(h) + cpu <= this.o.slaCpu * h.cls.threads + 1e-9 && this.mem(h) + mem <= h.cls.memGiB + 1e-9;
  addedW = (h: SimHost, cpu: number, mem: number) => marginalW(h.cls, this.cpu(h), this.mem(h), cpu, mem);

  /** The awake host where it adds the least power and fits; else a host woken for it (the most efficient class first). */
  placeFor(cpu: number, mem: number, except?: SimHost): SimHost | null {
    const awake = this.hosts.filter((h) => h !== except && this.fits(h, cpu, mem));
    if (awake.length) return awake.reduce((a, b) => (this.addedW(b, cpu, mem) < this.addedW(a, cpu, mem) - 1e-9 ? b : a));
    const asleep = this.hosts.filter((h) => h !== except && h.asleep && cpu <= this.o.slaCpu * h.cls.threads && mem <= h.cls.memGiB);
    if (!asleep.length) return null;
    const best = asleep.reduce((a, b) => (hostW(b.cls, cpu, mem) / Math.max(cpu, 0.01) < hostW(a.cls, cpu, mem) / Math.max(cpu, 0.01) - 1e-9 ? b : a));
    this.wake(best);
    return best;
  }

  wake(h: SimHost): void {
    h.asleep = false;
    this.wakeups++;
    this.energyJ += h.cls.wakeJ;
  }

  /** A trace row: a new container placed, a demand changed, or (mem 0) a container gone. */
  apply(row: TraceRow): void {
    const h = this.where.get(row.container);
    if (row.memGiB === 0) {
      h?.containers.delete(row.container);
      this.where.delete(row.container);
      return;
    }
    if (h) {
      h.containers.set(row.container, { cpu: row.cpu, mem: row.memGiB });
      return;
    }
    // New: placed; with no room anywhere it goes to the least loaded awake host (an SLA violation).
    const target = this.placeFor(row.cpu, row.memGiB) ?? this.hosts.filter((x) => !x.asleep).sort((a, b) => this.cpu(a) - this.cpu(b))[0] ?? this.hosts[0];
    if (target.asleep) this.wake(target);
    target.containers.set(row.container, { cpu: row.cpu, mem: row.memGiB });
    this.where.set(row.container, target);
  }

  move(id: string, from: SimHost, to: SimHost, nowS: number): void {
    const c = from.containers.get(id)!;
    const containerW = marginalW(from.cls, this.cpu(from) - c.cpu, this.mem(from) - c.mem, c.cpu, c.mem);
    const j = migrationJ(c.mem, containerW, { cls: from.cls, busy: this.cpu(from) }, { cls: to.cls, busy: this.cpu(to) }, this.o.costs);
    this.migrationJ += j;
    this.energyJ += j;
    this.migrations++;
    from.containers.delete(id);
    to.containers.set(id, c);
    this.where.set(id, to);
    this.recent.push({ container: id, from: from.id, to: to.id, atS: nowS });
  }

  /** Moves containers off hosts over the ceiling, smallest first, while some host has room (waking one if it must). */
  relieve(nowS: number): void {
    for (const h of this.hosts) {
      for (let guard = 0; !h.asleep && this.cpu(h) > this.o.slaCpu * h.cls.threads + 1e-9 && guard < 64; guard++) {
        const [id, c] = [...h.containers.entries()].sort((a, b) => a[1].cpu - b[1].cpu || (a[0] < b[0] ? -1 : 1))[0] ?? [];
        if (!id || !c) break;
        const to = this.placeFor(c.cpu, c.mem, h);
        if (!to) break;
        this.move(id, h, to, nowS);
      }
    }
  }

  /** The threshold heuristic: a host under the threshold is emptied when all its containers fit elsewhere. */
  consolidateByThreshold(nowS: number): void {
    for (const h of [...this.hosts].sort((a, b) => this.cpu(a) / a.cls.threads - this.cpu(b) / b.cls.threads || (a.id < b.id ? -1 : 1))) {
      if (h.asleep || !h.containers.size || this.cpu(h) >= this.o.threshold * h.cls.threads) continue;
      const placed: [string, SimHost][] = [];
      const others = this.hosts.filter((x) => x !== h && !x.asleep);
      const room = new Map(others.map((x) => [x, { cpu: this.cpu(x), mem: this.mem(x) }]));
      for (const [id, c] of [...h.containers.entries()].sort((a, b) => b[1].cpu - a[1].cpu || (a[0] < b[0] ? -1 : 1))) {
        const to = others.find((x) => room.get(x)!.cpu + c.cpu <= this.o.slaCpu * x.cls.threads && room.get(x)!.mem + c.mem <= x.cls.memGiB);
        if (!to) break;
        room.get(to)!.cpu += c.cpu;
        room.get(to)!.mem += c.mem;
        placed.push([id, to]);
      }
      if (placed.length !== h.containers.size) continue;
      for (const [id, to] of placed) this.move(id, h, to, nowS);
    }
  }

  /** The planner, as it would run on the agents' report of the rack. */
  consolidateByPlan(nowS: number): void {
    const hosts: PlanHost[] = this.hosts.map((h) => ({ id: h.id, cls: h.cls.name, asleep: h.asleep, containers: [...h.containers.entries()].map(([id, c]) => ({ id, cpu: c.cpu, memGiB: c.mem })) }));
    const classes = Object.fromEntries(this.hosts.map((h) => [h.cls.name, h.cls]));
    const moves = plan({ hosts, classes, nowS, horizonS: this.o.horizonS, slaCpu: this.o.slaCpu, maxMoves: this.o.maxMoves, recent: this.recent.filter((r) => nowS - r.atS < this.o.horizonS), costs: this.o.costs });
    const byId = new Map(this.hosts.map((h) => [h.id, h]));
    for (const m of moves) this.move(m.container, byId.get(m.from)!, byId.get(m.to)!, nowS);
  }

  /** Hosts with nothing on them sleep. */
  sleepEmpty(): void {
    for (const h of this.hosts) if (!h.asleep && h.containers.size === 0) h.asleep = true;
  }
}

export function simulate(options: SimulateOptions): SimulateResult {
  const classes = options.classes ?? DEFAULT_CLASSES;
  const o = {
    hosts: options.hosts,
    hours: options.hours,
    seed: options.seed,
    stepS: options.stepS ?? 300,
    horizonS: options.horizonS ?? 3600,
    slaCpu: options.slaCpu ?? 0.8,
    maxMoves: options.maxMoves ?? 8,
    threshold: options.threshold ?? 0.2,
    costs: options.costs ?? DEFAULT_COSTS,
  };
  if (!(Number.isInteger(o.hosts) && o.hosts >= 1 && o.hosts <= 10_000)) throw bad(`--hosts must be 1 to 10000, not ${o.hosts}`);
  if (!(o.hours > 0 && o.hours <= 24 * 366)) throw bad(`--hours must be above 0 and at most a year, not ${o.hours}`);
  if (!Number.isSafeInteger(o.seed)) throw bad(`--seed must be a whole number, not ${o.seed}`);
  if (!(o.stepS >= 1)) throw bad(`the step must be 1 s or more, not ${o.stepS}`);
  if (!classes.length) throw bad('no host class');
  const trace = options.trace ?? syntheticTrace(o.seed, o.hosts, o.hours, classes, o.stepS);
  const steps = Math.floor((o.hours * 3600) / o.stepS);
  const hour = Array.from({ length: steps }, (_, i) => round((i * o.stepS) / 3600, 4));
  const hostClasses = Array.from({ length: o.hosts }, (_, i) => classFor(i, classes));
  const boundAny = boundSeries(trace, hostClasses, steps, o.stepS, 1);
  const boundSla = boundSeries(trace, hostClasses, steps, o.stepS, o.slaCpu);
  const series = { hour, power_w: {} as Record<Strategy, number[]>, asleep: {} as Record<Strategy, number[]>, bound_w: boundSla && boundSla.map((w) => round(w, 1)) };
  const strategies: StrategyResult[] = [];
  for (const name of STRATEGIES) {
    const rack = new Rack(o.hosts, classes, o);
    const power: number[] = [];
    const asleep: number[] = [];
    let next = 0;
    for (let i = 0; i < steps; i++) {
      const t = i * o.stepS;
      for (; next < trace.length && trace[next].timeS <= t; next++) rack.apply(trace[next]);
      if (name !== 'none') rack.relieve(t);
      if (name === 'threshold') rack.consolidateByThreshold(t);
      if (name === 'planner') rack.consolidateByPlan(t);
      rack.sleepEmpty();
      const w = rack.hosts.reduce((n, h) => n + rack.power(h), 0);
      rack.energyJ += w * o.stepS;
      power.push(round(w, 1));
      asleep.push(rack.hosts.filter((h) => h.asleep).length);
      for (const h of rack.hosts) if (!h.asleep && rack.cpu(h) > o.slaCpu * h.cls.threads + 1e-9) rack.slaMinutes += o.stepS / 60;
    }
    series.power_w[name] = power;
    series.asleep[name] = asleep;
    strategies.push({
      name,
      energy_kwh: round(rack.energyJ / J_PER_KWH),
      migration_kwh: round(rack.migrationJ / J_PER_KWH, 5),
      sla_violation_minutes: round(rack.slaMinutes, 1),
      migrations: rack.migrations,
      wakeups: rack.wakeups,
      hosts_asleep_mean: round(asleep.reduce((a, b) => a + b, 0) / Math.max(1, asleep.length), 2),
    });
  }
  return {
    options: { hosts: o.hosts, hours: o.hours, seed: o.seed, stepS: o.stepS, horizonS: o.horizonS, slaCpu: o.slaCpu, maxMoves: o.maxMoves, threshold: o.threshold, classes: classes.map((c) => c.name), costs: o.costs.source, load: options.trace ? `a trace of ${trace.length} rows` : `synthetic, seed ${o.seed}` },
    strategies,
    bound: boundAny && boundSla && { any: boundResult(boundAny, o.stepS, strategies[0]), sla: boundResult(boundSla, o.stepS, strategies[0]) },
    series,
  };
}

function boundResult(watts: number[], stepS: number, none: StrategyResult): BoundResult {
  const kwh = watts.reduce((a, w) => a + w * stepS, 0) / J_PER_KWH;
  return { energy_kwh: round(kwh), vs_none_pct: round((kwh / none.energy_kwh - 1) * 100, 1) };
}

/** The bound's power at each step, from the rack's total demand then; null if it cannot be had. */
function boundSeries(trace: TraceRow[], hostClasses: HostClass[], steps: number, stepS: number, ceiling: number): number[] | null {
  const rack = countClasses(hostClasses);
  const demand = new Map<string, { cpu: number; mem: number }>();
  const out: number[] = [];
  let next = 0;
  for (let i = 0; i < steps; i++) {
    for (; next < trace.length && trace[next].timeS <= i * stepS; next++) {
      const row = trace[next];
      if (row.memGiB === 0) demand.delete(row.container);
      else demand.set(row.container, { cpu: row.cpu, mem: row.memGiB });
    }
    let [cpu, mem] = [0, 0];
    for (const d of demand.values()) [cpu, mem] = [cpu + d.cpu, mem + d.mem];
    const w = powerLowerBoundW(rack, cpu, mem, ceiling);
    if (w === null) return null;
    out.push(w);
  }
  return out;
}

export function formatSimulation(r: SimulateResult): string {
  const none = r.strategies.find((s) => s.name === 'none')!;
  return [
    `A rack of ${r.options.hosts} hosts (${r.options.classes.join(', ')}) over ${r.options.hours} h, ${r.options.load}; CPU ceiling ${r.options.slaCpu * 100}%, horizon ${r.options.horizonS / 3600} h, at most ${r.options.maxMoves} moves a step of ${r.options.stepS / 60} min.`,
    `Migration costs: ${r.options.costs}.`,
    '',
    '| strategy | energy kWh | vs none | migration kWh | SLA-violation minutes | migrations | wake-ups | hosts asleep (mean) |',
    '|---|---|---|---|---|---|---|---|',
    ...r.strategies.map((s) => `| ${s.name} | ${s.energy_kwh} | ${s === none ? '–' : `${Math.round((s.energy_kwh / none.energy_kwh - 1) * 1000) / 10}%`} | ${s.migration_kwh} | ${s.sla_violation_minutes} | ${s.migrations} | ${s.wakeups} | ${s.hosts_asleep_mean} |`),
    '',
    r.bound
      ? [
          `The least any placement could spend on this load, with free and instant migrations and wake-ups (a lower bound):`,
          `- keeping every host under the CPU ceiling: ${r.bound.sla.energy_kwh} kWh (${r.bound.sla.vs_none_pct}% against none);`,
          `- with hosts up to 100% of their threads: ${r.bound.any.energy_kwh} kWh (${r.bound.any.vs_none_pct}%).`,
        ].join('\n')
      : 'No lower bound: the rack has too many host classes to try every mix.',
  ].join('\n');
}

const BOUND_LABEL = 'least possible';

/** Rack power over the simulated time, one line per strategy (a vega-lite spec, for bench/plot.ts). */
export function powerPlotSpec(r: SimulateResult): object {
  const values = STRATEGIES.flatMap((name) => r.series.hour.map((hour, i) => ({ hour, strategy: name, kw: r.series.power_w[name][i] / 1000 })));
  const bound = r.series.bound_w;
  if (bound) values.push(...r.series.hour.map((hour, i) => ({ hour, strategy: BOUND_LABEL as Strategy, kw: bound[i] / 1000 })));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `Rack power, ${r.options.hosts} hosts over ${r.options.hours} h (${r.options.load})`,
    width: 640,
    height: 280,
    data: { values },
    mark: { type: 'line', strokeWidth: 1.5 },
    encoding: {
      x: { field: 'hour', type: 'quantitative', title: 'hour' },
      y: { field: 'kw', type: 'quantitative', title: 'rack power (kW)' },
      color: { field: 'strategy', type: 'nominal', title: null, scale: { domain: [...STRATEGIES, BOUND_LABEL], range: ['#bbbbbb', '#f58518', '#4c78a8', '#54a24b'] } },
      strokeDash: { field: 'strategy', type: 'nominal', title: null, scale: { domain: [...STRATEGIES, BOUND_LABEL], range: [[1, 0], [1, 0], [1, 0], [4, 3]] } },
    },
  };
}
