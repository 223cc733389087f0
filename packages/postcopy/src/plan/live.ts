// `postcopy plan`: the planner on a live rack. Each agent says its host class and its containers'
// load (STATE); the planner proposes the moves worth making; with --apply, each source agent is
// asked to make its move (MIGRATE, with the forecast and the prices it was made with, so that its
// ledger holds the measured cost beside the forecast). An agent that cannot be reached is left
// alone and reported; a move that fails leaves its container where it was, and the plan goes on.
import { askState, measuredCostJ, migrateOver } from '../agent/agent.js';
import type { RemoteMigrateResult } from '../agent/source-host.js';
import type { AgentChannel } from '../transport/agent-channel.js';
import { DEFAULT_CLASSES, DEFAULT_COSTS, marginalW, type HostClass, type MigrationCosts } from '../util/power-model.js';
import { plan, type Move, type PlanHost } from './planner.js';

export interface LivePlanOptions {
  /** the agents, as HOST[:PORT] (or tcp:// and tls:// endpoints) */
  agents: string[];
  connect: (to: string) => Promise<AgentChannel>;
  classes?: HostClass[];
  costs?: MigrationCosts;
  horizonS: number;
  slaCpu: number;
  maxMoves: number;
  apply: boolean;
  onMove?: (move: PlannedMove, outcome: Applied) => void;
}

export interface PlannedMove extends Move {
  /** the agents' addresses */
  fromAgent: string;
  toAgent: string;
}

export interface Applied {
  ok: boolean;
  code?: string;
  message?: string;
  running?: string;
  measuredCostJ?: number;
  downtime_ms?: number;
  all_present_ms?: number;
}

export interface LivePlan {
  hosts: (PlanHost & { agent: string })[];
  unreachable: { agent: string; code: string; message: string }[];
  moves: PlannedMove[];
  applied: (Applied & { container: string })[] | null;
}

export async function planLive(o: LivePlanOptions): Promise<LivePlan> {
  const classes = Object.fromEntries((o.classes ?? DEFAULT_CLASSES).map((c) => [c.name, c]));
  const costs = o.costs ?? DEFAULT_COSTS;
  const hosts: LivePlan['hosts'] = [];
  const unreachable: LivePlan['unreachable'] = [];
  for (const agent of o.agents) {
    try {
      const state = await askState(await o.connect(agent));
      if (!classes[state.hostClass]) throw Object.assign(new Error(`host class ${state.hostClass} is not among ${Object.keys(classes).join(', ')} (--classes)`), { code: 'ERR_INVALID_ARG' });
      hosts.push({ agent, id: state.agent, cls: state.hostClass, asleep: false, containers: state.containers.map((c) => ({ id: c.id, cpu: c.cpu, memGiB: c.memGiB })) });
    } catch (err) {
      unreachable.push({ agent, code: (err as { code?: string }).code ?? 'ERR_PEER_CLOSED', message: (err as Error).message });
    }
  }
  const addressOf = new Map(hosts.map((h) => [h.id, h.agent]));
  const moves = plan({ hosts, classes, nowS: 0, horizonS: o.horizonS, slaCpu: o.slaCpu, maxMoves: o.maxMoves, recent: [], costs }).map((m) => ({ ...m, fromAgent: addressOf.get(m.from)!, toAgent: addressOf.get(m.to)! }));
  if (!o.apply) return { hosts, unreachable, moves, applied: null };
  const applied: NonNullable<LivePlan['applied']> = [];
  for (const m of moves) {
    // Priced as the forecast was: a busy thread at each end's load, the NIC's energy per byte.
    const busy = (h: PlanHost) => h.containers.reduce((n, c) => n + c.cpu, 0);
    const from = hosts.find((h) => h.id === m.from)!;
    const to = hosts.find((h) => h.id === m.to)!;
    const threadW = (marginalW(classes[from.cls], busy(from), 0, costs.threadsPerEnd, 0) + marginalW(classes[to.cls], busy(to), 0, costs.threadsPerEnd, 0)) / 2;
    const price = { threadW, nicJPerByte: costs.nicJPerByte };
    let outcome: Applied;
    try {
      const result: RemoteMigrateResult = await migrateOver(await o.connect(m.fromAgent), { container: m.container, to: m.toAgent, forecast: { gainJ: m.gainJ, costJ: m.costJ, ...price } });
      outcome = { ok: true, measuredCostJ: Math.round(measuredCostJ(result, price)), downtime_ms: result.downtime_ms, all_present_ms: result.all_present_ms };
    } catch (err) {
      const e = err as { code?: string; message?: string; running?: string };
      outcome = { ok: false, code: e.code ?? 'ERR_REMOTE', message: e.message, running: e.running };
    }
    applied.push({ container: m.container, ...outcome });
    o.onMove?.(m, outcome);
  }
  return { hosts, unreachable, moves, applied };
}

export function formatLivePlan(p: LivePlan): string {
  const kj = (j: number) => (j / 1000).toFixed(1);
  return [
    `${p.hosts.length} hosts answered: ${p.hosts.map((h) => `${h.id} (${h.cls}, ${h.containers.length} containers)`).join(', ') || 'none'}.`,
    ...p.unreachable.map((u) => `left alone: ${u.agent}: ${u.code}: ${u.message}`),
    '',
    p.moves.length ? '| container | from | to | why | forecast gain kJ | forecast cost kJ | applied |' : 'No move saves more energy than it costs.',
    ...(p.moves.length ? ['|---|---|---|---|---|---|---|'] : []),
    ...p.moves.map((m, i) => {
      const a = p.applied?.[i];
      const done = !a ? '–' : a.ok ? `ok, measured cost ${kj(a.measuredCostJ ?? 0)} kJ` : `failed: ${a.code} (${a.running ?? '?'} runs)`;
      return `| ${m.container} | ${m.from} | ${m.to} | ${m.reason} | ${kj(m.gainJ)} | ${kj(m.costJ)} | ${done} |`;
    }),
  ].join('\n');
}
