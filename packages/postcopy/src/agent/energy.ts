// What a host draws, and each container's share of it, for the agent's /metrics: measured by RAPL
// where the host has it, else from the power model of the host's class (util/power-model.ts, from
// the D6.9 report's Table 5). A container's share is its share of the host's busy CPU time, as
// Kepler and Scaphandre split a host's power.
import { readFileSync } from 'node:fs';
import { hostW, type HostClass } from '../util/power-model.js';
import { RaplReader } from '../util/rapl.js';
import type { ContainerLoad } from './host-state.js';

/** USER_HZ: /proc/stat's clock ticks per second */
const USER_HZ = 100;

export interface PowerSample {
  source: 'rapl' | 'model';
  hostW: number;
  containers: { id: string; watts: number }[];
}

/** Busy and total CPU ticks of the whole host (/proc/stat's first line). */
function cpuTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

export class HostPower {
  readonly #cls: HostClass | null;
  readonly #rapl: RaplReader | null;
  #last: { at: number; busy: number };

  /** `cls`: the model's class of this host (null: unknown, RAPL only); `powercap`: where RAPL is */
  constructor(cls: HostClass | null, powercap?: string) {
    this.#cls = cls;
    this.#rapl = RaplReader.open(powercap);
    this.#last = { at: performance.now(), busy: cpuTicks().busy };
  }

  get available(): boolean {
    return !!this.#rapl || !!this.#cls;
  }

  /** Power since the last sample; null where neither RAPL nor a model is there, or no time passed. */
  sample(containers: ContainerLoad[]): PowerSample | null {
    const now = performance.now();
    const seconds = (now - this.#last.at) / 1000;
    const busy = cpuTicks().busy;
    const busyThreads = Math.max(0, (busy - this.#last.busy) / USER_HZ / Math.max(seconds, 1e-3));
    const joules = this.#rapl?.joulesSinceLast();
    this.#last = { at: now, busy };
    if (seconds <= 0) return null;
    const memGiB = containers.reduce((n, c) => n + c.memGiB, 0);
    const source = joules !== undefined ? 'rapl' : this.#cls ? 'model' : null;
    if (!source) return null;
    const watts = joules !== undefined ? joules / seconds : hostW(this.#cls!, busyThreads, memGiB);
    // Shares of the host's busy time: a container's CPU over the host's (the rest is the host's own).
    const share = (cpu: number) => (busyThreads > 0 ? Math.min(1, cpu / busyThreads) : 0);
    return { source, hostW: watts, containers: containers.map((c) => ({ id: c.id, watts: watts * share(c.cpu) })) };
  }
}
