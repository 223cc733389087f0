// A search thread: started before the index exists (its start-up overlaps the preparation), it
// copies the index into its own kernel instance, then answers chunks of queries, writing results
// straight into the shared output.
import { parentPort } from 'node:worker_threads';
import { KernelSearch } from './thread-search.js';
import { kernelModule } from './wasm.js';
import type { WorkerInit, WorkerReply, WorkerTask } from './protocol.js';

const port = parentPort!;
let init: WorkerInit | undefined;
let kernel: KernelSearch | undefined;
let out: Int32Array | undefined;

const fail = (e: unknown): void => port.postMessage({ type: 'error', message: (e as Error).message, code: (e as { code?: string }).code } satisfies WorkerReply);

try {
  kernelModule(); // compile while the caller prepares the index
} catch (e) {
  fail(e);
}
port.on('message', (task: WorkerTask) => {
  try {
    if (task.type === 'init') {
      init = task.init;
      kernel = new KernelSearch(init.index, init.chunk, init.probes, init.exhaustive);
      kernel.setRatio(init.ratio);
      out = new Int32Array(init.out);
      port.postMessage({ type: 'ready' } satisfies WorkerReply);
    } else if (task.type === 'stop') {
      port.postMessage({ type: 'stopped', survivors: kernel?.survivors ?? 0, screened: kernel?.screened ?? 0 } satisfies WorkerReply);
      port.close();
    } else {
      if (!kernel || !init || !out) throw new Error('search before init');
      const { start, count } = task;
      kernel.searchChunk(init.queries, start, count, out.subarray(start * 4, (start + count) * 4));
      port.postMessage({ type: 'done', start, count } satisfies WorkerReply);
    }
  } catch (e) {
    fail(e);
  }
});
