// The planner: a rack's state in, the migrations worth making out. Pure and deterministic (every
// choice is broken by ids). A move is proposed only when the energy it saves over the horizon is
// more than the energy it costs (model.ts, migrationJ). Two kinds:
//   - emptying a host: every container of a lightly loaded host goes where it adds the least power,
//     and the host sleeps; the host's saving is shared among its moves by their CPU;
//   - a better class: a container moves to a host where its marginal power is lower.
// Every move respects the targets' CPU ceiling (the SLA) and memory, a limit on moves, and never
// sends a container back to a host it left within the horizon (no ping-pong).
import { PostcopyError } from '../errors.js';
import { hostW, marginalW, migrationJ, type HostClass, type MigrationCosts } from '../util/power-model.js';

export interface PlanContainer {
  id: string;
  /** busy threads */
  cpu: number;
  memGiB: number;
}

export interface PlanHost {
  id: string;
  cls: string;
  asleep: boolean;
  containers: PlanContainer[];
}

export interface RecentMove {
  container: string;
  from: string;
  to: string;
  atS: number;
}

export interface PlanInput {
  hosts: PlanHost[];
  classes: Record<string, HostClass>;
  nowS: number;
  horizonS: number;
  /** the CPU ceiling of a host, a share of its threads (the SLA), e.g. 0.8 */
  slaCpu: number;
  /** moves at most (migrations in flight) */
  maxMoves: number;
  /** moves made before: none undone within the horizon */
  recent: RecentMove[];
  costs: MigrationCosts;
}

export interface Move {
  container: string;
  from: string;
  to: string;
  /** energy saved over the horizon, J, and what the migration itself costs, J */
  gainJ: number;
  costJ: number;
  reason: 'empty-host' | 'better-class';
}

interface Load {
  host: PlanHost;
  cls: HostClass;
  cpu: number;
  mem: number;
  /** emptied by this plan: it sleeps, and takes nothing */
  emptied: boolean;
  /** took a container in this plan: not emptied in turn */
  receiving: boolean;
}

const byId = (a: { id: string }, b: { id: string }) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export function checkPlanInput(input: PlanInput): void {
  const bad = (what: string) => new PostcopyError('ERR_INVALID_ARG', what);
  if (!(input.horizonS > 0)) throw bad(`the horizon must be positive, not ${input.horizonS} s`);
  if (!(input.slaCpu > 0 && input.slaCpu <= 1)) throw bad(`the CPU ceiling is a share of a host's threads, above 0 and at most 1, not ${input.slaCpu}`);
  if (!(Number.isInteger(input.maxMoves) && input.maxMoves >= 0)) throw bad(`moves at most: a whole number, not ${input.maxMoves}`);
  const seen = new Set<string>();
  for (const h of input.hosts) {
    if (!input.classes[h.cls]) throw bad(`host ${h.id}: unknown host class ${h.cls} (known: ${Object.keys(input.classes).join(', ')})`);
    if (seen.has(h.id)) throw bad(`host ${h.id} is listed twice`);
    seen.add(h.id);
    for (const c of h.containers) if (!(c.cpu >= 0 && c.memGiB >= 0)) throw bad(`container ${c.id}: CPU and memory must be 0 or more`);
  }
}

