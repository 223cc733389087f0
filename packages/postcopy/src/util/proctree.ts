// The processes of a task tree as its own pid namespace numbers them (what CRIU's images say) and as
// this host does (what process_vm_readv and kill take).
import { readdirSync, readFileSync } from 'node:fs';
import { native } from '../native/index.js';
import { waitReadable } from './wait-readable.js';

/** Direct children of a process, from every thread's children list. */
export function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out; // gone
  }
  for (const tid of tids) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').split(' ')) if (c.trim()) out.push(Number(c));
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/**
 * The fields of /proc/PID/stat after the command name: [0] is the state letter (field 3), [n] is
 * field n + 3. null when the process is gone.
 */
export function statFields(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** The pid a process has in its innermost pid namespace (the last NSpid field). */
export function innermostPid(pid: number): number | null {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('NSpid:'));
    const ids = line?.slice(6).trim().split(/\s+/).map(Number);
    return ids?.length ? ids[ids.length - 1] : null;
  } catch {
    return null;
  }
}

/**
 * Every process of the tree rooted at `root` (a host pid), keyed by its pid in the tree's own
 * namespace (the pids of a CRIU dump of that tree). Processes that exit meanwhile are left out.
 */
export function treePids(root: number): Map<number, number> {
  const out = new Map<number, number>();
  const queue = [root];
  for (let i = 0; i < queue.length && i < 65536; i++) {
    const pid = queue[i];
    const inner = innermostPid(pid);
    if (inner === null) continue;
    out.set(inner, pid);
    queue.push(...childrenOf(pid));
  }
  return out;
}

/**
 * A task of a tree by its pid in the tree's namespace, as a host pid: looked up under the root
 * (once it is known) and cached, looked up again for a task not seen yet.
 */
export function treeMember(root: () => number | undefined): (pid: number) => number | undefined {
  let tree: Map<number, number> | null = null;
  return (pid) => {
    const r = root();
    if (!r) return undefined;
    if (!tree?.has(pid)) tree = treePids(r);
    return tree.get(pid);
  };
}

/**
 * When process pid exits, as performance.timeOrigin + performance.now() (comparable across threads
 * and processes), seen on a pidfd: at once, however busy the event loop is with other work. null:
 * it had exited before, or was not seen to within timeoutMs.
 */
export async function processExitAt(pid: number, timeoutMs: number): Promise<number | null> {
  const pidfd = native.pidfdOpen(pid);
  if (pidfd < 0) return null;
  try {
    await waitReadable(pidfd, timeoutMs, `the exit of process ${pid}`);
    return performance.timeOrigin + performance.now();
  } catch {
    return null;
  } finally {
    native.close(pidfd);
  }
}
