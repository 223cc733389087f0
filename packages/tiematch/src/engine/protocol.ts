import type { PreparedIndex, PreparedQueries } from './layout.js';

export interface WorkerInit {
  index: PreparedIndex;
  queries: PreparedQueries;
  /** nq x 4 i32 in search order: d1, i1, d2, i2. */
  out: SharedArrayBuffer;
  chunk: number;
  /** Clusters nearest each query scanned first; exhaustive: then all the others. */
  probes: number;
  exhaustive: boolean;
  /** The ratio test the result is for (SearchOptions.ratio). */
  ratio?: number;
}

export type WorkerTask = { type: 'init'; init: WorkerInit } | { type: 'search'; start: number; count: number } | { type: 'stop' };

export type WorkerReply =
  | { type: 'ready' }
  | { type: 'done'; start: number; count: number }
  | { type: 'stopped'; survivors: number; screened: number }
  | { type: 'error'; message: string; code?: string };
