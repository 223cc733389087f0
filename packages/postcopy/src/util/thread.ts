// Starts a worker thread from a module next to the caller, whether we run from dist/ (.js) or
// from the TypeScript sources under tsx (tests), where the thread must register tsx itself.
import { Worker } from 'node:worker_threads';

export function startThread(moduleUrl: URL, workerData: unknown): Worker {
  if (!moduleUrl.pathname.endsWith('.ts')) return new Worker(moduleUrl, { workerData });
  const boot = `import('tsx/esm/api').then((api) => { api.register(); return import(${JSON.stringify(moduleUrl.href)}); })`;
  return new Worker(boot, { eval: true, workerData });
}

/** ./name.js beside the calling module, or ./name.ts when that module is itself TypeScript. */
export function siblingModule(callerUrl: string, name: string): URL {
  return new URL(`./${name}${callerUrl.endsWith('.ts') ? '.ts' : '.js'}`, callerUrl);
}
