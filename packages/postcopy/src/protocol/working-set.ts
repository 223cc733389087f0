// A workload's working set: the pages its tasks touched first after a migration, in order, to be
// pushed first at the next one (`migrate --working-set FILE`). A JSON file:
//   { "format": "postcopy-working-set", "version": 1, "pageSize": 4096,
//     "tasks": [ { "pid": 1234, "pages": [address, ...] } ] }
// `pid` is the task's pid in the dump (CRIU restores it), an address a page's start in the task.
// Pure: parse, check, merge.
import { PostcopyError } from '../errors.js';

export const WORKING_SET_FORMAT = 'postcopy-working-set';
export const WORKING_SET_VERSION = 1;
/** Pages kept per task: 4 GiB of 4 KiB pages. */
export const MAX_WORKING_SET_PAGES = 1 << 20;

export interface WorkingSet {
  pageSize: number;
  /** per task, by its pid in the dump: page addresses, in the order they were first touched */
  tasks: Map<number, number[]>;
}

const bad = (what: string) => new PostcopyError('ERR_INVALID_ARG', `working set: ${what}`);

/** A working set from its JSON text, checked: a clear ERR_INVALID_ARG naming what is wrong. */
export function parseWorkingSet(text: string): WorkingSet {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw bad(`not JSON (${(err as Error).message})`);
  }
  const d = doc as { format?: unknown; version?: unknown; pageSize?: unknown; tasks?: unknown };
  if (typeof d !== 'object' || d === null || d.format !== WORKING_SET_FORMAT) throw bad(`not a working set (its "format" is not "${WORKING_SET_FORMAT}")`);
  if (d.version !== WORKING_SET_VERSION) throw bad(`version ${String(d.version)}; this postcopy reads version ${WORKING_SET_VERSION}`);
  const pageSize = d.pageSize;
  if (typeof pageSize !== 'number' || !Number.isInteger(pageSize) || pageSize < 4096 || (pageSize & (pageSize - 1)) !== 0) throw bad(`pageSize ${String(pageSize)} is not a power of two of 4096 or more`);
  if (!Array.isArray(d.tasks)) throw bad('"tasks" is not a list');
  const tasks = new Map<number, number[]>();
  d.tasks.forEach((t: { pid?: unknown; pages?: unknown }, i) => {
    if (typeof t !== 'object' || t === null || !Number.isInteger(t.pid) || (t.pid as number) < 1) throw bad(`task ${i}: "pid" is not a pid`);
    const pid = t.pid as number;
    if (tasks.has(pid)) throw bad(`task ${pid} is listed twice`);
    if (!Array.isArray(t.pages) || t.pages.length > MAX_WORKING_SET_PAGES) throw bad(`task ${pid}: "pages" is not a list of at most ${MAX_WORKING_SET_PAGES} addresses`);
    for (const a of t.pages)
      if (typeof a !== 'number' || !Number.isSafeInteger(a) || a < 0 || a % pageSize !== 0) throw bad(`task ${pid}: ${JSON.stringify(a)} is not the address of a page`);
    tasks.set(pid, t.pages as number[]);
  });
  return { pageSize, tasks };
}

export function formatWorkingSet(ws: WorkingSet): string {
  const tasks = [...ws.tasks].sort((a, b) => a[0] - b[0]).map(([pid, pages]) => ({ pid, pages }));
  return `${JSON.stringify({ format: WORKING_SET_FORMAT, version: WORKING_SET_VERSION, pageSize: ws.pageSize, tasks })}\n`;
}

/**
 * The record after a migration that replayed `before`: per task, the pages that still faulted now
 * first (the replay did not bring them in time, so they come earlier next time), then the rest of
 * the old order. A task absent now keeps its old record; one new now gets its own.
 */
export function mergeWorkingSets(before: WorkingSet | null, now: WorkingSet): WorkingSet {
  const tasks = new Map(before?.pageSize === now.pageSize ? before.tasks : []);
  for (const [pid, pages] of now.tasks) {
    const seen = new Set<number>();
    const merged: number[] = [];
    for (const a of [...pages, ...(tasks.get(pid) ?? [])]) {
      if (seen.has(a)) continue;
      seen.add(a);
      merged.push(a);
      if (merged.length === MAX_WORKING_SET_PAGES) break;
    }
    tasks.set(pid, merged);
  }
  return { pageSize: now.pageSize, tasks };
}
