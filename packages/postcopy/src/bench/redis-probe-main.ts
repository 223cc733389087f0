// The GET probe as a process of its own, so that what it measures is redis, not the event loop of
// the process that runs the migration (postcopy's daemon lives in the bench's process; stock's
// `criu lazy-pages` does not). argv: SOCKET KEYS uniform|zipf. It says "ready", starts probing at
// the first line on its stdin, and when its stdin ends prints one JSON line: the summary of every
// GET answered, in µs.
import { createInterface } from 'node:readline';
import { probeRedisGets, zipfKeys, type RedisProbe } from './redis-probe.js';

const [socket, keysArg, dist] = process.argv.slice(2);
const keys = Number(keysArg);
const pick = dist === 'zipf' ? zipfKeys(keys) : undefined;
let probe: RedisProbe | null = null;
const input = createInterface({ input: process.stdin });
input.on('line', () => (probe ??= probeRedisGets(socket, keys, pick)));
input.on('close', () => {
  void (probe ?? probeRedisGets(socket, keys, pick)).stop().then((summary) => {
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    process.exit(0);
  });
});
process.stdout.write('ready\n');
