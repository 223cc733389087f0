import type { Keypoints } from '../format/dat.js';
import type { PointsText } from '../format/result.js';
import type { ResolvedSearch } from '../engine/search.js';

/** What every pair of a batch is matched with: `tiematch ann`'s options. */
export interface BatchWorkerData {
  search: ResolvedSearch;
  ratio: number;
  filter: boolean;
  newFormat: boolean;
  /** Bytes of indexes this thread keeps (least recently used first out). */
  indexBudget: number;
}

export interface PairTask {
  type: 'pair';
  id: number;
  /** Cache key of file1's index (the image, and which of its points: MulScale's first pass takes a subset). */
  key: string;
  a: string;
  b: string;
  /** Keypoints in shared memory: sent to a thread without a copy. */
  pointsA: Keypoints;
  pointsB: Keypoints;
  /** Where the .result goes; none: count the matches only (MulScale's first pass). */
  out?: string;
  /** v0 results: each image's "x y" texts, made once by the main thread, in shared memory. */
  textA?: PointsText;
  textB?: PointsText;
}

export type BatchReply =
  | { type: 'done'; id: number; matches: number; ratioMatches: number; indexBuilt: boolean; ms: { index: number; search: number; filter: number; write: number } }
  | { type: 'failed'; id: number; code: string; message: string };
