// A workload started in the CRIU root and dumped there: with `criu dump --lazy-pages` (its page
// server on 127.0.0.1:lazyPort, the tasks frozen until it ends) or a plain `criu dump` (the pages in
// the images). Shared by the tests of CRIU lazy migration.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LineChild } from '../../src/util/child.js';
import { waitForLines } from './util.js';

export const SCRIPT = fileURLToPath(new URL('../../scripts/criu-root.sh', import.meta.url));
export const ROOT = process.env.POSTCOPY_CRIU_ROOT ?? '/var/cache/postcopy/trixie';

export interface DumpOptions {
  /** the work directory /var/lib/postcopy/TAG in the root */
  tag: string;
  /**
   * A shell command run as the init of a new pid namespace, in /usr/local/bin; OUT stands for its
   * output file (the test waits until it says something), e.g. `memproc 64 OUT`.
   */
  workload: string;
  /** `criu dump --lazy-pages` with its page server on this port; none: a plain dump */
  lazyPort?: number;
}

export interface Dump {
  inRoot: string;
  onHost: string;
  /** the shell that dumped: it prints `dump exit N` once the dump has ended */
  dumpSide: LineChild;
  /** the dumped tree's root, as this host numbers it */
  pid: number;
  /** lines in OUT before the dump */
  before: number;
  /** kills what is left (the restored tasks too: by the pid files, and by name) and removes the work directory */
  cleanup(extra?: (LineChild | null)[]): void;
}

/** Resolves once the dump is ready: its page server up (lazy), or the dump ended (plain). */
export async function dumpInRoot(o: DumpOptions): Promise<Dump> {
  const inRoot = `/var/lib/postcopy/${o.tag}`;
  const onHost = join(ROOT, inRoot);
  const out = `${inRoot}/out.txt`;
  const names = [...new Set(o.workload.split(/[\s;&|()]+/).filter((w) => /^[a-z]+$/.test(w) && existsSync(join(ROOT, 'usr/local/bin', w))))];
  rmSync(onHost, { recursive: true, force: true });
  mkdirSync(join(onHost, 'img'), { recursive: true });
  const pipeMax = readFileSync('/proc/sys/fs/pipe-max-size', 'utf8').trim();
  writeFileSync('/proc/sys/fs/pipe-max-size', String(Math.max(Number(pipeMax), 4 << 20))); // CRIU's lazy page server wants 4 MiB pipes
  const dump = o.lazyPort === undefined
    ? ['criu dump -t $PID -D img -o dump.log', 'echo ready; echo "dump exit $?"']
    : [`criu dump -t $PID -D img --lazy-pages --address 127.0.0.1 --port ${o.lazyPort} --status-fd 9 -o dump.log 9>st &`, 'DUMP=$!; head -c1 st >/dev/null; echo ready; wait $DUMP; echo "dump exit $?"'];
  const dumpSide = new LineChild('criu dump', ['bash', SCRIPT, 'exec', '/bin/bash', '-c', [
    `cd ${inRoot}`,
    'for fd in $(ls /proc/$$/fd); do [ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null; done',
    `( cd /usr/local/bin && exec unshare -p -f setsid sh -c ${shellQuote(`exec ${o.workload.replaceAll('OUT', out)}`)} </dev/null >/dev/null 2>&1 ) &`,
    'UNSHARE=$!',
    `for i in $(seq 200); do [ -s ${out} ] && break; sleep 0.05; done`,
    // the pid namespace's init: the child of unshare
    'PID=$(pgrep -P $UNSHARE | head -1); echo "pid $PID"',
    'mkfifo st',
    ...dump,
  ].join('\n')]);
  const cleanup = (extra: (LineChild | null)[] = []) => {
    for (const pidFile of [join(onHost, 'restored.pid'), join(onHost, 'target', 'restored.pid')])
      if (existsSync(pidFile)) spawnSync('kill', ['-9', readFileSync(pidFile, 'utf8').trim()]);
    dumpSide.kill();
    for (const c of extra) c?.kill();
    for (const n of names) spawnSync('pkill', ['-9', '-x', n]);
    writeFileSync('/proc/sys/fs/pipe-max-size', pipeMax);
    rmSync(onHost, { recursive: true, force: true });
  };
  try {
    const pid = Number((await dumpSide.next((l) => l.startsWith('pid '), 60_000)).slice(4));
    await dumpSide.next((l) => l === 'ready', 60_000);
    const before = readFileSync(join(onHost, 'out.txt'), 'utf8').trim().split('\n').length;
    return { inRoot, onHost, dumpSide, pid, before, cleanup };
  } catch (err) {
    cleanup();
    throw err;
  }
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", "'\\''")}'`;
}

/** The restored memproc keeps recomputing its checksum over every page: only "ok" lines. */
export async function assertMemprocRuns(out: string, before: number, lines = 3) {
  const got = await waitForLines(out, (l) => l.length >= before + lines, 15_000);
  assert.ok(got.length >= before + lines, `the restored process runs (${got.length} lines, ${before} before)`);
  assert.deepEqual(got.filter((l) => !l.startsWith('ok ') && !l.startsWith('child ok ') && !l.startsWith('wait ')), []);
}
