// Where each task's pages lie in a CRIU images directory: `criu lazy-pages` without --page-server
// serves the lazy pages from there (a dump without --lazy-pages keeps them, PE_LAZY | PE_PRESENT).
// Pure: the I/O is in image-page-server.ts.
import { PostcopyError } from '../errors.js';
import { PE_LAZY, PE_PARENT, PE_PRESENT, type DumpImages } from './image.js';

const KERNEL_PAGE = 4096;

/** A run of pages of one task, stored in its pages image from byte `offset`. */
export interface StoredRun {
  vaddr: number;
  nrPages: number;
  offset: number;
}

export interface TaskPages {
  /** pages-<pagesId>.img */
  pagesId: number;
  /** the lazy runs, sorted by address */
  runs: StoredRun[];
}

/**
 * Each task's lazy runs and their place in its pages image. A lazy page that the images do not
 * hold (a dump made with --lazy-pages, or one in a parent dump) cannot be served from them: refused
 * here, before any restore starts.
 */
export function storedPages(dump: DumpImages): Map<number, TaskPages> {
  const out = new Map<number, TaskPages>();
  for (const t of dump.tasks) {
    const pagemap = dump.pagemaps.get(t.pid)!;
    const runs: StoredRun[] = [];
    let offset = 0;
    for (const e of pagemap.entries) {
      const stored = (e.flags & PE_PRESENT) !== 0 && !(e.flags & PE_PARENT) && !e.inParent;
      if (e.flags & PE_LAZY) {
        if (!stored)
          throw new PostcopyError('ERR_IMAGE', `pagemap-${t.pid}.img: lazy pages at 0x${e.vaddr.toString(16)} are not in the images (a dump made with --lazy-pages, or with a parent): serve them with --page-server`);
        runs.push({ vaddr: e.vaddr, nrPages: e.nrPages, offset });
      }
      if (stored) offset += e.nrPages * KERNEL_PAGE;
    }
    runs.sort((a, b) => a.vaddr - b.vaddr);
    out.set(t.pid, { pagesId: pagemap.pagesId, runs });
  }
  return out;
}

/**
 * The stored run holding `vaddr`, as CRIU's page server answers a GET: from vaddr up to `nrPages`
 * pages, fewer where the run ends. null: no lazy page there.
 */
export function findStored(task: TaskPages, vaddr: number, nrPages: number): { offset: number; nrPages: number } | null {
  const runs = task.runs;
  let lo = 0;
  let hi = runs.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = runs[mid];
    const end = r.vaddr + r.nrPages * KERNEL_PAGE;
    if (vaddr < r.vaddr) hi = mid - 1;
    else if (vaddr >= end) lo = mid + 1;
    else {
      const skip = (vaddr - r.vaddr) / KERNEL_PAGE;
      if (!Number.isInteger(skip)) return null;
      return { offset: r.offset + skip * KERNEL_PAGE, nrPages: Math.min(nrPages, r.nrPages - skip) };
    }
  }
  return null;
}
