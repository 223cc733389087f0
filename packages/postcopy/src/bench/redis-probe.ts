// GET latency of a redis server over its unix socket, one request at a time, while something
// else happens (a post-copy migration): RESP written by hand, replies parsed just enough.
import { connect, type Socket } from 'node:net';
import { summarize, type Summary } from './stats.js';

export interface RedisProbe {
  /** stops and returns the latency of every GET answered, µs */
  stop(): Promise<Summary & { errors: number }>;
}

/** Starts sending GET key:<random below keys> back to back until stopped. Reconnects if the socket goes. */
export function probeRedisGets(socketPath: string, keys: number): RedisProbe {
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
      const key = `key:${Math.floor(Math.random() * keys)}`;
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
