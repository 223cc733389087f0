// The energy model: what a host draws for its load, asleep, and to wake; what a migration costs.
// Pure. Defaults come from the D6.9 report (Table 5: a Xeon D m510 cartridge, CPU and memory, idle
// to 32 busy threads) and from this machine's `bench --container` (docs/energy.md says where each
// number comes from, and how to calibrate a host with RAPL).
import { PostcopyError } from '../errors.js';
import { isName } from '../protocol/schema.js';

export interface HostClass {
  name: string;
  /** hardware threads (the CPU capacity, in busy threads) */
  threads: number;
  memGiB: number;
  /** CPU and memory power, W, at so many busy threads: points of a piecewise-linear curve from 0 */
  power: [threads: number, watts: number][];
  /** the host's share of its chassis (fans, power supply, management), W, while it is awake */
  chassisW: number;
  /** W per GiB of memory in use, on top of the curve (0 where the curve has memory in it already) */
  wPerGiB: number;
  /** W asleep (suspend to RAM, chassis share included) */
  sleepW: number;
  /** seconds to wake, and the energy a wake-up takes, J */
  wakeS: number;
  wakeJ: number;
}

/** The costs of a migration, per GiB of the container's memory, measured by `bench --container`. */
export interface MigrationCosts {
  /** freeze to every page present, s per GiB */
  allPresentSPerGiB: number;
  /** freeze to running on the destination, s (mostly runc's checkpoint and restore, whatever the size) */
  downtimeS: number;
  /** bytes on the wire per GiB of memory (pages, checksums, headers) */
  bytesPerGiB: number;
  /** busy threads on each end while a migration runs (the source's page server, the destination's handler) */
  threadsPerEnd: number;
  /** the NIC's energy per byte, J (both ends together) */
  nicJPerByte: number;
  /** where the figures were measured */
  source: string;
}

export const XEON_D_M510: HostClass = {
  name: 'xeon-d-m510',
  threads: 32,
  memGiB: 64,
  // D6.9, Table 5, "Total (W)": CPU + memory, idle and 1, 4, 8, 16, 32 ANN threads.
  power: [[0, 27], [1, 51], [4, 65.5], [8, 81], [16, 101], [32, 109]],
  chassisW: 40,
  wPerGiB: 0,
  sleepW: 6,
  wakeS: 60,
  wakeJ: 60 * 67,
};

export const ARM_LOW_POWER: HostClass = {
  name: 'arm-low-power',
  threads: 8,
  memGiB: 16,
  // An 8-core ARM server board of the low-power class (assumed figures, see docs/energy.md).
  power: [[0, 7], [1, 10], [4, 17], [8, 26]],
  chassisW: 10,
  wPerGiB: 0,
  sleepW: 2,
  wakeS: 30,
  wakeJ: 30 * 17,
};

export const DEFAULT_CLASSES: HostClass[] = [XEON_D_M510, ARM_LOW_POWER];

/** From docs/data/container-bench-session10.json (memproc 512 MiB and redis 1M keys, postcopy). */
export const DEFAULT_COSTS: MigrationCosts = {
  allPresentSPerGiB: 2.9,
  downtimeS: 0.6,
  bytesPerGiB: 1.075 * 2 ** 30,
  threadsPerEnd: 1,
  nicJPerByte: 5e-9,
  source: 'bench --container, 2026-12-07 (docs/data/container-bench-session10.json): memproc 512 MiB all present 1.50 s, downtime 0.62 s',
};

const bad = (what: string) => new PostcopyError('ERR_INVALID_ARG', what);
const finiteAtLeast = (v: unknown, min: number) => typeof v === 'number' && Number.isFinite(v) && v >= min;

