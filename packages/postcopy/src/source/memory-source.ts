import type { RegionInfo } from '../protocol/frames.js';

/** Where a page server reads pages from. */
export interface MemorySource {
  readonly pageSize: number;
  readonly regions: readonly RegionInfo[];
  /** Reads count pages starting at firstPage of region into buf[offset...]. Throws PostcopyError. */
  read(region: RegionInfo, firstPage: number, count: number, buf: Uint8Array, offset: number): void;
  /** True if the page was never touched, so the target can map a zero page without data. */
  untouched(region: RegionInfo, page: number): boolean;
  close(): void;
}
