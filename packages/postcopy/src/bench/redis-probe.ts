// GET latency of a redis server over its unix socket, one request at a time, while something
// else happens (a post-copy migration): RESP written by hand, replies parsed just enough.
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { PostcopyError } from '../errors.js';
import { nodeModuleArgv } from '../util/child.js';
import { summarize, type Summary } from './stats.js';

export interface RedisProbe {
  /** stops and returns the latency of every GET answered, µs */
  stop(): Promise<Summary & { errors: number }>;
}

/**
 * Key numbers below n drawn from a Zipf distribution (rank r with weight 1/r^s), the ranks scattered
 * over the keys by a fixed bijection, so the hot keys are not the first ones written (and so not
 * neighbours in memory). A service with a hot set, as real caches have.
 */
export function zipfKeys(n: number, s = 0.99, random: () => number = Math.random): () => number {
  const cdf = new Float64Array(n);
  let total = 0;
  for (let r = 0; r < n; r++) cdf[r] = total += 1 / (r + 1) ** s;
  // a multiplier coprime with n: rank -> key is a permutation
  let mult = 999_983;
  while (gcd(mult, n) !== 1) mult += 2;
  return () => {
    const u = random() * total;
    let [lo, hi] = [0, n - 1];
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (cdf[mid] < u) lo = mid + 1;
      else hi = mid;
    }
    return (lo * mult + 7) % n; // exact: below 2^53 for n up to 10^9
  };
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/**
 * Starts sending GET key:<n> back to back until stopped, n uniform below keys or from `pick`.
 * Reconnects if the socket goes.
 */
export function probeRedisGets(socketPath: string, keys: number, pick: () => number = () => Math.floor(Math.random() * keys)): RedisProbe {
  const samples: number[] = [];
  let errors = 0;
  let stopped = false;
  let socket: Socket | null = null;
  let finish: () => void = () => {};
  const done = new Promise<void>((resolve) => (finish = resolve));

  const run = () => {
    if (stopped) return finish();
    let pending: Buffer = Buffer.alloc(0);
    let t0 = 0;
    const s = connect(socketPath);
    socket = s;
    const send = () => {
      if (stopped) {
        s.destroy();
        return finish();
      }
      const key = `key:${pick()}`;
      t0 = performance.now();
      s.write(`*2\r\n$3\r\nGET\r\n$${key.length}\r\n${key}\r\n`);
    };
    s.on('connect', send);
    s.on('data', (d: Buffer) => {
      pending = pending.length ? Buffer.concat([pending, d]) : d;
      // one bulk string ($len\r\n...\r\n), a nil ($-1\r\n) or an error (-...\r\n)
      const eol = pending.indexOf('\r\n');
      if (eol < 0) return;
      const head = pending.subarray(0, eol).toString();
      let total = eol + 2;
      if (head[0] === '$' && Number(head.slice(1)) >= 0) total += Number(head.slice(1)) + 2;
      if (pending.length < total) return;
      if (head[0] === '-') errors++;
      else samples.push((performance.now() - t0) * 1e6);
      pending = pending.subarray(total);
      send();
    });
    s.on('error', () => {
      errors++;
    });
    s.on('close', () => {
      if (!stopped) setTimeout(run, 5);
      else finish();
    });
  };
  run();
  return {
    async stop() {
      stopped = true;
      socket?.destroy();
      await done;
      return { ...summarize(samples), errors };
    },
  };
}

/** A probe in a process of its own, started and ready (its zipf table built) before it is needed. */
export interface ChildProbe {
  /** starts sending GETs */
  go(): void;
  /** stops, and returns the latency of every GET answered, µs */
  stop(): Promise<Summary & { errors: number }>;
}

/**
 * The same probe in a process of its own (redis-probe-main.ts): its latency is redis's and the
 * kernel's, not that of this process's event loop, which may be running a migration.
 */
export async function startProbeProcess(socketPath: string, keys: number, dist: 'uniform' | 'zipf'): Promise<ChildProbe> {
  const [cmd, ...args] = nodeModuleArgv(import.meta.url, './redis-probe-main');
  const child = spawn(cmd, [...args, socketPath, String(keys), dist], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.setEncoding('utf8');
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await new Promise<void>((resolve) => {
    child.stdout!.on('data', (d: string) => {
      out += d;
      if (out.includes('ready\n')) resolve();
    });
    void exited.then(() => resolve());
  });
  if (child.exitCode !== null) throw new PostcopyError('ERR_CHILD', `the GET probe exited at its start (${child.exitCode})`);
  return {
    go: () => child.stdin!.write('go\n'),
    async stop() {
      child.stdin!.end();
      await exited;
      const line = out.split('\n').find((l) => l.startsWith('{'));
      if (!line) throw new PostcopyError('ERR_CHILD', `the GET probe ended without a summary (exit ${child.exitCode})`);
      return JSON.parse(line) as Summary & { errors: number };
    },
  };
}
