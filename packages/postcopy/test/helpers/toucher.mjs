// Touches pages from a thread other than the handler's: faults must never come from the handler itself.
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parentPort, workerData } from 'node:worker_threads';

const require = createRequire(import.meta.url);
const native = require('node-gyp-build')(resolve(dirname(fileURLToPath(import.meta.url)), '..', '..'));
const { addr, count, stride, write, timed } = workerData;
const lat = timed ? new Float64Array(count) : undefined;
const ns = native.touchPages(addr, count, stride, write, lat);
parentPort.postMessage({ ns, lat });