/** A host class as a config file gives it, checked: a clear ERR_INVALID_ARG naming the field. */
export function checkHostClass(c: unknown): HostClass {
  const h = c as HostClass;
  if (typeof h !== 'object' || h === null) throw bad('a host class is an object');
  const name = isName(h.name) ? h.name : null;
  if (!name) throw bad(`host class name ${JSON.stringify(h.name)}: 1 to 64 letters, digits, '.', '_' or '-'`);
  for (const f of ['threads', 'memGiB'] as const) if (!finiteAtLeast(h[f], 1)) throw bad(`host class ${name}: ${f} must be 1 or more, not ${h[f]}`);
  for (const f of ['chassisW', 'wPerGiB', 'sleepW', 'wakeS', 'wakeJ'] as const) if (!finiteAtLeast(h[f], 0)) throw bad(`host class ${name}: ${f} must be a number of 0 or more (watts, seconds, joules), not ${h[f]}`);
  if (!Array.isArray(h.power) || h.power.length < 2) throw bad(`host class ${name}: power is a list of at least two [threads, watts] points`);
  let last = -1;
  for (const p of h.power) {
    if (!Array.isArray(p) || p.length !== 2 || !finiteAtLeast(p[0], 0) || !finiteAtLeast(p[1], 0)) throw bad(`host class ${name}: power point ${JSON.stringify(p)} is not [threads >= 0, watts >= 0]`);
    if (p[0] <= last) throw bad(`host class ${name}: power points must go up in threads`);
    last = p[0];
  }
  if (h.power[0][0] !== 0) throw bad(`host class ${name}: the power curve starts at 0 threads (idle)`);
  return { name, threads: h.threads, memGiB: h.memGiB, power: h.power.map(([t, w]) => [t, w]), chassisW: h.chassisW, wPerGiB: h.wPerGiB, sleepW: h.sleepW, wakeS: h.wakeS, wakeJ: h.wakeJ };
}

export function checkCosts(c: unknown): MigrationCosts {
  const m = c as MigrationCosts;
  if (typeof m !== 'object' || m === null) throw bad('migration costs are an object');
  for (const f of ['allPresentSPerGiB', 'downtimeS', 'bytesPerGiB', 'threadsPerEnd', 'nicJPerByte'] as const)
    if (!finiteAtLeast(m[f], 0)) throw bad(`migration costs: ${f} must be a number of 0 or more, not ${m[f]}`);
  return { ...m, source: typeof m.source === 'string' ? m.source : 'given' };
}

/** CPU and memory power at so many busy threads (clamped to the class's threads), interpolated; W. */
export function curveW(cls: HostClass, busyThreads: number): number {
  const t = Math.min(Math.max(busyThreads, 0), cls.threads);
  const pts = cls.power;
  for (let i = 1; i < pts.length; i++) {
    const [t0, w0] = pts[i - 1];
    const [t1, w1] = pts[i];
    if (t <= t1) return w0 + ((w1 - w0) * (t - t0)) / (t1 - t0);
  }
  // past the last point: on along the last segment's slope
  const [ta, wa] = pts[pts.length - 2];
  const [tb, wb] = pts[pts.length - 1];
  return wb + ((wb - wa) * (t - tb)) / (tb - ta);
}

/** An awake host's power for its load, W. */
export function hostW(cls: HostClass, busyThreads: number, memGiB: number): number {
  return cls.chassisW + curveW(cls, busyThreads) + cls.wPerGiB * memGiB;
}

/** What one more busy thread costs on this host now, W (the marginal power). */
export const marginalW = (cls: HostClass, busyThreads: number, memGiB: number, addThreads: number, addGiB: number) =>
  hostW(cls, busyThreads + addThreads, memGiB + addGiB) - hostW(cls, busyThreads, memGiB);

/**
 * A migration's own energy, J: the threads it keeps busy on both ends while the pages move, the NIC
 * for its bytes, and the container's power while it is stopped (downtime: work that waits).
 */
export function migrationJ(memGiB: number, containerW: number, from: { cls: HostClass; busy: number }, to: { cls: HostClass; busy: number }, costs: MigrationCosts): number {
  const seconds = costs.downtimeS + costs.allPresentSPerGiB * memGiB;
  const busyW = marginalW(from.cls, from.busy, 0, costs.threadsPerEnd, 0) + marginalW(to.cls, to.busy, 0, costs.threadsPerEnd, 0);
  return busyW * seconds + costs.bytesPerGiB * memGiB * costs.nicJPerByte + containerW * costs.downtimeS;
}