export function plan(input: PlanInput): Move[] {
  checkPlanInput(input);
  const loads: Load[] = [...input.hosts].sort(byId).map((host) => ({
    host,
    cls: input.classes[host.cls],
    cpu: host.containers.reduce((n, c) => n + c.cpu, 0),
    mem: host.containers.reduce((n, c) => n + c.memGiB, 0),
    emptied: false,
    receiving: false,
  }));
  const moves: Move[] = [];
  const fits = (t: Load, c: PlanContainer) => !t.host.asleep && !t.emptied && t.cpu + c.cpu <= input.slaCpu * t.cls.threads + 1e-9 && t.mem + c.memGiB <= t.cls.memGiB + 1e-9;
  const leftRecently = (c: PlanContainer, t: Load) => input.recent.some((r) => r.container === c.id && r.from === t.host.id && input.nowS - r.atS < input.horizonS);
  const addW = (t: Load, c: PlanContainer) => marginalW(t.cls, t.cpu, t.mem, c.cpu, c.memGiB);
  const containerW = (h: Load, c: PlanContainer) => marginalW(h.cls, h.cpu - c.cpu, h.mem - c.memGiB, c.cpu, c.memGiB);
  const cost = (c: PlanContainer, from: Load, to: Load) => migrationJ(c.memGiB, containerW(from, c), { cls: from.cls, busy: from.cpu }, { cls: to.cls, busy: to.cpu }, input.costs);

  // 1. Empty the least loaded hosts, each as a whole.
  const candidates = loads.filter((l) => !l.host.asleep && l.host.containers.length > 0).sort((a, b) => a.cpu / a.cls.threads - b.cpu / b.cls.threads || byId(a.host, b.host));
  for (const h of candidates) {
    if (h.receiving || h.emptied) continue;
    const containers = [...h.host.containers].sort((a, b) => b.cpu - a.cpu || byId(a, b));
    if (moves.length + containers.length > input.maxMoves) continue;
    const savedW = hostW(h.cls, h.cpu, h.mem) - h.cls.sleepW;
    const shareOf = (c: PlanContainer) => (c.cpu + 0.01) / containers.reduce((n, x) => n + x.cpu + 0.01, 0);
    const tentative: { c: PlanContainer; to: Load; addedW: number; costJ: number }[] = [];
    h.emptied = true; // takes nothing of its own
    for (const c of containers) {
      const targets = loads.filter((t) => t !== h && fits(t, c) && !leftRecently(c, t));
      if (!targets.length) break;
      const best = targets.reduce((a, b) => (addW(b, c) < addW(a, c) - 1e-9 ? b : a));
      const addedW = addW(best, c);
      const costJ = cost(c, h, best);
      tentative.push({ c, to: best, addedW, costJ });
      best.cpu += c.cpu;
      best.mem += c.memGiB;
    }
    const whole = tentative.length === containers.length;
    const gains = tentative.map((m) => savedW * shareOf(m.c) * input.horizonS - m.addedW * input.horizonS);
    if (whole && tentative.every((m, i) => gains[i] > m.costJ)) {
      for (const [i, m] of tentative.entries()) {
        m.to.receiving = true;
        moves.push({ container: m.c.id, from: h.host.id, to: m.to.host.id, gainJ: gains[i], costJ: m.costJ, reason: 'empty-host' });
      }
      h.cpu = 0;
      h.mem = 0;
      continue;
    }
    // Not worth it: as it was.
    for (const m of tentative) {
      m.to.cpu -= m.c.cpu;
      m.to.mem -= m.c.memGiB;
    }
    h.emptied = false;
  }

  // 2. A container where it draws less, the host it leaves staying up.
  const moved = new Set(moves.map((m) => m.container));
  for (const h of loads) {
    if (h.host.asleep || h.emptied) continue;
    for (const c of [...h.host.containers].sort(byId)) {
      if (moves.length >= input.maxMoves) return moves;
      if (moved.has(c.id)) continue;
      const hereW = containerW(h, c);
      const targets = loads.filter((t) => t !== h && t.cls !== h.cls && fits(t, c) && !leftRecently(c, t));
      if (!targets.length) continue;
      const best = targets.reduce((a, b) => (addW(b, c) < addW(a, c) - 1e-9 ? b : a));
      const gainJ = (hereW - addW(best, c)) * input.horizonS;
      const costJ = cost(c, h, best);
      if (gainJ <= costJ) continue;
      moves.push({ container: c.id, from: h.host.id, to: best.host.id, gainJ, costJ, reason: 'better-class' });
      moved.add(c.id);
      h.cpu -= c.cpu;
      h.mem -= c.memGiB;
      best.cpu += c.cpu;
      best.mem += c.memGiB;
      best.receiving = true;
    }
  }
  return moves;
}
