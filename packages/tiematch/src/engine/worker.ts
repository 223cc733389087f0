// A search thread: copies the prepared index into its own kernel instance, then answers chunks of
// queries, writing results straight into the shared output.
import { parentPort, workerData } from 'node:worker_threads';
import { KernelSearch } from './kernel.js';
import type { WorkerInit, WorkerReply, WorkerTask } from './protocol.js';

const init = workerData as WorkerInit;
const port = parentPort!;
try {
  const kernel = new KernelSearch(init.index, init.chunk);
  const out = new Int32Array(init.out);
  port.postMessage({ type: 'ready' } satisfies WorkerReply);
  port.on('message', (task: WorkerTask) => {
    if (task.type === 'stop') {
      port.postMessage({ type: 'stopped', survivors: kernel.survivors, screened: kernel.screened } satisfies WorkerReply);
      port.close();
      return;
    }
    const { start, count } = task;
    try {
      kernel.searchChunk(init.queries, start, count, out.subarray(start * 4, (start + count) * 4));
      port.postMessage({ type: 'done', start, count } satisfies WorkerReply);
    } catch (e) {
      port.postMessage({ type: 'error', message: (e as Error).message, code: (e as { code?: string }).code } satisfies WorkerReply);
    }
  });
} catch (e) {
  port.postMessage({ type: 'error', message: (e as Error).message, code: (e as { code?: string }).code } satisfies WorkerReply);
}
