// A memory source described in plain data, so another thread can open the same source.
import { PostcopyError } from '../errors.js';
import type { RegionInfo } from '../protocol/frames.js';
import { ImageFileSource } from './image-file.js';
import { LiveProcessSource } from './live-process.js';
import type { MemorySource } from './memory-source.js';

export type SourceSpec =
  | { kind: 'process'; pid: number; pageSize: number; regions: RegionInfo[]; /** SharedArrayBuffer-backed */ touched: Uint8Array[] }
  | { kind: 'file'; path: string; pageSize: number; base: number };

/** Opens a described source without side effects: nothing is frozen, thawed or released. */
export function openSource(spec: SourceSpec): MemorySource {
  switch (spec.kind) {
    case 'process':
      return LiveProcessSource.adopt(spec);
    case 'file':
      return new ImageFileSource(spec.path, { pageSize: spec.pageSize, base: spec.base });
    default:
      throw new PostcopyError('ERR_INVALID_ARG', `unknown source kind ${(spec as { kind: string }).kind}`);
  }
}
