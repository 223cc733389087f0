// Starts a worker thread from a module next to the caller, whether we run from dist/ (.js) or
// from the TypeScript sources under tsx (tests), where the thread must register tsx itself.
// Threads can be started ahead ("spares") and given their data later: a migration starts its
// threads before the task freezes, so that the restore does not share the CPUs with their start.
import { parentPort, receiveMessageOnPort, Worker, workerData } from 'node:worker_threads';

interface Spare {
  worker: Worker;
  wake: Int32Array;
}

const spares = new Map<string, Spare[]>();

function spawn(moduleUrl: URL, data: unknown): Worker {
  if (!moduleUrl.pathname.endsWith('.ts')) return new Worker(moduleUrl, { workerData: data });
  const boot = `import('tsx/esm/api').then((api) => { api.register(); return import(${JSON.stringify(moduleUrl.href)}); })`;
  return new Worker(boot, { eval: true, workerData: data });
}

/**
 * Makes sure `count` threads of a module wait for their data (starting those missing); resolves once
 * they have loaded.
 */
export async function prestartThreads(moduleUrl: URL, count: number): Promise<void> {
  const list = spares.get(moduleUrl.href) ?? [];
  spares.set(moduleUrl.href, list);
  const loaded: Promise<void>[] = [];
  for (let i = list.length; i < count; i++) {
    const wake = new Int32Array(new SharedArrayBuffer(4));
    const worker = spawn(moduleUrl, { spare: wake });
    worker.unref(); // a spare nobody takes must not keep the process alive
    worker.on('error', () => {}); // reported to whoever takes it, if anyone does
    loaded.push(new Promise((resolve) => {
      worker.once('message', () => resolve());
      worker.once('exit', () => resolve());
    }));
    const spare = { worker, wake };
    worker.once('exit', () => list.includes(spare) && list.splice(list.indexOf(spare), 1));
    list.push(spare);
  }
  await Promise.all(loaded);
}

/** A thread running the module with this data: a spare one if there is, else a new one. */
export function startThread(moduleUrl: URL, data: unknown): Worker {
  const spare = spares.get(moduleUrl.href)?.shift();
  if (!spare) return spawn(moduleUrl, data);
  spare.worker.ref();
  spare.worker.postMessage({ data });
  Atomics.store(spare.wake, 0, 1);
  Atomics.notify(spare.wake, 0);
  return spare.worker;
}

/** In a thread: its data, waiting for it first when the thread was started as a spare. */
export function threadData<T>(): T {
  const d = workerData as { spare?: Int32Array } | null;
  if (!d || !(d.spare instanceof Int32Array)) return workerData as T;
  parentPort!.postMessage({ spare: 'loaded' });
  while (Atomics.load(d.spare, 0) === 0) Atomics.wait(d.spare, 0, 0);
  const m = receiveMessageOnPort(parentPort!);
  return (m?.message as { data: T }).data;
}

/** ./name.js beside the calling module, or ./name.ts when that module is itself TypeScript. */
export function siblingModule(callerUrl: string, name: string): URL {
  return new URL(`./${name}${callerUrl.endsWith('.ts') ? '.ts' : '.js'}`, callerUrl);
}
