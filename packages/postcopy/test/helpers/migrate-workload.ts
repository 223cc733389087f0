// A memproc workload in the CRIU root for migrate() tests, found by its own command line (never by
// name alone: other tests run memproc at the same time), and what tells how many copies of it run.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { criuRootDir, inCriuRoot } from '../../src/criu/root.js';
import { LineChild } from '../../src/util/child.js';
import { taskState } from './util.js';

const MEMPROC = '/usr/local/bin/memproc';
const CLOSE_FDS = 'for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null; done';

/** Every process whose argv passes `match`, with its state letter (zombies and the dead left out). */
export function findProcesses(match: (argv: string[]) => boolean): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const argv = readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').slice(0, -1);
      if (!argv.length || !match(argv)) continue;
      if (!['Z', 'X', 'gone'].includes(taskState(Number(name)))) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out.sort((a, b) => a - b);
}

/** Whether a process is there and has not exited (a zombie has). */
export const running = (pid: number) => pid > 0 && !['Z', 'X', 'gone'].includes(taskState(pid));

export interface Workload {
  /** its work directory inside the CRIU root, and the same on the host */
  dir: string;
  host: string;
  /** its output on the host: "ok N SUM" every 200 ms */
  out: string;
  pid: number;
  /** the memproc processes running now (the original, restored copies) */
  copies(): number[];
  lines(): string[];
  /** kills every copy and whatever else ran with this directory in its command line, and removes the directory */
  cleanup(): void;
}

/**
 * memproc MIB in the CRIU root, in a pid namespace and session of its own (as `postcopy migrate`
 * expects a task); `prelude` runs in the shell that then becomes memproc (e.g. opens an fd it keeps).
 */
export async function startMemproc(tag: string, mib: number, prelude = ''): Promise<Workload> {
  const dir = `/var/lib/postcopy/${tag}-${process.pid}`;
  const host = join(criuRootDir(), dir);
  const out = join(host, 'out.txt');
  rmSync(host, { recursive: true, force: true });
  const argvOf = [MEMPROC, String(mib), `${dir}/out.txt`];
  const copies = () => findProcesses((a) => a.length === 3 && a.every((x, i) => x === argvOf[i]));
  const inner = `${prelude}${prelude ? '; ' : ''}exec ${argvOf.join(' ')}`;
  const launcher = new LineChild('memproc', inCriuRoot(['/bin/bash', '-c', [
    `mkdir -p ${dir}`,
    CLOSE_FDS,
    `( exec unshare -p -f setsid /bin/bash -c '${inner}' </dev/null >${dir}/stdout.log 2>&1 ) &`,
    `for i in $(seq 600); do [ -s ${dir}/out.txt ] && break; sleep 0.05; done`,
    'echo started',
  ].join('\n')]));
  const w: Workload = {
    dir,
    host,
    out,
    pid: 0,
    copies,
    lines: () => (existsSync(out) ? readFileSync(out, 'utf8').trim().split('\n').filter(Boolean) : []),
    cleanup() {
      launcher.kill();
      for (let round = 0; round < 20; round++) {
        const left = findProcesses((a) => a.some((x) => x.includes(dir)));
        if (!left.length) break;
        if (round) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
        for (const pid of left) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      }
      rmSync(host, { recursive: true, force: true });
    },
  };
  try {
    await launcher.next((l) => l === 'started', 60_000);
    await launcher.rest(10_000);
    const found = copies();
    assert.equal(found.length, 1, `one memproc started in ${dir}: ${found.join(', ')} (${readFileSync(join(host, 'stdout.log'), 'utf8').trim()})`);
    w.pid = found[0];
    return w;
  } catch (err) {
    w.cleanup();
    throw err;
  }
}

/** The round number of each "ok N SUM" line; -1 for anything else (a BAD line). */
const rounds = (lines: string[]) => lines.map((l) => (/^ok (\d+) \d+$/.exec(l) ? Number(l.split(' ')[1]) : -1));

/**
 * Exactly one copy runs, `pid`, and its memory is whole: it alone is there, and over the next
 * `n` rounds it writes only right checksums, each round once (two copies would repeat rounds).
 */
export async function assertOneCopy(w: Workload, pid: number, n = 3, ms = 15_000): Promise<void> {
  assert.deepEqual(w.copies(), [pid], `exactly one copy runs, ${pid}`);
  const before = w.lines().length;
  const deadline = Date.now() + ms;
  while (w.lines().length < before + n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const fresh = w.lines().slice(before);
  assert.ok(fresh.length >= n, `${pid} runs on: ${fresh.length} rounds in ${ms} ms`);
  const r = rounds(fresh);
  assert.ok(r.every((x) => x >= 0), `every checksum right: ${fresh.join(' | ')}`);
  assert.ok(r.every((x, i) => i === 0 || x === r[i - 1] + 1), `each round once, in order (one copy): ${r.join(' ')}`);
  assert.deepEqual(w.copies(), [pid], `still exactly one copy, ${pid}`);
}
