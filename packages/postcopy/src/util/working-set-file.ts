// A working set kept in a file between migrations (`migrate --working-set FILE`): read before the
// freeze (none yet is no error), written whole or not at all once the pages are in.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { PostcopyError } from '../errors.js';
import { formatWorkingSet, parseWorkingSet, type WorkingSet } from '../protocol/working-set.js';

/** The working set in `path`; null when there is no such file yet. */
export function readWorkingSetFile(path: string): WorkingSet | null {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new PostcopyError('ERR_INVALID_ARG', `--working-set ${path}: cannot read it (${(err as Error).message})`);
  }
  try {
    return parseWorkingSet(text);
  } catch (err) {
    throw new PostcopyError('ERR_INVALID_ARG', `--working-set ${path}: ${(err as Error).message}`);
  }
}

/** Writes it beside, then renames: a reader never sees half a file. */
export function writeWorkingSetFile(path: string, ws: WorkingSet): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, formatWorkingSet(ws));
  renameSync(tmp, path);
}
