import type { RegionInfo } from '../protocol/frames.js';
import type { SourceSpec } from './spec.js';

/** Where a page server reads pages from. */
export interface MemorySource {
  readonly pageSize: number;
  readonly regions: readonly RegionInfo[];
  /** Reads count pages starting at firstPage of region into buf[offset...]. Throws PostcopyError. */
  read(region: RegionInfo, firstPage: number, count: number, buf: Uint8Array, offset: number): void;
  /** True if the page was never touched, so the target can map a zero page without data. */
  untouched(region: RegionInfo, page: number): boolean;
  /** Plain data another thread can open the source from; absent when it cannot be shared. */
  describe?(): SourceSpec;
  close(): void;
}
