// What an agent tells a planner of its host: its class, and each running container's CPU (busy
// threads, sampled over half a second from its tasks' CPU time) and memory (their resident set).
import { readFileSync } from 'node:fs';
import { runRunc } from '../criu/runc.js';
import { statFields, treePids } from '../util/proctree.js';

/** The kernel's clock ticks per second for /proc/PID/stat's CPU times (USER_HZ: 100 on Linux). */
const USER_HZ = 100;
const SAMPLE_MS = 500;

export interface ContainerLoad {
  id: string;
  cpu: number;
  memGiB: number;
}

/** CPU time, in ticks, of these processes (those gone count 0). */
const ticks = (pids: number[]) => pids.reduce((n, pid) => {
  const f = statFields(pid);
  return n + (f ? Number(f[11]) + Number(f[12]) : 0);
}, 0);

/** Resident memory of these processes, GiB. */
function residentGiB(pids: number[]): number {
  let kb = 0;
  for (const pid of pids) {
    try {
      kb += Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return kb / 2 ** 20;
}

/** The running containers of a runc root (as this host's runc sees them), with their load. */
export async function containerLoads(host: string, runcRoot: string): Promise<ContainerLoad[]> {
  const r = await runRunc(host, runcRoot, ['list', '--format', 'json']);
  if (r.status !== 0) return [];
  const list = (JSON.parse(r.stdout.trim() || '[]') ?? []) as { id: string; pid: number; status: string }[];
  const running = list.filter((c) => c.status === 'running' && c.pid > 0).map((c) => ({ id: c.id, pids: [...treePids(c.pid).values()] }));
  const before = running.map((c) => ticks(c.pids));
  const t0 = performance.now();
  await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
  const seconds = (performance.now() - t0) / 1000;
  return running.map((c, i) => ({ id: c.id, cpu: Math.max(0, (ticks(c.pids) - before[i]) / USER_HZ / seconds), memGiB: residentGiB(c.pids) }));
}
