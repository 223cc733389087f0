// The least power any placement could draw for a rack's demand: a lower bound to judge strategies by.
// Pure. It relaxes everything a real strategy pays for:
//   - hosts may run up to the ceiling given (1: all their threads), and memory may fill them;
//   - migrations and wake-ups are free and instant, so each step is placed afresh;
//   - a host's CPU power is taken on the chord of its curve from idle to all threads. The curves are
//     concave (Table 5), so the chord lies on or under them: this can only lower the figure.
// What is left is a choice of how many hosts of each class stay awake, tried exhaustively.
import { curveW, type HostClass } from '../util/power-model.js';

export interface ClassCount {
  cls: HostClass;
  count: number;
}

/** Past this many combinations of awake hosts per class, no bound is given (null). */
const MAX_COMBINATIONS = 200_000;

/** The rack's hosts, grouped by class, in the order the classes first appear. */
export function countClasses(hostClasses: HostClass[]): ClassCount[] {
  const byName = new Map<string, ClassCount>();
  for (const cls of hostClasses) {
    const c = byName.get(cls.name) ?? byName.set(cls.name, { cls, count: 0 }).get(cls.name)!;
    c.count++;
  }
  return [...byName.values()];
}

/**
 * A lower bound on the rack's power (W) for this much busy CPU (threads) and memory (GiB) in use,
 * over every placement that keeps each host's CPU at or under `ceiling` of its threads; demand past
 * that capacity is capped at it. Null if the rack has too many classes to try every mix.
 */
export function powerLowerBoundW(rack: ClassCount[], cpu: number, memGiB: number, ceiling = 1): number | null {
  const combinations = rack.reduce((n, c) => n * (c.count + 1), 1);
  if (combinations > MAX_COMBINATIONS) return null;
  const kinds = rack.map(({ cls, count }) => {
    const threads = cls.threads * ceiling;
    return {
      count,
      threads,
      memGiB: cls.memGiB,
      // what an awake host adds over its sleeping self, before any load
      fixedW: cls.chassisW + curveW(cls, 0) - cls.sleepW,
      wPerThread: (curveW(cls, threads) - curveW(cls, 0)) / threads,
      wPerGiB: cls.wPerGiB,
    };
  });
  const asleepW = rack.reduce((n, c) => n + c.count * c.cls.sleepW, 0);
  const cpuNeeded = Math.min(cpu, kinds.reduce((n, k) => n + k.count * k.threads, 0));
  const memNeeded = Math.min(memGiB, kinds.reduce((n, k) => n + k.count * k.memGiB, 0));
  // CPU goes to the cheapest threads first, memory to the cheapest GiB first.
  const byThread = [...kinds.keys()].sort((a, b) => kinds[a].wPerThread - kinds[b].wPerThread);
  const byGiB = [...kinds.keys()].sort((a, b) => kinds[a].wPerGiB - kinds[b].wPerGiB);
  const awake = kinds.map(() => 0);
  let best = Infinity;
  const fill = (order: number[], need: number, size: (k: number) => number, w: (k: number) => number) => {
    let left = need;
    let watts = 0;
    for (const k of order) {
      const take = Math.min(left, awake[k] * size(k));
      watts += take * w(k);
      left -= take;
    }
    return left > 1e-9 ? Infinity : watts;
  };
  const visit = (i: number) => {
    if (i < kinds.length) {
      for (let n = 0; n <= kinds[i].count; n++) {
        awake[i] = n;
        visit(i + 1);
      }
      return;
    }
    const fixed = awake.reduce((n, a, k) => n + a * kinds[k].fixedW, 0);
    if (fixed >= best) return;
    const w = fixed + fill(byThread, cpuNeeded, (k) => kinds[k].threads, (k) => kinds[k].wPerThread) + fill(byGiB, memNeeded, (k) => kinds[k].memGiB, (k) => kinds[k].wPerGiB);
    if (w < best) best = w;
  };
  visit(0);
  return asleepW + best;
}
