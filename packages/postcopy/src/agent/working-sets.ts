// The working sets an agent keeps, one per workload that moved here: the pages its tasks touched
// first after that migration, in order (protocol/working-set.ts). When the workload moves on, the
// agent sends its record with PREPARE, and the next destination pushes those pages first, then
// keeps the record, merged with what it saw, for the move after. A workload is a container (by its
// id) or a process (by its command line).
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { formatWorkingSet, parseWorkingSet, type WorkingSet } from '../protocol/working-set.js';
import { readWorkingSetFile, writeWorkingSetFile } from '../util/working-set-file.js';
import type { Logger } from '../util/log.js';

/** A key names a file: a kind, then what the kind says (a container id, a hash of a command line). */
const KEY = /^(container|cmd)-[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/**
 * Pages a PREPARE carries at most (its JSON body is 1 MiB at most): the first of each task's order,
 * which are the ones that matter.
 */
export const MAX_SENT_PAGES = 32_768;

export const isWorkloadKey = (key: string) => KEY.test(key);

/** The key of a container, or of a process by its command line (null: the process is gone). */
export function workloadKey(o: { container?: string; pid?: number }): string | null {
  if (o.container !== undefined) return `container-${o.container}`;
  try {
    const cmdline = readFileSync(`/proc/${o.pid}/cmdline`);
    return `cmd-${createHash('sha256').update(cmdline).digest('hex').slice(0, 32)}`;
  } catch {
    return null;
  }
}

/** A working set as PREPARE carries it: at most MAX_SENT_PAGES pages in all, each task's first. */
export function formatForPrepare(ws: WorkingSet): string {
  const share = Math.floor(MAX_SENT_PAGES / Math.max(1, ws.tasks.size));
  return formatWorkingSet({ pageSize: ws.pageSize, tasks: new Map([...ws.tasks].map(([pid, pages]) => [pid, pages.slice(0, share)])) });
}

export class WorkingSetStore {
  constructor(
    readonly dir: string,
    readonly logger: Logger,
  ) {}

  #path(key: string): string {
    return join(this.dir, `${key}.json`);
  }

  /** The record of a workload, or null (none, or one that cannot be read: said, and ignored). */
  load(key: string): WorkingSet | null {
    if (!isWorkloadKey(key)) return null;
    try {
      return readWorkingSetFile(this.#path(key));
    } catch (err) {
      this.logger.warn({ key, err: (err as Error).message }, 'a working set that cannot be read: the move goes on without it');
      return null;
    }
  }

  save(key: string, ws: WorkingSet): void {
    if (!isWorkloadKey(key)) return;
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      writeWorkingSetFile(this.#path(key), ws);
    } catch (err) {
      this.logger.warn({ key, err: (err as Error).message }, 'cannot keep the working set');
    }
  }

  /** The workload has left this host: its record went with it. */
  remove(key: string): void {
    if (isWorkloadKey(key)) rmSync(this.#path(key), { force: true });
  }
}

/** A working set PREPARE brought (JSON text), or null if it is not one (said, and ignored). */
export function parsePrepared(text: string | undefined, logger: Logger): WorkingSet | null {
  if (text === undefined) return null;
  try {
    return parseWorkingSet(text);
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'PREPARE brought a working set that is not one: ignored');
    return null;
  }
}
